package client

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skep-io/skep/controlplane/api"
)

// Handlers are told about changes to an Informer's cache. They run one at
// a time, in the order the changes happened, on the informer's goroutine,
// after the cache holds the change; they must not block for long (a
// controller puts a key on its queue and returns).
type Handlers struct {
	OnAdd    func(obj api.Object)
	OnUpdate func(old, obj api.Object)
	// OnDelete gets the last state the cache held.
	OnDelete func(last api.Object)
}

// InformerOptions narrow what an Informer follows and how.
type InformerOptions struct {
	Namespace     string // "" for all namespaces
	LabelSelector string
	FieldSelector string
	// Resync is how often the whole collection is listed again, to catch
	// deletions a broken watch may have missed. Default 5 minutes.
	Resync time.Duration
	Logger *slog.Logger
}

// Informer keeps a cache of one resource current: it lists, then watches
// from the list's resourceVersion, resumes the watch from the last
// resourceVersion it saw when the stream breaks, and lists again
// periodically and when the server refuses to resume (410 Gone).
type Informer struct {
	c      Interface
	r      *api.Resource
	opts   InformerOptions
	logger *slog.Logger

	handlers []Handlers // fixed once Run starts

	mu     sync.RWMutex
	items  map[string]api.Object // by Key(namespace, name)
	synced atomic.Bool
}

// NewInformer returns an informer for resource r; call AddHandlers, then Run.
func NewInformer(c Interface, r *api.Resource, opts InformerOptions) *Informer {
	if opts.Resync == 0 {
		opts.Resync = 5 * time.Minute
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Informer{
		c:      c,
		r:      r,
		opts:   opts,
		logger: logger.With("informer", r.Name),
		items:  map[string]api.Object{},
	}
}

// Key is the cache key of an object: "namespace/name", or "name" for
// objects that have no namespace.
func Key(namespace, name string) string {
	if namespace == "" {
		return name
	}
	return namespace + "/" + name
}

// KeyOf is Key of an object's namespace and name.
func KeyOf(obj api.Object) string { return Key(obj.GetNamespace(), obj.GetName()) }

// Resource is the resource the informer follows.
func (i *Informer) Resource() *api.Resource { return i.r }

// AddHandlers registers handlers; it must be called before Run.
func (i *Informer) AddHandlers(h Handlers) { i.handlers = append(i.handlers, h) }

// HasSynced says whether the first list has reached the cache.
func (i *Informer) HasSynced() bool { return i.synced.Load() }

// Get returns the cached object. Callers must not modify it: copy it
// (DeepCopyObject) before changing anything.
func (i *Informer) Get(namespace, name string) (api.Object, bool) {
	i.mu.RLock()
	defer i.mu.RUnlock()
	obj, ok := i.items[Key(namespace, name)]
	return obj, ok
}

// List returns every cached object, sorted by key. The objects are shared:
// copy before changing.
func (i *Informer) List() []api.Object {
	i.mu.RLock()
	keys := make([]string, 0, len(i.items))
	for k := range i.items {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]api.Object, len(keys))
	for n, k := range keys {
		out[n] = i.items[k]
	}
	i.mu.RUnlock()
	return out
}

// ListNamespace returns the cached objects of one namespace.
func (i *Informer) ListNamespace(namespace string) []api.Object {
	var out []api.Object
	for _, obj := range i.List() {
		if obj.GetNamespace() == namespace {
			out = append(out, obj)
		}
	}
	return out
}

// WaitForSync polls until the informers have synced or ctx ends; it
// reports whether they synced.
func WaitForSync(ctx context.Context, informers ...*Informer) bool {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		all := true
		for _, inf := range informers {
			all = all && inf.HasSynced()
		}
		if all {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		}
	}
}

const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 10 * time.Second
)

