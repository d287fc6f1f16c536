// Package endpointslice keeps the discovery.k8s.io/v1 EndpointSlices of
// every Service, as Kubernetes' EndpointSlice and EndpointSlice mirroring
// controllers do: for a Service with a selector, built from its pods; for
// one without, mirrored from the Endpoints its user wrote. The slices are
// what agents program their dataplanes and DNS from; the Endpoints
// controller keeps writing v1 Endpoints alongside, for old clients.
//
// It is a package of its own rather than part of the Endpoints controller
// because it reads what that one writes (the user's Endpoints of
// selectorless Services) and owns objects of its own (several generated
// slices per Service, found by label, not by name).
package endpointslice

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/skep-io/skep/controlplane/api"
	"github.com/skep-io/skep/controlplane/api/conditions"
	"github.com/skep-io/skep/controlplane/client"
	"github.com/skep-io/skep/controlplane/controllers/endpoints"
	"github.com/skep-io/skep/controlplane/queue"
)

var slicesR = api.MustLookup("endpointslices")

// Config tunes the controller; zero values take the defaults in brackets.
type Config struct {
	// Batch merges the pod changes that come within it into one write
	// per Service [200ms].
	Batch time.Duration
	// MaxEndpointsPerSlice [DefaultMaxEndpointsPerSlice].
	MaxEndpointsPerSlice int
}

// Controller writes EndpointSlices.
type Controller struct {
	c                                        client.Interface
	services, slices, endpoints, pods, nodes *client.Informer
	cfg                                      Config
	queue                                    *queue.Queue
	logger                                   *slog.Logger
	written                                  *writes
}

// New returns the EndpointSlice controller on the given informers
// (endpoints is read only for selectorless Services).
func New(c client.Interface, services, slices, endpoints, pods, nodes *client.Informer, cfg Config, logger *slog.Logger) *Controller {
	if cfg.Batch <= 0 {
		cfg.Batch = 200 * time.Millisecond
	}
	if cfg.MaxEndpointsPerSlice <= 0 {
		cfg.MaxEndpointsPerSlice = DefaultMaxEndpointsPerSlice
	}
	ec := &Controller{
		c: c, services: services, slices: slices, endpoints: endpoints, pods: pods, nodes: nodes,
		cfg: cfg, queue: queue.New(), logger: logger.With("controller", "endpointslice"), written: &writes{rv: map[string]map[string]write{}},
	}
	enqueue := func(obj api.Object) { ec.queue.Add(client.KeyOf(obj)) }
	services.AddHandlers(client.Handlers{OnAdd: enqueue, OnUpdate: func(_, o api.Object) { enqueue(o) }, OnDelete: enqueue})
	// A user's Endpoints of a selectorless Service is mirrored.
	endpoints.AddHandlers(client.Handlers{OnAdd: enqueue, OnUpdate: func(_, o api.Object) { enqueue(o) }, OnDelete: enqueue})
	// A slice changed or deleted by someone else is put right; one seen at
	// start is checked against its Service, which may be gone.
	sliceChanged := func(o api.Object) {
		if svc := o.GetLabels()[discoveryv1.LabelServiceName]; svc != "" && ours(o) {
			ec.queue.AddAfter(client.Key(o.GetNamespace(), svc), ec.cfg.Batch)
		}
	}
	slices.AddHandlers(client.Handlers{OnAdd: sliceChanged, OnUpdate: func(_, o api.Object) { sliceChanged(o) }, OnDelete: sliceChanged})
	pods.AddHandlers(client.Handlers{
		OnAdd:    func(o api.Object) { ec.podChanged(nil, o.(*corev1.Pod)) },
		OnUpdate: func(old, o api.Object) { ec.podChanged(old.(*corev1.Pod), o.(*corev1.Pod)) },
		OnDelete: func(o api.Object) { ec.podChanged(nil, o.(*corev1.Pod)) },
	})
	nodes.AddHandlers(client.Handlers{OnUpdate: func(old, o api.Object) {
		// A node that stops (or starts) being Ready changes its pods'
		// conditions at once, without batching; a zone change, their zone.
		was, is := old.(*corev1.Node), o.(*corev1.Node)
		if conditions.NodeReady(was) != conditions.NodeReady(is) || was.Labels[corev1.LabelTopologyZone] != is.Labels[corev1.LabelTopologyZone] {
			ec.nodeChanged(is.Name)
		}
	}})
	return ec
}

// Run reconciles until ctx ends.
func (ec *Controller) Run(ctx context.Context, workers int) {
	if !client.WaitForSync(ctx, ec.services, ec.slices, ec.endpoints, ec.pods, ec.nodes) {
		return
	}
	queue.Run(ctx, ec.queue, workers, ec.sync, ec.logger)
}

