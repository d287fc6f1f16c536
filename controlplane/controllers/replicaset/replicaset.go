// Package replicaset keeps ReplicaSets and ReplicationControllers at their
// replica count: it creates pods from the template, owned through an
// ownerReference with controller=true, adopts matching orphans, deletes
// the least valuable pods first on scale-down, and reports status.
package replicaset

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	utilrand "k8s.io/apimachinery/pkg/util/rand"

	"github.com/skep-io/skep/controlplane/api"
	"github.com/skep-io/skep/controlplane/api/conditions"
	"github.com/skep-io/skep/controlplane/client"
	"github.com/skep-io/skep/controlplane/client/events"
	"github.com/skep-io/skep/controlplane/controllers/gc"
	"github.com/skep-io/skep/controlplane/controllers/podstate"
	"github.com/skep-io/skep/controlplane/queue"
)

var podsResource = api.MustLookup("pods")

// burst caps the pods one sync creates or deletes.
const burst = 500

// Controller reconciles one kind: ReplicaSets or ReplicationControllers.
type Controller struct {
	c      client.Interface
	kind   kind
	owners *client.Informer
	pods   *client.Informer
	queue  *queue.Queue
	logger *slog.Logger
	exp    *expectations
	now    func() time.Time
	events *events.Recorder
}

// NewReplicaSets returns the ReplicaSet controller; it registers handlers
// on the informers, which the caller runs. rec records SuccessfulCreate,
// SuccessfulDelete and FailedCreate on the owners (nil records none).
func NewReplicaSets(c client.Interface, rsInformer, pods *client.Informer, rec *events.Recorder, logger *slog.Logger) *Controller {
	return newController(c, replicaSets, rsInformer, pods, rec, logger)
}

// NewReplicationControllers returns the ReplicationController controller.
func NewReplicationControllers(c client.Interface, rcs, pods *client.Informer, rec *events.Recorder, logger *slog.Logger) *Controller {
	return newController(c, replicationControllers, rcs, pods, rec, logger)
}

func newController(c client.Interface, k kind, owners, pods *client.Informer, rec *events.Recorder, logger *slog.Logger) *Controller {
	rc := &Controller{
		c: c, kind: k, owners: owners, pods: pods, events: rec,
		queue:  queue.New(),
		logger: logger.With("controller", k.resource.Name),
		exp:    newExpectations(),
		now:    time.Now,
	}
	enqueue := func(obj api.Object) { rc.queue.Add(client.KeyOf(obj)) }
	owners.AddHandlers(client.Handlers{
		OnAdd:    enqueue,
		OnUpdate: func(_, obj api.Object) { enqueue(obj) },
		OnDelete: enqueue,
	})
	pods.AddHandlers(client.Handlers{
		OnAdd:    func(obj api.Object) { rc.podChanged(nil, obj.(*corev1.Pod)) },
		OnUpdate: func(old, obj api.Object) { rc.podChanged(old.(*corev1.Pod), obj.(*corev1.Pod)) },
		OnDelete: func(obj api.Object) { rc.podChanged(nil, obj.(*corev1.Pod)) },
	})
	return rc
}

// Run reconciles until ctx ends.
func (rc *Controller) Run(ctx context.Context, workers int) {
	if !client.WaitForSync(ctx, rc.owners, rc.pods) {
		return
	}
	queue.Run(ctx, rc.queue, workers, rc.sync, rc.logger)
}

func (rc *Controller) ownsRef(ref *metav1.OwnerReference) bool {
	return ref != nil && ref.Kind == rc.kind.resource.Kind && ref.APIVersion == rc.kind.resource.APIVersion()
}

// podChanged queues the owners a pod change concerns: its controller, or
// for an orphan every owner whose selector matches (to adopt it).
func (rc *Controller) podChanged(old, pod *corev1.Pod) {
	for _, p := range []*corev1.Pod{old, pod} {
		if p == nil {
			continue
		}
		if ref := podstate.ControllerOf(p); ref != nil {
			if rc.ownsRef(ref) {
				rc.queue.Add(client.Key(p.Namespace, ref.Name))
			}
			continue
		}
		if p.DeletionTimestamp != nil {
			continue
		}
		for _, o := range rc.owners.ListNamespace(p.Namespace) {
			if sel, _, _, _, err := rc.kind.spec(o); err == nil && !sel.Empty() && sel.Matches(labels.Set(p.Labels)) {
				rc.queue.Add(client.KeyOf(o))
			}
		}
	}
}

