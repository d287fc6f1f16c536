package apiserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/uuid"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/skep-io/skep/controlplane/api"
	"github.com/skep-io/skep/controlplane/client"
	"github.com/skep-io/skep/controlplane/store"
)

// registry is the API's behaviour on objects, below HTTP and above the
// store: defaulting, validation, admission (allocation, quota), encoding,
// and the mapping of store errors to Kubernetes Status errors. The HTTP
// handlers and the in-process client both call it.
type registry struct {
	store  *store.Store
	alloc  *allocator
	quota  *quotaAdmission
	now    func() time.Time
	timing func(op string, start time.Time)
}

func gr(r *api.Resource) schema.GroupResource {
	return schema.GroupResource{Group: r.Group, Resource: r.Name}
}

func keyOf(r *api.Resource, ns, name string) store.Key {
	if !r.Namespaced {
		ns = ""
	}
	return store.Key{Resource: r.Name, Namespace: ns, Name: name}
}

// encode stores an object without its resourceVersion: the revision is the
// resourceVersion, and is set again on every read.
func encode(obj api.Object) ([]byte, error) {
	rv := obj.GetResourceVersion()
	obj.SetResourceVersion("")
	defer obj.SetResourceVersion(rv)
	return json.Marshal(obj)
}

func decodeEntry(r *api.Resource, e store.Entry) (api.Object, error) {
	obj := r.New()
	if err := json.Unmarshal(e.Value, obj); err != nil {
		return nil, fmt.Errorf("decode stored %s: %w", e.Key, err)
	}
	api.SetTypeMeta(r, obj)
	obj.SetResourceVersion(strconv.FormatUint(e.Revision, 10))
	return obj, nil
}

func (g *registry) storeErr(r *api.Resource, name string, err error) error {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return apierrors.NewNotFound(gr(r), name)
	case errors.Is(err, store.ErrExists):
		return apierrors.NewAlreadyExists(gr(r), name)
	case errors.Is(err, store.ErrConflict):
		return apierrors.NewConflict(gr(r), name, errors.New("the object has been modified; please apply your changes to the latest version and try again"))
	case errors.Is(err, store.ErrTooLarge):
		return apierrors.NewRequestEntityTooLargeError(fmt.Sprintf("%s %q is too large: the limit is %d bytes (%g MiB) as stored", r.Kind, name, store.MaxObjectBytes, float64(store.MaxObjectBytes)/(1<<20)))
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return apierrors.NewTimeoutError("the store did not answer in time", 1)
	}
	return apierrors.NewInternalError(err)
}

func invalid(r *api.Resource, name string, errs field.ErrorList) error {
	return apierrors.NewInvalid(schema.GroupKind{Group: r.Group, Kind: r.Kind}, name, errs)
}

func (g *registry) get(ctx context.Context, r *api.Resource, ns, name string) (api.Object, error) {
	defer g.timing("get", time.Now())
	e, err := g.store.Get(ctx, keyOf(r, ns, name))
	if err != nil {
		return nil, g.storeErr(r, name, err)
	}
	return decodeEntry(r, e)
}

// filter is a parsed label and field selector.
type filter struct {
	labels labels.Selector
	fields fields.Selector
}

func parseFilter(r *api.Resource, opts client.ListOptions) (filter, error) {
	f := filter{labels: labels.Everything(), fields: fields.Everything()}
	var err error
	if opts.LabelSelector != "" {
		if f.labels, err = labels.Parse(opts.LabelSelector); err != nil {
			return f, apierrors.NewBadRequest(fmt.Sprintf("labelSelector %q: %v", opts.LabelSelector, err))
		}
	}
	if opts.FieldSelector != "" {
		if f.fields, err = fields.ParseSelector(opts.FieldSelector); err != nil {
			return f, apierrors.NewBadRequest(fmt.Sprintf("fieldSelector %q: %v", opts.FieldSelector, err))
		}
		for _, req := range f.fields.Requirements() {
			if _, ok := fieldValue(r, nil, req.Field); !ok {
				return f, apierrors.NewBadRequest(fmt.Sprintf("field label not supported: %s (%s support %s)", req.Field, r.Name, strings.Join(selectableFieldNames(r), ", ")))
			}
		}
	}
	return f, nil
}

func (f filter) matches(r *api.Resource, obj api.Object) bool {
	if !f.labels.Matches(labels.Set(obj.GetLabels())) {
		return false
	}
	return f.fields.Matches(fieldSet{r, obj})
}

type fieldSet struct {
	r   *api.Resource
	obj api.Object
}