// ours reports whether one of skep's controllers manages the slice.
func ours(o api.Object) bool {
	mb := o.GetLabels()[discoveryv1.LabelManagedBy]
	return mb == api.EndpointSliceController || mb == api.EndpointSliceMirroringController
}

func (ec *Controller) podChanged(old, pod *corev1.Pod) {
	for _, k := range endpoints.ServicesOfPod(ec.services, old, pod) {
		ec.queue.AddAfter(k, ec.cfg.Batch)
	}
}

func (ec *Controller) nodeChanged(node string) {
	seen := map[string]bool{}
	for _, o := range ec.pods.List() {
		p := o.(*corev1.Pod)
		if p.Spec.NodeName != node {
			continue
		}
		for _, k := range endpoints.ServicesOfPod(ec.services, nil, p) {
			if !seen[k] {
				seen[k] = true
				ec.queue.Add(k)
			}
		}
	}
}

// node reads a node's readiness and zone from the cache; a node the cache
// does not know is taken as ready (its pods' own readiness decides), as
// the Endpoints controller does.
func (ec *Controller) node(name string) (bool, string) {
	o, ok := ec.nodes.Get("", name)
	if !ok {
		return true, ""
	}
	n := o.(*corev1.Node)
	return conditions.NodeReady(n), n.Labels[corev1.LabelTopologyZone]
}

func (ec *Controller) sync(ctx context.Context, key string) error {
	ns, name := splitKey(key)
	if !ec.written.seen(ec.slices, key) {
		// Our last writes are not in the cache yet: building from it now
		// would create the same slices twice.
		ec.queue.AddAfter(key, 50*time.Millisecond)
		return nil
	}
	obj, ok := ec.services.Get(ns, name)
	if !ok {
		return ec.reconcile(ctx, key, nil, "", nil, nil) // the Service is gone: so are its slices
	}
	svc := obj.(*corev1.Service)
	if svc.DeletionTimestamp != nil {
		return nil
	}
	if len(svc.Spec.Selector) > 0 {
		sel := labels.SelectorFromSet(svc.Spec.Selector)
		var pods []*corev1.Pod
		for _, o := range ec.pods.ListNamespace(ns) {
			if p := o.(*corev1.Pod); sel.Matches(labels.Set(p.Labels)) {
				pods = append(pods, p)
			}
		}
		return ec.reconcile(ctx, key, svc, api.EndpointSliceController, svc.Labels, FromPods(svc, pods, ec.node, ec.cfg.MaxEndpointsPerSlice))
	}
	var want []discoveryv1.EndpointSlice
	var lbls map[string]string
	if o, ok := ec.endpoints.Get(ns, name); ok && o.GetLabels()[discoveryv1.LabelSkipMirror] != "true" {
		//lint:ignore SA1019 mirrored for old clients: users still write v1 Endpoints for selectorless Services
		ep := o.(*corev1.Endpoints)
		want, lbls = FromEndpoints(ep, ec.cfg.MaxEndpointsPerSlice), ep.Labels
	}
	return ec.reconcile(ctx, key, svc, api.EndpointSliceMirroringController, lbls, want)
}

// reconcile makes svc's slices (key names it; svc nil when it is gone)
// hold want: a slice already equal to one wanted is kept, others are
// rewritten in place, what is missing is created and what is left over is
// deleted, in that order, so that no endpoint is ever absent from every
// slice while it moves between them.
func (ec *Controller) reconcile(ctx context.Context, key string, svc *corev1.Service, managedBy string, svcLabels map[string]string, want []discoveryv1.EndpointSlice) error {
	ns, name := splitKey(key)
	var have []*discoveryv1.EndpointSlice
	for _, o := range ec.slices.ListNamespace(ns) {
		if o.GetLabels()[discoveryv1.LabelServiceName] == name && ours(o) {
			have = append(have, o.(*discoveryv1.EndpointSlice))
		}
	}
	var meta metav1.ObjectMeta
	if svc != nil {
		meta = sliceMeta(svc, managedBy, svcLabels)
	}
	used := make([]bool, len(have))
	var rest []discoveryv1.EndpointSlice
	for _, w := range want {
		if i := find(have, used, func(h *discoveryv1.EndpointSlice) bool { return sameSlice(h, &w, &meta) }); i >= 0 {
			used[i] = true
			continue
		}
		rest = append(rest, w)
	}
	var errs []error
	for _, w := range rest {
		i := find(have, used, func(h *discoveryv1.EndpointSlice) bool { return h.Labels[discoveryv1.LabelManagedBy] == managedBy })
		if i < 0 {
			next := w
			next.ObjectMeta = meta
			errs = append(errs, ec.write(ctx, key, &next, true))
			continue
		}
		used[i] = true
		next := have[i].DeepCopy()
		next.Labels, next.OwnerReferences = meta.Labels, meta.OwnerReferences
		next.AddressType, next.Endpoints, next.Ports = w.AddressType, w.Endpoints, w.Ports
		errs = append(errs, ec.write(ctx, key, next, false))
	}
	for i, h := range have {
		if used[i] {
			continue
		}
		err := ec.c.Delete(ctx, slicesR, ns, h.Name, client.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete endpointslice %s/%s: %w", ns, h.Name, err))
			continue
		}
		ec.written.record(key, h.Name, "")
	}
	return errors.Join(errs...)
}