// Run lists and watches until ctx ends.
func (i *Informer) Run(ctx context.Context) {
	backoff := minBackoff
	wait := func() bool {
		t := time.NewTimer(backoff)
		defer t.Stop()
		backoff = min(2*backoff, maxBackoff)
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return true
		}
	}
	for ctx.Err() == nil {
		rv, err := i.relist(ctx)
		if err != nil {
			if ctx.Err() == nil {
				i.logger.Warn("list failed", "err", err, "retry", backoff)
			}
			if !wait() {
				return
			}
			continue
		}
		backoff = minBackoff
		resync := time.Now().Add(i.opts.Resync)
		// Watch, resuming from the last revision seen, until the server
		// refuses the revision or it is time for a full list.
		for ctx.Err() == nil && time.Now().Before(resync) {
			start := time.Now()
			next, gone, err := i.watch(ctx, rv, resync)
			if gone {
				i.logger.Info("watch revision too old, listing again", "resourceVersion", rv)
				break
			}
			if err != nil && ctx.Err() == nil {
				i.logger.Warn("watch failed", "err", err, "retry", backoff)
				if !wait() {
					return
				}
				continue
			}
			// A stream that ends at once without news is a failing
			// server, not a quiet one: back off before asking again.
			if next == rv && time.Since(start) < time.Second && !wait() {
				return
			}
			if next != rv {
				backoff = minBackoff
			}
			rv = next
		}
	}
}

func (i *Informer) listOptions(rv string) ListOptions {
	return ListOptions{LabelSelector: i.opts.LabelSelector, FieldSelector: i.opts.FieldSelector, ResourceVersion: rv}
}

// relist replaces the cache by a fresh list and tells the handlers what
// differs from what they were last told.
func (i *Informer) relist(ctx context.Context) (string, error) {
	objs, rv, err := i.c.List(ctx, i.r, i.opts.Namespace, i.listOptions(""))
	if err != nil {
		return "", err
	}
	fresh := make(map[string]api.Object, len(objs))
	for _, obj := range objs {
		fresh[KeyOf(obj)] = obj
	}
	i.mu.Lock()
	old := i.items
	i.items = fresh
	i.mu.Unlock()
	for k, obj := range fresh {
		if prev, ok := old[k]; !ok {
			i.notifyAdd(obj)
		} else if prev.GetResourceVersion() != obj.GetResourceVersion() {
			i.notifyUpdate(prev, obj)
		}
	}
	for k, prev := range old {
		if _, ok := fresh[k]; !ok {
			i.notifyDelete(prev)
		}
	}
	i.synced.Store(true)
	return rv, nil
}

// watch applies one watch stream to the cache and returns the last
// resourceVersion seen; gone reports the server refusing rv.
func (i *Informer) watch(ctx context.Context, rv string, until time.Time) (last string, gone bool, err error) {
	wctx, cancel := context.WithDeadline(ctx, until)
	defer cancel()
	events, err := i.c.Watch(wctx, i.r, i.opts.Namespace, i.listOptions(rv))
	if err != nil {
		if apierrors.IsResourceExpired(err) || apierrors.IsGone(err) {
			return rv, true, nil
		}
		return rv, false, err
	}
	for ev := range events {
		if ev.Type == Error {
			st := ev.Status
			if st == nil {
				st = &metav1.Status{Message: "an error without a Status"}
			}
			if st.Code == http.StatusGone || st.Reason == metav1.StatusReasonExpired {
				return rv, true, nil
			}
			return rv, false, fmt.Errorf("watch %s: %s", i.r.Name, st.Message)
		}
		if ev.Object == nil {
			continue
		}
		if v := ev.Object.GetResourceVersion(); v != "" {
			rv = v
		}
		switch ev.Type {
		case Added, Modified:
			i.apply(ev.Object)
		case Deleted:
			i.remove(ev.Object)
		}
	}
	return rv, false, nil
}

func (i *Informer) apply(obj api.Object) {
	k := KeyOf(obj)
	i.mu.Lock()
	prev, ok := i.items[k]
	i.items[k] = obj
	i.mu.Unlock()
	if ok {
		i.notifyUpdate(prev, obj)
	} else {
		i.notifyAdd(obj)
	}
}

func (i *Informer) remove(obj api.Object) {
	k := KeyOf(obj)
	i.mu.Lock()
	prev, ok := i.items[k]
	delete(i.items, k)
	i.mu.Unlock()
	if ok { // a deletion of something outside the filter is not ours
		i.notifyDelete(prev)
	}
}

func (i *Informer) notifyAdd(obj api.Object) {
	for _, h := range i.handlers {
		if h.OnAdd != nil {
			h.OnAdd(obj)
		}
	}
}

func (i *Informer) notifyUpdate(old, obj api.Object) {
	for _, h := range i.handlers {
		if h.OnUpdate != nil {
			h.OnUpdate(old, obj)
		}
	}
}

func (i *Informer) notifyDelete(last api.Object) {
	for _, h := range i.handlers {
		if h.OnDelete != nil {
			h.OnDelete(last)
		}
	}
}