func (s fieldSet) Has(name string) bool   { _, ok := fieldValue(s.r, s.obj, name); return ok }
func (s fieldSet) Get(name string) string { v, _ := fieldValue(s.r, s.obj, name); return v }

func (g *registry) list(ctx context.Context, r *api.Resource, ns string, opts client.ListOptions) ([]api.Object, uint64, error) {
	defer g.timing("list", time.Now())
	f, err := parseFilter(r, opts)
	if err != nil {
		return nil, 0, err
	}
	if !r.Namespaced {
		ns = ""
	}
	entries, rev, err := g.store.List(ctx, r.Name, ns)
	if err != nil {
		return nil, 0, g.storeErr(r, "", err)
	}
	out := make([]api.Object, 0, len(entries))
	for _, e := range entries {
		obj, err := decodeEntry(r, e)
		if err != nil {
			return nil, 0, apierrors.NewInternalError(err)
		}
		if f.matches(r, obj) {
			out = append(out, obj)
		}
	}
	return out, rev, nil
}

// create admits and stores a new object. The object must already be
// decoded; create defaults, validates and allocates.
func (g *registry) create(ctx context.Context, r *api.Resource, obj api.Object, dryRun bool) (api.Object, error) {
	if !r.Namespaced {
		obj.SetNamespace("")
	} else if obj.GetNamespace() == "" {
		obj.SetNamespace(api.DefaultNamespace)
	}
	if obj.GetName() == "" && obj.GetGenerateName() != "" {
		obj.SetName(obj.GetGenerateName() + string(uuid.NewUUID())[:5])
	}
	api.Default(obj)
	api.DefaultCreate(obj)
	if errs := api.Validate(r, obj); len(errs) > 0 {
		return nil, invalid(r, obj.GetName(), errs)
	}
	if r.Namespaced {
		ns, err := g.get(ctx, api.MustLookup("namespaces"), "", obj.GetNamespace())
		if err != nil {
			if apierrors.IsNotFound(err) {
				return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "namespaces"}, obj.GetNamespace())
			}
			return nil, err
		}
		if err := checkNamespaceActive(r, obj, ns); err != nil {
			return nil, err
		}
	}
	obj.SetUID(types.UID(uuid.NewUUID()))
	obj.SetCreationTimestamp(metav1.NewTime(g.now()))
	obj.SetGeneration(1)
	obj.SetResourceVersion("")
	obj.SetDeletionTimestamp(nil)

	release, err := g.alloc.admitCreate(ctx, r, obj)
	if err != nil {
		return nil, err
	}
	uncharge, err := g.quota.charge(ctx, r, obj, nil)
	if err != nil {
		release()
		return nil, err
	}
	if dryRun {
		// Everything was checked, allocation and quota included; nothing
		// is kept.
		release()
		uncharge()
		return obj, nil
	}
	data, err := encode(obj)
	if err != nil {
		release()
		uncharge()
		return nil, apierrors.NewInternalError(err)
	}
	start := time.Now()
	rev, err := g.store.Create(ctx, keyOf(r, obj.GetNamespace(), obj.GetName()), data)
	g.timing("create", start)
	if err != nil {
		release()
		uncharge()
		return nil, g.storeErr(r, obj.GetName(), err)
	}
	obj.SetResourceVersion(strconv.FormatUint(rev, 10))
	return obj, nil
}

