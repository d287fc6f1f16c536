// Package namespace is the namespace controller: it empties the
// namespaces that are terminating and then lets them go, as Kubernetes'
// namespace controller does. A DELETE of a namespace only marks it
// (deletionTimestamp, phase Terminating, the "kubernetes" finalizer in
// spec.finalizers); this controller deletes every namespaced object in it,
// waits for pods on nodes to finish terminating, and then removes the
// finalizer, and the API server removes the namespace with that update.
//
// The controller keeps nothing the store does not: a terminating
// namespace is found again by the next controller that starts (after a
// restart, or on the other server after a failover), which carries on from
// whatever is left.
package namespace

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/skep-io/skep/controlplane/api"
	"github.com/skep-io/skep/controlplane/client"
	"github.com/skep-io/skep/controlplane/queue"
)

// Config tunes the controller; zero values take the defaults in brackets.
type Config struct {
	// BatchSize is how many objects one pass over a namespace deletes
	// before it lets other namespaces have a turn [500]. A namespace with
	// more is requeued at once.
	BatchSize int
	// Parallel is how many deletes of one pass are in flight at once [8].
	Parallel int
	// RecheckPeriod is how soon a namespace that waits only for pods
	// terminating on their nodes is looked at again [2s].
	RecheckPeriod time.Duration
}

func (c *Config) defaults() {
	if c.BatchSize <= 0 {
		c.BatchSize = 500
	}
	if c.Parallel <= 0 {
		c.Parallel = 8
	}
	if c.RecheckPeriod <= 0 {
		c.RecheckPeriod = 2 * time.Second
	}
}

// Controller deletes the content of terminating namespaces.
type Controller struct {
	c          client.Interface
	namespaces *client.Informer
	queue      *queue.Queue
	cfg        Config
	logger     *slog.Logger

	// started remembers which namespaces this controller has logged as
	// started, for the logs alone: one line when a namespace's deletion
	// starts and one when it ends, not one per pass.
	mu      sync.Mutex
	started map[string]bool
}

var namespacesR = api.MustLookup("namespaces")

// New returns a controller that learns of terminating namespaces from the
// namespaces informer.
func New(c client.Interface, namespaces *client.Informer, cfg Config, logger *slog.Logger) *Controller {
	cfg.defaults()
	nc := &Controller{
		c: c, namespaces: namespaces, queue: queue.New(), cfg: cfg,
		logger: logger.With("controller", "namespace"), started: map[string]bool{},
	}
	namespaces.AddHandlers(client.Handlers{
		OnAdd:    nc.observe,
		OnUpdate: func(_, o api.Object) { nc.observe(o) },
	})
	return nc
}

func (nc *Controller) observe(o api.Object) {
	if o.GetDeletionTimestamp() != nil {
		nc.queue.Add(o.GetName())
	}
}

// Run works until ctx ends.
func (nc *Controller) Run(ctx context.Context, workers int) {
	if !client.WaitForSync(ctx, nc.namespaces) {
		return
	}
	queue.Run(ctx, nc.queue, workers, nc.sync, nc.logger)
}

// sync makes one pass over a terminating namespace: it deletes up to a
// batch of what the namespace holds, and removes the finalizer once
// nothing is left.
func (nc *Controller) sync(ctx context.Context, name string) error {
	// The API's copy, not the cache's: the finalize is a compare-and-set on
	// the latest resourceVersion.
	o, err := nc.c.Get(ctx, namespacesR, "", name)
	if apierrors.IsNotFound(err) {
		nc.forget(name)
		return nil
	}
	if err != nil {
		return fmt.Errorf("get namespace %s: %w", name, err)
	}
	ns := o.(*corev1.Namespace)
	if ns.DeletionTimestamp == nil || !slices.Contains(ns.Spec.Finalizers, corev1.FinalizerKubernetes) {
		return nil
	}
	nc.logStart(ns)
	deleted, remaining, err := nc.deleteContent(ctx, name)
	if err != nil {
		return err
	}
	if remaining > 0 {
		nc.logger.Debug("namespace content remaining", "namespace", name, "deleted", deleted, "remaining", remaining)
		if deleted > 0 {
			nc.queue.Add(name) // more to delete: again after the other keys queued
		} else {
			nc.queue.AddAfter(name, nc.cfg.RecheckPeriod) // only pods terminating on their nodes
		}
		return nil
	}
	return nc.finalize(ctx, ns)
}

