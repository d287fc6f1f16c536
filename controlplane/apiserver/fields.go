package apiserver

import (
	"maps"
	"reflect"
	"slices"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/fields"

	"github.com/skep-io/skep/controlplane/api"
)

// The Kubernetes types keep desired state in a field named Spec and
// observed state in one named Status; these helpers move between them
// without a case per kind.

func fieldOf(obj api.Object, name string) reflect.Value {
	v := reflect.ValueOf(obj).Elem()
	return v.FieldByName(name)
}

func specOf(obj api.Object) any {
	f := fieldOf(obj, "Spec")
	if !f.IsValid() {
		return nil
	}
	return f.Interface()
}

// copyStatus sets dst's status to src's.
func copyStatus(src, dst api.Object) {
	s, d := fieldOf(src, "Status"), fieldOf(dst, "Status")
	if s.IsValid() && d.IsValid() {
		d.Set(s)
	}
}

// withStatusOnly returns a copy of old carrying next's status: a write to
// /status changes nothing else.
func withStatusOnly(old, next api.Object) api.Object {
	out := old.DeepCopyObject().(api.Object)
	copyStatus(next, out)
	out.SetResourceVersion(next.GetResourceVersion())
	return out
}

func nodeNamed(name string) api.Object {
	n := api.MustLookup("nodes").New()
	n.SetName(name)
	return n
}

// A field selector names one of the fields Kubernetes makes selectable
// for the resource (each registry's ToSelectableFields/GetAttrs), with the
// value as Kubernetes prints it (a bool as "true"/"false").
type fieldGetter func(api.Object) string

// objectMetaFields are selectable on every resource.
var objectMetaFields = map[string]fieldGetter{
	"metadata.name":      func(o api.Object) string { return o.GetName() },
	"metadata.namespace": func(o api.Object) string { return o.GetNamespace() },
}

var kindFields = map[string]map[string]fieldGetter{
	"Pod": {
		"spec.nodeName":           func(o api.Object) string { return o.(*corev1.Pod).Spec.NodeName },
		"spec.restartPolicy":      func(o api.Object) string { return string(o.(*corev1.Pod).Spec.RestartPolicy) },
		"spec.schedulerName":      func(o api.Object) string { return o.(*corev1.Pod).Spec.SchedulerName },
		"spec.serviceAccountName": func(o api.Object) string { return o.(*corev1.Pod).Spec.ServiceAccountName },
		"spec.hostNetwork":        func(o api.Object) string { return strconv.FormatBool(o.(*corev1.Pod).Spec.HostNetwork) },
		"status.phase":            func(o api.Object) string { return string(o.(*corev1.Pod).Status.Phase) },
		"status.podIP":            func(o api.Object) string { return o.(*corev1.Pod).Status.PodIP },
		"status.nominatedNodeName": func(o api.Object) string {
			return o.(*corev1.Pod).Status.NominatedNodeName
		},
	},
	"Node": {
		"spec.unschedulable": func(o api.Object) string { return strconv.FormatBool(o.(*corev1.Node).Spec.Unschedulable) },
	},
	"Namespace": {
		"status.phase": func(o api.Object) string { return string(o.(*corev1.Namespace).Status.Phase) },
	},
	"Secret": {
		"type": func(o api.Object) string { return string(o.(*corev1.Secret).Type) },
	},
	"Event": {
		"involvedObject.kind":            func(o api.Object) string { return o.(*corev1.Event).InvolvedObject.Kind },
		"involvedObject.namespace":       func(o api.Object) string { return o.(*corev1.Event).InvolvedObject.Namespace },
		"involvedObject.name":            func(o api.Object) string { return o.(*corev1.Event).InvolvedObject.Name },
		"involvedObject.uid":             func(o api.Object) string { return string(o.(*corev1.Event).InvolvedObject.UID) },
		"involvedObject.apiVersion":      func(o api.Object) string { return o.(*corev1.Event).InvolvedObject.APIVersion },
		"involvedObject.resourceVersion": func(o api.Object) string { return o.(*corev1.Event).InvolvedObject.ResourceVersion },
		"involvedObject.fieldPath":       func(o api.Object) string { return o.(*corev1.Event).InvolvedObject.FieldPath },
		"reason":                         func(o api.Object) string { return o.(*corev1.Event).Reason },
		"reportingComponent":             func(o api.Object) string { return o.(*corev1.Event).ReportingController },
		"source":                         eventSource,
		"type":                           func(o api.Object) string { return o.(*corev1.Event).Type },
	},
}

// eventSource is who reported an event: the old-style source component,
// or the new-style reporting controller when there is none.
func eventSource(o api.Object) string {
	e := o.(*corev1.Event)
	if e.Source.Component != "" {
		return e.Source.Component
	}
	return e.ReportingController
}

func fieldGetterOf(r *api.Resource, name string) (fieldGetter, bool) {
	if g, ok := objectMetaFields[name]; ok {
		return g, true
	}
	g, ok := kindFields[r.Kind][name]
	return g, ok
}

// fieldValue reads the field a field selector names. With a nil object it
// only says whether the field is selectable.
func fieldValue(r *api.Resource, obj api.Object, name string) (string, bool) {
	g, ok := fieldGetterOf(r, name)
	if !ok || obj == nil {
		return "", ok
	}
	return g(obj), true
}

// SelectableFields is every field a field selector may name on obj, with
// its value: what a generic registry's GetAttrs returns, so that another
// front end (the generic API server's) selects as this one does.
func SelectableFields(r *api.Resource, obj api.Object) fields.Set { return selectableFields(r, obj) }

func selectableFields(r *api.Resource, obj api.Object) fields.Set {
	set := make(fields.Set, len(objectMetaFields)+len(kindFields[r.Kind]))
	for name, g := range objectMetaFields {
		set[name] = g(obj)
	}
	for name, g := range kindFields[r.Kind] {
		set[name] = g(obj)
	}
	return set
}

// SelectableFieldNames lists what a field selector may name on r, sorted
// (metadata first), as the error refusing another field says.
func SelectableFieldNames(r *api.Resource) []string { return selectableFieldNames(r) }

func selectableFieldNames(r *api.Resource) []string {
	names := slices.Collect(maps.Keys(kindFields[r.Kind]))
	slices.Sort(names)
	return append([]string{"metadata.name", "metadata.namespace"}, names...)
}
