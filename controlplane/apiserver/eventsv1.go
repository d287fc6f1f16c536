package apiserver

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metainternalversion "k8s.io/apimachinery/pkg/apis/meta/internalversion"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/apiserver/pkg/registry/rest"
	genericapiserver "k8s.io/apiserver/pkg/server"

	"github.com/skep-io/skep/controlplane/api"
)

// Kubernetes stores one Event and serves it in two groups: core/v1 and
// events.k8s.io/v1, which renames some fields (involvedObject is
// regarding, message is note) and marks the old-style ones deprecated.
// skep does the same: the Events are core/v1 Events in the store, written
// through the core resource's registry (so its validation, authorization
// and TTL apply), and eventsV1REST is their events.k8s.io/v1 view.

// eventV1FromCore is the events.k8s.io/v1 form of a core/v1 Event, field
// for field as Kubernetes converts it (pkg/apis/events/v1). The result
// shares nothing with in.
func eventV1FromCore(in *corev1.Event) *eventsv1.Event {
	in = in.DeepCopy()
	out := &eventsv1.Event{
		ObjectMeta:               in.ObjectMeta,
		EventTime:                in.EventTime,
		ReportingController:      in.ReportingController,
		ReportingInstance:        in.ReportingInstance,
		Action:                   in.Action,
		Reason:                   in.Reason,
		Regarding:                in.InvolvedObject,
		Related:                  in.Related,
		Note:                     in.Message,
		Type:                     in.Type,
		DeprecatedSource:         in.Source,
		DeprecatedFirstTimestamp: in.FirstTimestamp,
		DeprecatedLastTimestamp:  in.LastTimestamp,
		DeprecatedCount:          in.Count,
	}
	if in.Series != nil {
		out.Series = &eventsv1.EventSeries{Count: in.Series.Count, LastObservedTime: in.Series.LastObservedTime}
	}
	return out
}

// eventCoreFromV1 is the core/v1 form of an events.k8s.io/v1 Event, the
// inverse of eventV1FromCore.
func eventCoreFromV1(in *eventsv1.Event) *corev1.Event {
	in = in.DeepCopy()
	out := &corev1.Event{
		ObjectMeta:          in.ObjectMeta,
		InvolvedObject:      in.Regarding,
		Reason:              in.Reason,
		Message:             in.Note,
		Source:              in.DeprecatedSource,
		FirstTimestamp:      in.DeprecatedFirstTimestamp,
		LastTimestamp:       in.DeprecatedLastTimestamp,
		Count:               in.DeprecatedCount,
		Type:                in.Type,
		EventTime:           in.EventTime,
		Action:              in.Action,
		Related:             in.Related,
		ReportingController: in.ReportingController,
		ReportingInstance:   in.ReportingInstance,
	}
	if in.Series != nil {
		out.Series = &corev1.EventSeries{Count: in.Series.Count, LastObservedTime: in.Series.LastObservedTime}
	}
	return out
}

// eventsV1FieldLabels maps the field selectors kube-apiserver accepts on
// events.k8s.io/v1 Events to the core Event's selectable fields, which
// the watch cache indexes (fields.go): the same names as Kubernetes'
// (pkg/apis/events/v1), "source" included though the v1 type has no
// such field.
var eventsV1FieldLabels = map[string]string{
	"metadata.name":             "metadata.name",
	"metadata.namespace":        "metadata.namespace",
	"reason":                    "reason",
	"regarding.kind":            "involvedObject.kind",
	"regarding.namespace":       "involvedObject.namespace",
	"regarding.name":            "involvedObject.name",
	"regarding.uid":             "involvedObject.uid",
	"regarding.apiVersion":      "involvedObject.apiVersion",
	"regarding.resourceVersion": "involvedObject.resourceVersion",
	"regarding.fieldPath":       "involvedObject.fieldPath",
	"reportingController":       "reportingComponent",
	"source":                    "source",
	"type":                      "type",
}

// addEventsV1 registers events.k8s.io/v1 in the scheme: its types, the
// same Go types as the group's internal version (the identity conversion
// the other groups have, scheme.go; eventsV1REST converts to and from
// core/v1 itself), and its field selectors.
func addEventsV1(scheme *runtime.Scheme) error {
	if err := eventsv1.AddToScheme(scheme); err != nil {
		return err
	}
	scheme.AddKnownTypes(schema.GroupVersion{Group: eventsv1.GroupName, Version: runtime.APIVersionInternal}, &eventsv1.Event{}, &eventsv1.EventList{})
	allowed := slices.Sorted(maps.Keys(eventsV1FieldLabels))
	return scheme.AddFieldLabelConversionFunc(eventsv1.SchemeGroupVersion.WithKind("Event"), func(label, value string) (string, string, error) {
		core, ok := eventsV1FieldLabels[label]
		if !ok {
			return "", "", fmt.Errorf("field label not supported: %s (events.events.k8s.io support %s)", label, strings.Join(allowed, ", "))
		}
		return core, value, nil
	})
}