func (nc *Controller) logStart(ns *corev1.Namespace) {
	nc.mu.Lock()
	defer nc.mu.Unlock()
	if !nc.started[ns.Name] {
		nc.started[ns.Name] = true
		nc.logger.Info("deleting namespace content", "namespace", ns.Name, "since", ns.DeletionTimestamp.Time)
	}
}

func (nc *Controller) forget(name string) {
	nc.mu.Lock()
	defer nc.mu.Unlock()
	delete(nc.started, name)
}

// contentResources are the namespaced resources, pods last: the objects
// that own pods go first, so that their controllers are not left trying
// to replace pods deleted under them (creates in a terminating namespace
// are refused anyway).
func contentResources() []*api.Resource {
	var rest, pods []*api.Resource
	for _, r := range api.All() {
		switch {
		case !r.Namespaced:
		case r.Kind == "Pod":
			pods = append(pods, r)
		default:
			rest = append(rest, r)
		}
	}
	return append(rest, pods...)
}

// deleteContent deletes up to BatchSize objects of the namespace and
// counts what it found: deleted is how many deletes it sent, remaining
// how many objects were there before them (pods bound to nodes stay until
// their node has stopped them, as with any delete).
func (nc *Controller) deleteContent(ctx context.Context, ns string) (deleted, remaining int, err error) {
	budget := nc.cfg.BatchSize
	for _, r := range contentResources() {
		objs, _, err := nc.c.List(ctx, r, ns, client.ListOptions{})
		if err != nil {
			return deleted, remaining, fmt.Errorf("list %s in namespace %s: %w", r.Name, ns, err)
		}
		remaining += len(objs)
		var batch []string
		for _, o := range objs {
			if budget == 0 {
				break
			}
			if o.GetDeletionTimestamp() == nil {
				batch = append(batch, o.GetName())
				budget--
			}
		}
		if err := nc.deleteAll(ctx, r, ns, batch); err != nil {
			return deleted, remaining, err
		}
		deleted += len(batch)
	}
	return deleted, remaining, nil
}

// deleteAll deletes the named objects, a few at a time. One already gone
// is no error.
func (nc *Controller) deleteAll(ctx context.Context, r *api.Resource, ns string, names []string) error {
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(nc.cfg.Parallel)
	for _, name := range names {
		g.Go(func() error {
			err := nc.c.Delete(ctx, r, ns, name, client.DeleteOptions{})
			if err != nil && !apierrors.IsNotFound(err) {
				return fmt.Errorf("delete %s %s/%s: %w", r.Kind, ns, name, err)
			}
			return nil
		})
	}
	return g.Wait()
}

// finalize removes the "kubernetes" finalizer; the API server removes the
// namespace with that update when it was the last finalizer, and refuses
// it with a 409 if something was created in the namespace meanwhile (the
// retry deletes it).
func (nc *Controller) finalize(ctx context.Context, ns *corev1.Namespace) error {
	ns = ns.DeepCopy()
	ns.Spec.Finalizers = slices.DeleteFunc(ns.Spec.Finalizers, func(f corev1.FinalizerName) bool { return f == corev1.FinalizerKubernetes })
	if _, err := nc.c.Update(ctx, namespacesR, ns); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("finalize namespace %s: %w", ns.Name, err)
	}
	nc.forget(ns.Name)
	nc.logger.Info("namespace finalized: its content is deleted", "namespace", ns.Name, "remainingFinalizers", len(ns.Spec.Finalizers))
	return nil
}