// update replaces an object. With status true only the status changes (the
// /status subresource); otherwise the status is kept from the stored object
// for resources that have a status subresource.
func (g *registry) update(ctx context.Context, r *api.Resource, obj api.Object, status, dryRun bool) (api.Object, error) {
	if !r.Namespaced {
		obj.SetNamespace("")
	} else if obj.GetNamespace() == "" {
		obj.SetNamespace(api.DefaultNamespace)
	}
	k := keyOf(r, obj.GetNamespace(), obj.GetName())
	cur, err := g.store.Get(ctx, k)
	if err != nil {
		return nil, g.storeErr(r, obj.GetName(), err)
	}
	old, err := decodeEntry(r, cur)
	if err != nil {
		return nil, apierrors.NewInternalError(err)
	}
	rev := cur.Revision
	if rv := obj.GetResourceVersion(); rv != "" {
		if rev, err = strconv.ParseUint(rv, 10, 64); err != nil {
			return nil, apierrors.NewBadRequest(fmt.Sprintf("metadata.resourceVersion %q is not a number", rv))
		}
	}
	// What the server owns never comes from the client.
	obj.SetUID(old.GetUID())
	obj.SetCreationTimestamp(old.GetCreationTimestamp())
	obj.SetGeneration(old.GetGeneration())
	if obj.GetDeletionTimestamp() == nil {
		obj.SetDeletionTimestamp(old.GetDeletionTimestamp())
		obj.SetDeletionGracePeriodSeconds(old.GetDeletionGracePeriodSeconds())
	}
	if status {
		obj = withStatusOnly(old, obj)
	} else if r.HasStatus {
		copyStatus(old, obj)
	}
	markBound(old, obj)
	api.Default(obj)
	if err := g.prepareNamespaceUpdate(ctx, obj, old); err != nil {
		return nil, err
	}
	if !status && !reflect.DeepEqual(specOf(obj), specOf(old)) {
		obj.SetGeneration(old.GetGeneration() + 1)
	}
	release, err := g.alloc.admitUpdate(ctx, r, obj, old)
	if err != nil {
		return nil, err
	}
	if errs := api.ValidateUpdate(r, obj, old); len(errs) > 0 {
		release(false)
		return nil, invalid(r, obj.GetName(), errs)
	}
	uncharge := func() {}
	if !status { // a status write (a quota's own usage among them) charges nothing
		if uncharge, err = g.quota.charge(ctx, r, obj, old); err != nil {
			release(false)
			return nil, err
		}
	}
	if dryRun {
		release(false)
		uncharge()
		return obj, nil
	}
	if namespaceFinalized(obj) {
		release(false)
		uncharge()
		return g.deleteFinalized(ctx, r, k, obj, old, rev)
	}
	data, err := encode(obj)
	if err != nil {
		release(false)
		uncharge()
		return nil, apierrors.NewInternalError(err)
	}
	start := time.Now()
	newRev, err := g.store.Update(ctx, k, data, rev)
	g.timing("update", start)
	if err != nil {
		release(false)
		uncharge()
		return nil, g.storeErr(r, obj.GetName(), err)
	}
	release(true)
	obj.SetResourceVersion(strconv.FormatUint(newRev, 10))
	return obj, nil
}

// delete removes an object. A pod bound to a node is first marked
// terminating, unless the grace period is 0: its node's agent stops it
// and then deletes it for good, as the kubelet does. A namespace is only
// marked terminating (namespace.go); the cluster's own namespaces may not
// be deleted at all.
func (g *registry) delete(ctx context.Context, r *api.Resource, ns, name string, opts client.DeleteOptions) (api.Object, error) {
	if err := checkNamespaceDelete(r, name); err != nil {
		return nil, err
	}
	// A delete without a resourceVersion precondition is not the caller's
	// read-modify-write: when the object changes between our read and our
	// compare-and-set (an agent writing a pod's status), read it again
	// rather than hand the user a conflict they did not ask for.
	for {
		obj, err := g.deleteOnce(ctx, r, ns, name, opts)
		var failed preconditionFailed
		if opts.ResourceVersion != "" || !apierrors.IsConflict(err) || errors.As(err, &failed) || ctx.Err() != nil {
			return obj, err
		}
	}
}

func (g *registry) deleteOnce(ctx context.Context, r *api.Resource, ns, name string, opts client.DeleteOptions) (api.Object, error) {
	k := keyOf(r, ns, name)
	cur, err := g.store.Get(ctx, k)
	if err != nil {
		return nil, g.storeErr(r, name, err)
	}
	old, err := decodeEntry(r, cur)
	if err != nil {
		return nil, apierrors.NewInternalError(err)
	}
	if opts.ResourceVersion != "" && opts.ResourceVersion != old.GetResourceVersion() {
		return nil, apierrors.NewConflict(gr(r), name, fmt.Errorf("precondition failed: resourceVersion is %s, not %s", old.GetResourceVersion(), opts.ResourceVersion))
	}
	if opts.UID != "" && opts.UID != old.GetUID() {
		// Not a race to read again through: the object is another one.
		return nil, preconditionFailed{apierrors.NewConflict(gr(r), name, preconditionMismatch("UID", opts.UID, old.GetUID()))}
	}
	if ns, ok := old.(*corev1.Namespace); ok && !namespaceFinalized(ns) {
		return g.terminateNamespace(ctx, r, cur, ns, opts.DryRun)
	}
	if pod, ok := old.(*corev1.Pod); ok && pod.Spec.NodeName != "" && (opts.GracePeriodSeconds == nil || *opts.GracePeriodSeconds > 0) {
		if pod.DeletionTimestamp != nil {
			return pod, nil // already terminating
		}
		grace := *pod.Spec.TerminationGracePeriodSeconds
		if opts.GracePeriodSeconds != nil {
			grace = *opts.GracePeriodSeconds
		}
		now := metav1.NewTime(g.now())
		pod.DeletionTimestamp = &now
		pod.DeletionGracePeriodSeconds = &grace
		if opts.DryRun {
			return pod, nil
		}
		data, err := encode(pod)
		if err != nil {
			return nil, apierrors.NewInternalError(err)
		}
		rev, err := g.store.Update(ctx, k, data, cur.Revision)
		if err != nil {
			return nil, g.storeErr(r, name, err)
		}
		pod.ResourceVersion = strconv.FormatUint(rev, 10)
		return pod, nil
	}
	if opts.DryRun {
		// Every check above passed; the object is answered as it was, and
		// stays.
		return old, nil
	}
	start := time.Now()
	err = g.store.Delete(ctx, k, cur.Revision)
	g.timing("delete", start)
	if err != nil {
		return nil, g.storeErr(r, name, err)
	}
	g.alloc.release(ctx, r, old)
	g.quota.uncharge(ctx, r, old)
	return old, nil
}

