package storage

import (
	"context"
	"log/slog"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/apiserver/pkg/storage"

	"github.com/skep-io/skep/controlplane/store"
)

// storeWatch turns the store's change stream into watch events.
type storeWatch struct {
	s        *Storage
	cancel   context.CancelFunc
	result   chan watch.Event
	progress chan struct{}
}

func (w *storeWatch) Stop()                          { w.cancel() }
func (w *storeWatch) ResultChan() <-chan watch.Event { return w.result }

// Watch streams changes after opts.ResourceVersion. Like the etcd3 store it
// first sends the current objects as ADDED when asked (resourceVersion 0
// without sendInitialEvents, or sendInitialEvents=true), ending them with
// the initial-events-end bookmark when bookmarks are allowed.
func (s *Storage) Watch(ctx context.Context, key string, opts storage.ListOptions) (watch.Interface, error) {
	ns, name, err := s.parseKey(key)
	if err != nil {
		return nil, err
	}
	rev, err := s.versioner.ParseResourceVersion(opts.ResourceVersion)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	w := &storeWatch{s: s, cancel: cancel, result: make(chan watch.Event, 100), progress: make(chan struct{}, 1)}
	initial := opts.SendInitialEvents == nil && rev == 0 || opts.SendInitialEvents != nil && *opts.SendInitialEvents
	var backlog []store.Entry
	switch {
	case initial:
		if backlog, rev, err = s.st.List(ctx, s.resource, ns); err != nil {
			cancel()
			return nil, storage.NewInternalError(err)
		}
	case rev == 0:
		if rev, err = s.st.LastRevision(ctx); err != nil {
			cancel()
			return nil, storage.NewInternalError(err)
		}
	}
	events, err := s.st.Watch(ctx, s.resource, ns, rev)
	if err != nil {
		cancel()
		return nil, storage.NewInternalError(err)
	}
	if opts.ProgressNotify {
		s.mu.Lock()
		s.watchers[w] = struct{}{}
		s.mu.Unlock()
	}
	endBookmark := opts.SendInitialEvents != nil && *opts.SendInitialEvents && opts.Predicate.AllowWatchBookmarks
	go w.run(ctx, ns, name, opts.Predicate, rev, backlog, endBookmark, events)
	return w, nil
}

func (w *storeWatch) run(ctx context.Context, ns, name string, pred storage.SelectionPredicate, rev uint64,
	backlog []store.Entry, endBookmark bool, events <-chan store.Event) {
	s := w.s
	defer func() {
		s.mu.Lock()
		delete(s.watchers, w)
		s.mu.Unlock()
		close(w.result)
	}()
	send := func(ev watch.Event) bool {
		select {
		case w.result <- ev:
			return true
		case <-ctx.Done():
			return false
		}
	}
	for _, e := range backlog {
		if name != "" && e.Key.Name != name {
			continue
		}
		obj := s.newFunc()
		if err := s.decode(e.Value, e.Revision, obj); err != nil {
			send(watch.Event{Type: watch.Error, Object: &metav1.Status{Status: metav1.StatusFailure, Message: err.Error()}})
			return
		}
		if ok, _ := pred.Matches(obj); ok && !send(watch.Event{Type: watch.Added, Object: obj}) {
			return
		}
	}
	if endBookmark {
		bm := s.bookmark(rev)
		if a, err := meta.Accessor(bm); err == nil {
			a.SetAnnotations(map[string]string{metav1.InitialEventsAnnotationKey: "true"})
		}
		if !send(watch.Event{Type: watch.Bookmark, Object: bm}) {
			return
		}
	}
	delivered := rev
	var need, target uint64 // a pending progress request
	pending := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.progress:
			r, err1 := s.st.LastRevision(ctx)
			l, err2 := s.st.LastRevisionOf(ctx, s.resource, ns)
			if err1 != nil || err2 != nil {
				slog.Debug("watch progress", "err1", err1, "err2", err2)
				continue
			}
			need, target, pending = l, max(r, l), true
		case ev, ok := <-events:
			if !ok {
				return // the caller re-establishes the watch from its last version
			}
			delivered = ev.Entry.Revision
			if name == "" || ev.Entry.Key.Name == name {
				out, ok := w.event(ev, pred)
				if ok && !send(out) {
					return
				}
			}
		}
		if pending && delivered >= need {
			pending = false
			if !send(watch.Event{Type: watch.Bookmark, Object: s.bookmark(max(target, delivered))}) {
				return
			}
		}
	}
}

// event converts a store event. The store keeps no value for a deleted key,
// so a DELETED event carries only the object's name; the watch cache in
// front fills in the last state it holds.
func (w *storeWatch) event(ev store.Event, pred storage.SelectionPredicate) (watch.Event, bool) {
	s := w.s
	obj := s.newFunc()
	if ev.Type == store.Deleted {
		a, err := meta.Accessor(obj)
		if err != nil {
			return watch.Event{}, false
		}
		a.SetName(ev.Entry.Key.Name)
		a.SetNamespace(ev.Entry.Key.Namespace)
		_ = s.versioner.UpdateObject(obj, ev.Entry.Revision)
		return watch.Event{Type: watch.Deleted, Object: obj}, true
	}
	if err := s.decode(ev.Entry.Value, ev.Entry.Revision, obj); err != nil {
		return watch.Event{Type: watch.Error, Object: &metav1.Status{Status: metav1.StatusFailure, Message: err.Error()}}, true
	}
	if ok, _ := pred.Matches(obj); !ok {
		return watch.Event{}, false
	}
	return watch.Event{Type: watch.Modified, Object: obj}, true
}

func (s *Storage) bookmark(rev uint64) runtime.Object {
	obj := s.newFunc()
	_ = s.versioner.UpdateObject(obj, rev)
	return obj
}