// eventsV1Resource is the resource whose authorization rules apply to
// events.k8s.io/v1 events: the core Events, which they are.
func eventsV1Resource(group, version, resource string) (*api.Resource, bool) {
	if group != eventsv1.GroupName || version != eventsv1.SchemeGroupVersion.Version || resource != "events" {
		return nil, false
	}
	return api.ForPath("", "v1", "events")
}

// eventsV1REST serves the stored core/v1 Events as events.k8s.io/v1
// Events: every verb is the core resource's, on the converted object.
type eventsV1REST struct {
	core *resourceREST
}

var (
	_ rest.StandardStorage      = (*eventsV1REST)(nil)
	_ rest.Scoper               = (*eventsV1REST)(nil)
	_ rest.SingularNameProvider = (*eventsV1REST)(nil)
	_ rest.ShortNamesProvider   = (*eventsV1REST)(nil)
)

func newEventsV1REST(core *resourceREST) (*eventsV1REST, error) {
	if core == nil || core.r.Kind != "Event" || core.r.Group != "" {
		return nil, fmt.Errorf("events.k8s.io/v1 events need the core/v1 events resource")
	}
	return &eventsV1REST{core: core}, nil
}

func (e *eventsV1REST) New() runtime.Object     { return &eventsv1.Event{} }
func (e *eventsV1REST) NewList() runtime.Object { return &eventsv1.EventList{} }
func (e *eventsV1REST) Destroy()                {} // the core resource owns the storage
func (e *eventsV1REST) NamespaceScoped() bool   { return true }
func (e *eventsV1REST) GetSingularName() string { return "event" }

// ShortNames is "ev" in both groups: kube-apiserver serves events.k8s.io
// with the core Events' own storage, short name included.
func (e *eventsV1REST) ShortNames() []string { return e.core.ShortNames() }

func (e *eventsV1REST) Get(ctx context.Context, name string, options *metav1.GetOptions) (runtime.Object, error) {
	obj, err := e.core.Get(ctx, name, options)
	if err != nil {
		return nil, err
	}
	return toEventV1(obj)
}

// List lists the core Events; a field selector has already been mapped
// to the core names (addEventsV1).
func (e *eventsV1REST) List(ctx context.Context, options *metainternalversion.ListOptions) (runtime.Object, error) {
	obj, err := e.core.List(ctx, options)
	if err != nil {
		return nil, err
	}
	return toEventV1List(obj)
}

// Watch converts every event's object; bookmarks carry an Event too (only
// its resourceVersion and annotations set), and errors a Status, which
// passes unchanged. The watch cache sends its objects wrapped
// (toEventV1).
func (e *eventsV1REST) Watch(ctx context.Context, options *metainternalversion.ListOptions) (watch.Interface, error) {
	w, err := e.core.Watch(ctx, options)
	if err != nil {
		return nil, err
	}
	return watch.Filter(w, func(ev watch.Event) (watch.Event, bool) {
		if v1, err := toEventV1(ev.Object); err == nil {
			ev.Object = v1
		}
		return ev, true
	}), nil
}

func (e *eventsV1REST) Create(ctx context.Context, obj runtime.Object, createValidation rest.ValidateObjectFunc, options *metav1.CreateOptions) (runtime.Object, error) {
	in, ok := obj.(*eventsv1.Event)
	if !ok {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("not an events.k8s.io/v1 Event: %T", obj))
	}
	out, err := e.core.Create(ctx, eventCoreFromV1(in), validateAsV1(createValidation), options)
	if err != nil {
		return nil, err
	}
	return toEventV1(out)
}

// Update is the core resource's update, with the update (a PUT's object,
// or a patch) applied to the events.k8s.io/v1 form of the stored Event.
func (e *eventsV1REST) Update(ctx context.Context, name string, objInfo rest.UpdatedObjectInfo, createValidation rest.ValidateObjectFunc, updateValidation rest.ValidateObjectUpdateFunc, forceAllowCreate bool, options *metav1.UpdateOptions) (runtime.Object, bool, error) {
	out, created, err := e.core.Update(ctx, name, eventV1Update{objInfo}, validateAsV1(createValidation), validateUpdateAsV1(updateValidation), forceAllowCreate, options)
	if err != nil {
		return nil, false, err
	}
	v1, err := toEventV1(out)
	return v1, created, err
}

func (e *eventsV1REST) Delete(ctx context.Context, name string, deleteValidation rest.ValidateObjectFunc, options *metav1.DeleteOptions) (runtime.Object, bool, error) {
	out, immediate, err := e.core.Delete(ctx, name, validateAsV1(deleteValidation), options)
	if err != nil {
		return nil, false, err
	}
	v1, err := toEventV1(out)
	return v1, immediate, err
}

func (e *eventsV1REST) DeleteCollection(ctx context.Context, deleteValidation rest.ValidateObjectFunc, options *metav1.DeleteOptions, listOptions *metainternalversion.ListOptions) (runtime.Object, error) {
	out, err := e.core.DeleteCollection(ctx, validateAsV1(deleteValidation), options, listOptions)
	if err != nil {
		return nil, err
	}
	return toEventV1List(out)
}