// watch streams events after since (0: first every existing object as
// ADDED, then the changes).
func (g *registry) watch(ctx context.Context, r *api.Resource, ns string, opts client.ListOptions) (<-chan client.Event, error) {
	f, err := parseFilter(r, opts)
	if err != nil {
		return nil, err
	}
	if !r.Namespaced {
		ns = ""
	}
	var initial []api.Object
	var since uint64
	if opts.ResourceVersion == "" || opts.ResourceVersion == "0" {
		initial, since, err = g.list(ctx, r, ns, opts)
		if err != nil {
			return nil, err
		}
	} else if since, err = strconv.ParseUint(opts.ResourceVersion, 10, 64); err != nil {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("resourceVersion %q is not a number", opts.ResourceVersion))
	}
	events, err := g.store.Watch(ctx, r.Name, ns, since)
	if err != nil {
		return nil, g.storeErr(r, "", err)
	}
	out := make(chan client.Event, 64)
	go func() {
		defer close(out)
		send := func(ev client.Event) bool {
			select {
			case out <- ev:
				return true
			case <-ctx.Done():
				return false
			}
		}
		// A key this watch has not seen is ADDED, one it has is MODIFIED:
		// the store's values do not say whether a put created the key.
		known := make(map[store.Key]bool, len(initial))
		for _, obj := range initial {
			known[keyOf(r, obj.GetNamespace(), obj.GetName())] = true
			if !send(client.Event{Type: client.Added, Object: obj}) {
				return
			}
		}
		for ev := range events {
			if ev.Type == store.Deleted {
				delete(known, ev.Entry.Key)
				obj := r.New()
				api.SetTypeMeta(r, obj)
				obj.SetName(ev.Entry.Key.Name)
				obj.SetNamespace(ev.Entry.Key.Namespace)
				obj.SetResourceVersion(strconv.FormatUint(ev.Entry.Revision, 10))
				if !send(client.Event{Type: client.Deleted, Object: obj}) {
					return
				}
				continue
			}
			obj, err := decodeEntry(r, ev.Entry)
			if err != nil || !f.matches(r, obj) {
				continue
			}
			typ := client.Modified
			if !known[ev.Entry.Key] {
				typ = client.Added
				known[ev.Entry.Key] = true
			}
			if !send(client.Event{Type: typ, Object: obj}) {
				return
			}
		}
	}()
	return out, nil
}

// markBound sets PodScheduled=True on a pod whose update binds it to a node,
// as Kubernetes' binding subresource does, so binding is one write.
func markBound(old, obj api.Object) {
	pod, ok := obj.(*corev1.Pod)
	if !ok || old.(*corev1.Pod).Spec.NodeName != "" || pod.Spec.NodeName == "" {
		return
	}
	cond := corev1.PodCondition{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: metav1.Now()}
	for i, c := range pod.Status.Conditions {
		if c.Type == corev1.PodScheduled {
			pod.Status.Conditions[i] = cond
			return
		}
	}
	pod.Status.Conditions = append(pod.Status.Conditions, cond)
}

// preconditionFailed is a delete's UID precondition not met: a conflict
// that reading again cannot mend.
type preconditionFailed struct{ error }

func (p preconditionFailed) Unwrap() error { return p.error }

// Status is the conflict's: the generic server's handlers take an error's
// Status from the error itself, not from what it wraps.
func (p preconditionFailed) Status() metav1.Status {
	var se apierrors.APIStatus
	if errors.As(p.error, &se) {
		return se.Status()
	}
	return apierrors.NewInternalError(p.error).Status()
}