func (rc *Controller) sync(ctx context.Context, key string) error {
	ns, name := splitKey(key)
	obj, ok := rc.owners.Get(ns, name)
	if !ok {
		rc.exp.forget(key)
		return nil
	}
	if obj.GetDeletionTimestamp() != nil || gc.Orphaning(obj) {
		return nil // being deleted: its pods are not its business any more
	}
	sel, replicas, minReady, tmpl, err := rc.kind.spec(obj)
	if err != nil {
		return fmt.Errorf("selector of %s: %w", key, err)
	}
	owned, err := rc.claimPods(ctx, obj, sel)
	if err != nil {
		return err
	}
	var active []*corev1.Pod
	for _, p := range owned {
		if podstate.Active(p) {
			active = append(active, p)
		}
	}
	// Pods created or deleted by an earlier sync whose watch events have
	// not arrived yet still count as done.
	pendingCreates, pendingDeletes := rc.exp.pending(key, func(name string) (seen, gone bool) {
		o, ok := rc.pods.Get(ns, name)
		if !ok {
			return false, true
		}
		return true, !podstate.Active(o.(*corev1.Pod))
	}, rc.now())
	var candidates []*corev1.Pod
	for _, p := range active {
		if !pendingDeletes[p.Name] {
			candidates = append(candidates, p)
		}
	}
	diff := len(candidates) + len(pendingCreates) - int(replicas)
	var errs []error
	switch {
	case diff < 0:
		errs = append(errs, rc.createPods(ctx, obj, tmpl, min(-diff, burst)))
	case diff > 0:
		errs = append(errs, rc.deletePods(ctx, obj, Victims(candidates, min(diff, burst))))
	}
	errs = append(errs, rc.updateStatus(ctx, obj, active, tmpl, minReady))
	return errors.Join(errs...)
}

// claimPods returns the pods the owner controls, adopting orphans that
// match its selector and releasing its pods that no longer match.
func (rc *Controller) claimPods(ctx context.Context, owner api.Object, sel labels.Selector) ([]*corev1.Pod, error) {
	var owned []*corev1.Pod
	var errs []error
	var mayAdopt *bool // asked of the API once, at the first orphan
	for _, o := range rc.pods.ListNamespace(owner.GetNamespace()) {
		p := o.(*corev1.Pod)
		ref := podstate.ControllerOf(p)
		matches := sel.Matches(labels.Set(p.Labels))
		switch {
		case ref != nil && ref.UID == owner.GetUID():
			if matches {
				owned = append(owned, p)
				continue
			}
			if err := rc.setOwner(ctx, p, nil); err != nil {
				errs = append(errs, err)
			}
		case ref == nil && matches && p.DeletionTimestamp == nil:
			if mayAdopt == nil {
				ok, err := gc.Recheck(ctx, rc.c, rc.kind.resource, owner)
				if err != nil {
					return nil, err
				}
				mayAdopt = &ok
			}
			if !*mayAdopt {
				continue
			}
			if err := rc.setOwner(ctx, p, owner); err != nil {
				errs = append(errs, err)
				continue
			}
			owned = append(owned, p)
		}
	}
	return owned, errors.Join(errs...)
}

// setOwner makes owner the pod's controller, or with nil removes the
// controller reference.
func (rc *Controller) setOwner(ctx context.Context, p *corev1.Pod, owner api.Object) error {
	cp := p.DeepCopy()
	var refs []metav1.OwnerReference
	for _, r := range cp.OwnerReferences {
		if r.Controller == nil || !*r.Controller {
			refs = append(refs, r)
		}
	}
	if owner != nil {
		refs = append(refs, rc.ownerRef(owner))
	}
	cp.OwnerReferences = refs
	if _, err := rc.c.Update(ctx, podsResource, cp); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("set owner of pod %s: %w", client.KeyOf(p), err)
	}
	what := "released"
	if owner != nil {
		what = "adopted"
	}
	rc.logger.Info("pod "+what, "owner", client.KeyOf(owner), "pod", client.KeyOf(p))
	return nil
}

func (rc *Controller) ownerRef(owner api.Object) metav1.OwnerReference {
	yes := true
	return metav1.OwnerReference{
		APIVersion: rc.kind.resource.APIVersion(), Kind: rc.kind.resource.Kind,
		Name: owner.GetName(), UID: owner.GetUID(), Controller: &yes, BlockOwnerDeletion: &yes,
	}
}

// PodName is the name of a new pod of owner: its name, a dash and five
// random characters, as Kubernetes' generateName gives.
func PodName(owner string) string {
	const maxBase = 253 - 6
	if len(owner) > maxBase {
		owner = owner[:maxBase]
	}
	return owner + "-" + utilrand.String(5)
}

// createPods creates n pods from the template in batches that double
// while they succeed, so a template the API rejects fails once, not n
// times.
func (rc *Controller) createPods(ctx context.Context, owner api.Object, tmpl *corev1.PodTemplateSpec, n int) error {
	key := client.KeyOf(owner)
	for batch, done := 1, 0; done < n; batch *= 2 {
		size := min(batch, n-done)
		var wg sync.WaitGroup
		errs := make([]error, size)
		for i := range size {
			wg.Go(func() { errs[i] = rc.createPod(ctx, key, owner, tmpl) })
		}
		wg.Wait()
		done += size
		if err := errors.Join(errs...); err != nil {
			return err
		}
	}
	rc.logger.Info("created pods", "owner", key, "count", n)
	return nil
}