func (ec *Controller) write(ctx context.Context, key string, s *discoveryv1.EndpointSlice, create bool) error {
	write, verb := ec.c.Update, "update"
	if create {
		write, verb = ec.c.Create, "create"
	}
	out, err := write(ctx, slicesR, s)
	if err != nil {
		return fmt.Errorf("%s endpointslice of %s: %w", verb, key, err)
	}
	ec.written.record(key, out.GetName(), out.GetResourceVersion())
	return nil
}

// sliceMeta is the metadata of every slice of svc: its labels with the
// two Kubernetes readers select on, and the Service as controlling owner.
func sliceMeta(svc *corev1.Service, managedBy string, from map[string]string) metav1.ObjectMeta {
	lbls := maps.Clone(from)
	if lbls == nil {
		lbls = map[string]string{}
	}
	lbls[discoveryv1.LabelServiceName] = svc.Name
	lbls[discoveryv1.LabelManagedBy] = managedBy
	return metav1.ObjectMeta{
		Namespace:    svc.Namespace,
		GenerateName: svc.Name + "-",
		Labels:       lbls,
		OwnerReferences: []metav1.OwnerReference{{
			APIVersion: "v1", Kind: "Service", Name: svc.Name, UID: svc.UID,
			Controller: ptr(true), BlockOwnerDeletion: ptr(true),
		}},
	}
}

func sameSlice(h, w *discoveryv1.EndpointSlice, meta *metav1.ObjectMeta) bool {
	return h.AddressType == w.AddressType &&
		apiequality.Semantic.DeepEqual(h.Endpoints, w.Endpoints) &&
		apiequality.Semantic.DeepEqual(h.Ports, w.Ports) &&
		apiequality.Semantic.DeepEqual(h.Labels, meta.Labels) &&
		apiequality.Semantic.DeepEqual(h.OwnerReferences, meta.OwnerReferences)
}

func find(have []*discoveryv1.EndpointSlice, used []bool, match func(*discoveryv1.EndpointSlice) bool) int {
	for i, h := range have {
		if !used[i] && match(h) {
			return i
		}
	}
	return -1
}

// writes remembers, per Service, the resourceVersion of each slice this
// controller last wrote ("" for a delete) until the informer shows it, as
// Kubernetes' EndpointSliceTracker does: slices have generated names, so
// a sync from a cache that lags its own writes would create them twice.
type writes struct {
	mu sync.Mutex
	rv map[string]map[string]write // Service key → slice name → the write
}

type write struct {
	rv string // "" for a delete
	at time.Time
}

// writeMemory bounds how long a write not seen holds a Service's syncs
// back: one whose object someone else deleted or replaced meanwhile never
// shows, and the slices are put right from the cache after all.
const writeMemory = 5 * time.Second

func (w *writes) record(key, slice, rv string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.rv[key] == nil {
		w.rv[key] = map[string]write{}
	}
	w.rv[key][slice] = write{rv: rv, at: time.Now()}
}

// seen reports whether the cache holds every write recorded for key, and
// forgets those it does.
func (w *writes) seen(cache *client.Informer, key string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	ns, _ := splitKey(key)
	for slice, wr := range w.rv[key] {
		o, ok := cache.Get(ns, slice)
		switch {
		case time.Since(wr.at) > writeMemory:
		case wr.rv == "" && ok, wr.rv != "" && !ok, wr.rv != "" && !atLeast(o.GetResourceVersion(), wr.rv):
			return false
		}
		delete(w.rv[key], slice)
	}
	delete(w.rv, key)
	return true
}

// atLeast compares resourceVersions, which the store makes increasing
// integers (its revisions).
func atLeast(have, want string) bool {
	h, err1 := strconv.ParseUint(have, 10, 64)
	n, err2 := strconv.ParseUint(want, 10, 64)
	if err1 != nil || err2 != nil {
		return have == want
	}
	return h >= n
}

func splitKey(key string) (string, string) {
	for i := 0; i < len(key); i++ {
		if key[i] == '/' {
			return key[:i], key[i+1:]
		}
	}
	return "", key
}
