// Package gc is the garbage collector: an object whose owners (by
// ownerReferences, matched by uid) are all gone is deleted, so deleting a
// Deployment deletes its ReplicaSets and, through them, their pods.
// Orphaning is done by whoever deletes the owner: `skep delete
// --cascade=orphan` first removes the ownerReferences from the dependents,
// and the collector only deletes an object in the state it judged it in
// (a resourceVersion precondition), so it never races that.
package gc

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/skep-io/skep/controlplane/api"
	"github.com/skep-io/skep/controlplane/client"
	"github.com/skep-io/skep/controlplane/queue"
)

// Controller collects garbage among the objects of its informers.
type Controller struct {
	c         client.Interface
	informers map[string]*client.Informer // by resource name
	queue     *queue.Queue
	logger    *slog.Logger

	mu         sync.Mutex
	dependents map[types.UID]map[string]bool // owner uid -> queue keys
}

// New returns a collector over the given informers: the kinds that own
// (Deployments, ReplicaSets, ReplicationControllers) and that are owned
// (ReplicaSets, pods). Owners of a kind without an informer are looked up
// through the API.
func New(c client.Interface, informers []*client.Informer, logger *slog.Logger) *Controller {
	gc := &Controller{
		c: c, informers: map[string]*client.Informer{}, queue: queue.New(),
		logger: logger.With("controller", "garbagecollector"), dependents: map[types.UID]map[string]bool{},
	}
	for _, inf := range informers {
		r := inf.Resource()
		gc.informers[r.Name] = inf
		inf.AddHandlers(client.Handlers{
			OnAdd:    func(o api.Object) { gc.observe(r, nil, o) },
			OnUpdate: func(old, o api.Object) { gc.observe(r, old, o) },
			OnDelete: func(o api.Object) { gc.deleted(r, o) },
		})
	}
	return gc
}

func key(r *api.Resource, obj metav1.Object) string {
	return r.Name + "|" + client.Key(obj.GetNamespace(), obj.GetName())
}

func parseKey(k string) (resource, ns, name string) {
	resource, rest, _ := strings.Cut(k, "|")
	ns, name, ok := strings.Cut(rest, "/")
	if !ok {
		return resource, "", ns
	}
	return resource, ns, name
}

// observe indexes an object's owners and queues it for a check.
func (gc *Controller) observe(r *api.Resource, old, obj api.Object) {
	k := key(r, obj)
	gc.mu.Lock()
	if old != nil {
		for _, ref := range old.GetOwnerReferences() {
			delete(gc.dependents[ref.UID], k)
		}
	}
	for _, ref := range obj.GetOwnerReferences() {
		if gc.dependents[ref.UID] == nil {
			gc.dependents[ref.UID] = map[string]bool{}
		}
		gc.dependents[ref.UID][k] = true
	}
	gc.mu.Unlock()
	if len(obj.GetOwnerReferences()) > 0 {
		gc.queue.Add(k)
	}
}

// deleted queues the dependents of a deleted object.
func (gc *Controller) deleted(r *api.Resource, obj api.Object) {
	k := key(r, obj)
	gc.mu.Lock()
	for _, ref := range obj.GetOwnerReferences() {
		delete(gc.dependents[ref.UID], k)
		if len(gc.dependents[ref.UID]) == 0 {
			delete(gc.dependents, ref.UID)
		}
	}
	var deps []string
	for d := range gc.dependents[obj.GetUID()] {
		deps = append(deps, d)
	}
	gc.mu.Unlock()
	for _, d := range deps {
		gc.queue.Add(d)
	}
}

// Run collects until ctx ends.
func (gc *Controller) Run(ctx context.Context, workers int) {
	var all []*client.Informer
	for _, inf := range gc.informers {
		all = append(all, inf)
	}
	if !client.WaitForSync(ctx, all...) {
		return
	}
	queue.Run(ctx, gc.queue, workers, gc.sync, gc.logger)
}

func (gc *Controller) sync(ctx context.Context, k string) error {
	resource, ns, name := parseKey(k)
	inf := gc.informers[resource]
	obj, ok := inf.Get(ns, name)
	if !ok || obj.GetDeletionTimestamp() != nil {
		return nil
	}
	refs := obj.GetOwnerReferences()
	if len(refs) == 0 {
		return nil
	}
	for _, ref := range refs {
		exists, err := gc.ownerExists(ctx, ns, ref)
		if err != nil {
			return err
		}
		if exists {
			return nil
		}
	}
	owner := refs[0]
	gc.logger.Info("deleting object whose owner is gone", "resource", resource, "object", client.KeyOf(obj),
		"owner", owner.Kind+"/"+owner.Name, "ownerUID", owner.UID)
	err := gc.c.Delete(ctx, inf.Resource(), ns, name, client.DeleteOptions{ResourceVersion: obj.GetResourceVersion()})
	if err == nil || apierrors.IsNotFound(err) {
		return nil
	}
	// A conflict means it changed since we looked (orphaned, say): the
	// retry judges the new state.
	return fmt.Errorf("delete %s: %w", k, err)
}

// ownerExists reports whether the owner with the reference's uid exists.
// The cache answers yes; a no is confirmed with the API, because the cache
// may not have seen a just-created owner yet.
func (gc *Controller) ownerExists(ctx context.Context, ns string, ref metav1.OwnerReference) (bool, error) {
	r, err := api.ForKind(ref.APIVersion, ref.Kind)
	if err != nil {
		return true, nil // a kind skep does not serve: never collect on its account
	}
	if !r.Namespaced {
		ns = ""
	}
	if inf, ok := gc.informers[r.Name]; ok {
		if o, ok := inf.Get(ns, ref.Name); ok && o.GetUID() == ref.UID {
			return true, nil
		}
	}
	o, err := gc.c.Get(ctx, r, ns, ref.Name)
	switch {
	case apierrors.IsNotFound(err):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("look up owner %s %s/%s: %w", ref.Kind, ns, ref.Name, err)
	}
	return o.GetUID() == ref.UID, nil
}