func (rc *Controller) createPod(ctx context.Context, key string, owner api.Object, tmpl *corev1.PodTemplateSpec) error {
	for attempt := 0; ; attempt++ {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{
				Namespace:       owner.GetNamespace(),
				Name:            PodName(owner.GetName()),
				Labels:          copyMap(tmpl.Labels),
				Annotations:     copyMap(tmpl.Annotations),
				OwnerReferences: []metav1.OwnerReference{rc.ownerRef(owner)},
			},
			Spec: *tmpl.Spec.DeepCopy(),
		}
		rc.exp.expectCreate(key, pod.Name, rc.now())
		_, err := rc.c.Create(ctx, podsResource, pod)
		if err == nil {
			rc.events.Eventf(owner, corev1.EventTypeNormal, "SuccessfulCreate", "Created pod: %s", pod.Name)
			return nil
		}
		rc.exp.forgetName(key, pod.Name)
		if apierrors.IsAlreadyExists(err) && attempt < 3 {
			continue // a name taken by chance: draw another
		}
		if ctx.Err() == nil {
			rc.events.Eventf(owner, corev1.EventTypeWarning, "FailedCreate", "Error creating: %v", err)
		}
		return fmt.Errorf("create pod for %s: %w", key, err)
	}
}

func (rc *Controller) deletePods(ctx context.Context, owner api.Object, victims []*corev1.Pod) error {
	key := client.KeyOf(owner)
	var wg sync.WaitGroup
	errs := make([]error, len(victims))
	for i, p := range victims {
		rc.exp.expectDelete(key, p.Name, rc.now())
		wg.Go(func() {
			err := rc.c.Delete(ctx, podsResource, p.Namespace, p.Name, client.DeleteOptions{})
			switch {
			case err == nil:
				rc.events.Eventf(owner, corev1.EventTypeNormal, "SuccessfulDelete", "Deleted pod: %s", p.Name)
			case !apierrors.IsNotFound(err):
				rc.exp.forgetName(key, p.Name)
				errs[i] = fmt.Errorf("delete pod %s: %w", client.KeyOf(p), err)
				if ctx.Err() == nil {
					rc.events.Eventf(owner, corev1.EventTypeWarning, "FailedDelete", "Error deleting: %v", err)
				}
			}
		})
	}
	wg.Wait()
	if len(victims) > 0 {
		rc.logger.Info("deleted pods", "owner", key, "count", len(victims))
	}
	return errors.Join(errs...)
}

// Victims picks the n pods to delete on scale-down, least valuable first:
// not yet scheduled, then pending, then not ready, then the youngest.
func Victims(pods []*corev1.Pod, n int) []*corev1.Pod {
	sorted := append([]*corev1.Pod(nil), pods...)
	rank := func(p *corev1.Pod) [3]int {
		var r [3]int
		if p.Spec.NodeName != "" {
			r[0] = 1
		}
		if p.Status.Phase != corev1.PodPending {
			r[1] = 1
		}
		if conditions.PodReady(p) {
			r[2] = 1
		}
		return r
	}
	sort.SliceStable(sorted, func(i, j int) bool {
		ri, rj := rank(sorted[i]), rank(sorted[j])
		if ri != rj {
			for k := range ri {
				if ri[k] != rj[k] {
					return ri[k] < rj[k]
				}
			}
		}
		ti, tj := sorted[i].CreationTimestamp, sorted[j].CreationTimestamp
		if !ti.Equal(&tj) {
			return tj.Before(&ti) // younger first
		}
		return sorted[i].Name > sorted[j].Name
	})
	return sorted[:min(n, len(sorted))]
}

func (rc *Controller) updateStatus(ctx context.Context, owner api.Object, active []*corev1.Pod, tmpl *corev1.PodTemplateSpec, minReady int32) error {
	now := rc.now()
	st := Status{Replicas: int32(len(active)), ObservedGeneration: owner.GetGeneration()}
	tmplLabels := labels.SelectorFromSet(tmpl.Labels)
	var soonest time.Duration
	for _, p := range active {
		if tmplLabels.Matches(labels.Set(p.Labels)) {
			st.FullyLabeledReplicas++
		}
		if conditions.PodReady(p) {
			st.ReadyReplicas++
		}
		if podstate.Available(p, minReady, now) {
			st.AvailableReplicas++
		} else if d := podstate.AvailableIn(p, minReady, now); d > 0 && (soonest == 0 || d < soonest) {
			soonest = d
		}
	}
	if soonest > 0 {
		rc.queue.AddAfter(client.KeyOf(owner), soonest+100*time.Millisecond)
	}
	if apiequality.Semantic.DeepEqual(st, rc.kind.status(owner)) {
		return nil
	}
	if _, err := rc.c.UpdateStatus(ctx, rc.kind.resource, rc.kind.withStatus(owner, st)); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("update status of %s: %w", client.KeyOf(owner), err)
	}
	return nil
}

func copyMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func splitKey(key string) (string, string) {
	for i := 0; i < len(key); i++ {
		if key[i] == '/' {
			return key[:i], key[i+1:]
		}
	}
	return "", key
}