// ConvertToTable prints the core Events' columns, as kube-apiserver does
// for both groups (one printer, for its internal Event), with each row's
// object the events.k8s.io/v1 one the client asked for.
func (e *eventsV1REST) ConvertToTable(ctx context.Context, obj runtime.Object, tableOptions runtime.Object) (*metav1.Table, error) {
	var core runtime.Object
	var items []runtime.Object
	switch o := obj.(type) {
	case *eventsv1.Event:
		core, items = eventCoreFromV1(o), []runtime.Object{o}
	case *eventsv1.EventList:
		list := &corev1.EventList{ListMeta: o.ListMeta}
		for i := range o.Items {
			list.Items = append(list.Items, *eventCoreFromV1(&o.Items[i]))
			items = append(items, &o.Items[i])
		}
		core = list
	default:
		return nil, fmt.Errorf("cannot print a %T in a table of events.k8s.io/v1 Events", obj)
	}
	table, err := e.core.ConvertToTable(ctx, core, tableOptions)
	if err != nil {
		return nil, err
	}
	for i := range table.Rows {
		table.Rows[i].Object = runtime.RawExtension{Object: items[i]}
	}
	return table, nil
}

// eventV1Update hands the update the events.k8s.io/v1 form of the stored
// Event, and the core resource the core/v1 form of its result.
type eventV1Update struct{ rest.UpdatedObjectInfo }

func (u eventV1Update) UpdatedObject(ctx context.Context, oldObj runtime.Object) (runtime.Object, error) {
	old, err := toEventV1(oldObj)
	if err != nil {
		return nil, err
	}
	next, err := u.UpdatedObjectInfo.UpdatedObject(ctx, old)
	if err != nil {
		return nil, err
	}
	in, ok := next.(*eventsv1.Event)
	if !ok {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("not an events.k8s.io/v1 Event: %T", next))
	}
	return eventCoreFromV1(in), nil
}

// validateAsV1 runs an admission check, which the handler built for
// events.k8s.io/v1 objects, on the events.k8s.io/v1 form of a core Event.
func validateAsV1(validate rest.ValidateObjectFunc) rest.ValidateObjectFunc {
	if validate == nil {
		return nil
	}
	return func(ctx context.Context, obj runtime.Object) error {
		v1, err := toEventV1(obj)
		if err != nil {
			return err
		}
		return validate(ctx, v1)
	}
}

func validateUpdateAsV1(validate rest.ValidateObjectUpdateFunc) rest.ValidateObjectUpdateFunc {
	if validate == nil {
		return nil
	}
	return func(ctx context.Context, obj, old runtime.Object) error {
		v1, err := toEventV1(obj)
		if err != nil {
			return err
		}
		oldV1, err := toEventV1(old)
		if err != nil {
			return err
		}
		return validate(ctx, v1, oldV1)
	}
}

// toEventV1 converts a core Event, which the watch cache may hand out
// wrapped to cache its encodings.
func toEventV1(obj runtime.Object) (*eventsv1.Event, error) {
	if c, ok := obj.(runtime.CacheableObject); ok {
		obj = c.GetObject()
	}
	core, ok := obj.(*corev1.Event)
	if !ok {
		return nil, fmt.Errorf("events.k8s.io/v1 view: want a core/v1 Event, got %T", obj)
	}
	return eventV1FromCore(core), nil
}

func toEventV1List(obj runtime.Object) (*eventsv1.EventList, error) {
	core, ok := obj.(*corev1.EventList)
	if !ok {
		return nil, fmt.Errorf("events.k8s.io/v1 view: want a core/v1 EventList, got %T", obj)
	}
	out := &eventsv1.EventList{ListMeta: core.ListMeta, Items: make([]eventsv1.Event, 0, len(core.Items))}
	for i := range core.Items {
		out.Items = append(out.Items, *eventV1FromCore(&core.Items[i]))
	}
	return out, nil
}

// eventsV1Group is the events.k8s.io group, served at v1 over the core
// events resource installed in the legacy group.
func eventsV1Group(legacy *genericapiserver.APIGroupInfo, scheme *runtime.Scheme, codecs serializer.CodecFactory) (*genericapiserver.APIGroupInfo, error) {
	var core *resourceREST
	if legacy != nil {
		core, _ = legacy.VersionedResourcesStorageMap["v1"]["events"].(*resourceREST)
	}
	v1, err := newEventsV1REST(core)
	if err != nil {
		return nil, err
	}
	info := genericapiserver.NewDefaultAPIGroupInfo(eventsv1.GroupName, scheme, runtime.NewParameterCodec(scheme), codecs)
	info.VersionedResourcesStorageMap[eventsv1.SchemeGroupVersion.Version] = map[string]rest.Storage{"events": v1}
	return &info, nil
}
