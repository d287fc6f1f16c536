// Package storage is k8s.io/apiserver's storage.Interface over skep's
// JetStream store, so the generic API server's registry and watch cache
// read and write the same keys the rest of skep does.
package storage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/conversion"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/apiserver/pkg/storage"

	"github.com/skep-io/skep/controlplane/store"
)

// Storage is a storage.Interface for one resource over the JetStream store.
// Keys are the generic registry's: <prefix>/<namespace>/<name>, or
// <prefix>/<name> for cluster-scoped resources; the store's revision is the
// resourceVersion.
type Storage struct {
	st          *store.Store
	codec       runtime.Codec
	prefix      string // e.g. "/configmaps"
	resource    string // the store's resource name, e.g. "configmaps"
	namespaced  bool
	newFunc     func() runtime.Object
	newListFunc func() runtime.Object
	versioner   storage.APIObjectVersioner

	mu       sync.Mutex
	watchers map[*storeWatch]struct{}
}

var _ storage.Interface = (*Storage)(nil)

// NewStorage returns the storage of one resource.
func NewStorage(st *store.Store, codec runtime.Codec, prefix string, namespaced bool, newFunc, newListFunc func() runtime.Object) *Storage {
	prefix = "/" + strings.Trim(prefix, "/")
	return &Storage{
		st: st, codec: codec, prefix: prefix, resource: strings.TrimPrefix(prefix, "/"),
		namespaced: namespaced, newFunc: newFunc, newListFunc: newListFunc,
		watchers: map[*storeWatch]struct{}{},
	}
}

func (s *Storage) Versioner() storage.Versioner { return s.versioner }

// parseKey splits a registry key into namespace and name; either may be ""
// for a key that names a whole namespace or the whole resource.
func (s *Storage) parseKey(key string) (ns, name string, err error) {
	rest, ok := strings.CutPrefix(key, s.prefix)
	if !ok {
		return "", "", fmt.Errorf("key %q is not under %q", key, s.prefix)
	}
	parts := strings.Split(strings.Trim(rest, "/"), "/")
	if len(parts) == 1 && parts[0] == "" {
		return "", "", nil
	}
	if !s.namespaced {
		if len(parts) != 1 {
			return "", "", fmt.Errorf("key %q: want %s/<name>", key, s.prefix)
		}
		return "", parts[0], nil
	}
	switch len(parts) {
	case 1:
		return parts[0], "", nil
	case 2:
		return parts[0], parts[1], nil
	}
	return "", "", fmt.Errorf("key %q: want %s/<namespace>/<name>", key, s.prefix)
}

func (s *Storage) objectKey(key string) (store.Key, error) {
	ns, name, err := s.parseKey(key)
	if err != nil {
		return store.Key{}, err
	}
	if name == "" {
		return store.Key{}, fmt.Errorf("key %q names no object", key)
	}
	return store.Key{Resource: s.resource, Namespace: ns, Name: name}, nil
}

// decode fills into from stored bytes and sets its resourceVersion.
func (s *Storage) decode(data []byte, rev uint64, into runtime.Object) error {
	if _, _, err := s.codec.Decode(data, nil, into); err != nil {
		return storage.NewCorruptObjError(string(data), err)
	}
	return s.versioner.UpdateObject(into, rev)
}

func (s *Storage) encode(obj runtime.Object) ([]byte, error) {
	if err := s.versioner.PrepareObjectForStorage(obj); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if err := s.codec.Encode(obj, &buf); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func (s *Storage) Create(ctx context.Context, key string, obj, out runtime.Object, ttl uint64) error {
	k, err := s.objectKey(key)
	if err != nil {
		return err
	}
	if ttl != 0 {
		return storage.NewInternalError(errors.New("ttl is not supported by the JetStream store"))
	}
	if v, err := s.versioner.ObjectResourceVersion(obj); err == nil && v != 0 {
		return storage.ErrResourceVersionSetOnCreate
	}
	data, err := s.encode(obj)
	if err != nil {
		return err
	}
	rev, err := s.st.Create(ctx, k, data)
	if errors.Is(err, store.ErrExists) {
		return storage.NewKeyExistsError(key, 0)
	}
	if err != nil {
		return storage.NewInternalError(err)
	}
	if out == nil {
		return nil
	}
	return s.decode(data, rev, out)
}

// current reads an object, or takes the caller's cached copy when given.
func (s *Storage) current(ctx context.Context, k store.Key, cached runtime.Object, into runtime.Object) (uint64, []byte, error) {
	if cached != nil {
		rev, err := s.versioner.ObjectResourceVersion(cached)
		if err == nil {
			data, err := s.encode(cached.DeepCopyObject())
			if err == nil {
				return rev, data, s.decode(data, rev, into)
			}
		}
	}
	e, err := s.st.Get(ctx, k)
	if err != nil {
		return 0, nil, err
	}
	return e.Revision, e.Value, s.decode(e.Value, e.Revision, into)
}

func (s *Storage) Delete(ctx context.Context, key string, out runtime.Object, pre *storage.Preconditions,
	validate storage.ValidateObjectFunc, cached runtime.Object, opts storage.DeleteOptions) error {
	k, err := s.objectKey(key)
	if err != nil {
		return storage.NewKeyNotFoundError(key, 0) // a key of the wrong shape names nothing stored
	}
	for {
		rev, _, err := s.current(ctx, k, cached, out)
		cached = nil // a retry reads the store
		if errors.Is(err, store.ErrNotFound) {
			return storage.NewKeyNotFoundError(key, 0)
		}
		if err != nil {
			return err
		}
		if pre != nil {
			if err := pre.Check(key, out); err != nil {
				return err
			}
		}
		if err := validate(ctx, out); err != nil {
			return err
		}
		err = s.st.Delete(ctx, k, rev)
		switch {
		case errors.Is(err, store.ErrConflict):
			continue // changed since read: check preconditions again
		case errors.Is(err, store.ErrNotFound):
			return storage.NewKeyNotFoundError(key, 0)
		case err != nil:
			return storage.NewInternalError(err)
		}
		return nil
	}
}

func (s *Storage) Get(ctx context.Context, key string, opts storage.GetOptions, objPtr runtime.Object) error {
	k, err := s.objectKey(key)
	var e store.Entry
	if err == nil {
		e, err = s.st.Get(ctx, k)
	} else {
		err = store.ErrNotFound // a key of the wrong shape names nothing stored
	}
	if errors.Is(err, store.ErrNotFound) {
		if opts.IgnoreNotFound {
			return runtime.SetZeroValue(objPtr)
		}
		return storage.NewKeyNotFoundError(key, 0)
	}
	if err != nil {
		return storage.NewInternalError(err)
	}
	if err := s.checkNotOlder(ctx, opts.ResourceVersion); err != nil {
		return err
	}
	return s.decode(e.Value, e.Revision, objPtr)
}

// checkNotOlder answers "too large resource version" when a client asks for
// a version the store has not reached; the store keeps no history, so every
// read is of the newest state, which is never older than a reached version.
func (s *Storage) checkNotOlder(ctx context.Context, rv string) error {
	want, err := s.versioner.ParseResourceVersion(rv)
	if err != nil || want == 0 {
		return err
	}
	cur, err := s.st.LastRevision(ctx)
	if err != nil {
		return storage.NewInternalError(err)
	}
	if want > cur {
		return storage.NewTooLargeResourceVersionError(want, cur, 1)
	}
	return nil
}

func (s *Storage) GetList(ctx context.Context, key string, opts storage.ListOptions, listObj runtime.Object) error {
	ns, name, err := s.parseKey(key)
	if err != nil {
		return err
	}
	if err := s.checkNotOlder(ctx, opts.ResourceVersion); err != nil {
		return err
	}
	// The store keeps one value per key: it can serve only the newest
	// state, so an exact older version is gone.
	if opts.ResourceVersionMatch == metav1.ResourceVersionMatchExact {
		if want, _ := s.versioner.ParseResourceVersion(opts.ResourceVersion); want != 0 {
			cur, _ := s.st.LastRevision(ctx)
			if want != cur {
				return apierrors.NewResourceExpired(fmt.Sprintf("too old resource version: %d (%d)", want, cur))
			}
		}
	}
	entries, rev, err := s.st.List(ctx, s.resource, ns)
	if err != nil {
		return storage.NewInternalError(err)
	}
	keyPrefix := strings.TrimSuffix(key, "/") + "/"
	fromKey := ""
	if opts.Predicate.Continue != "" {
		from, crv, err := storage.DecodeContinue(opts.Predicate.Continue, keyPrefix)
		if err != nil {
			return err
		}
		fromKey = from
		// A continued list reads the newest state, not the first page's
		// snapshot: report the first page's version as etcd would.
		rev = uint64(crv)
	}
	sort.Slice(entries, func(i, j int) bool { return s.keyOf(entries[i].Key) < s.keyOf(entries[j].Key) })
	var items []runtime.Object
	var last string
	more := false
	for _, e := range entries {
		k := s.keyOf(e.Key)
		if name != "" && e.Key.Name != name || k < fromKey {
			continue
		}
		if opts.Predicate.Limit > 0 && int64(len(items)) >= opts.Predicate.Limit {
			more = true
			break
		}
		obj := s.newFunc()
		if err := s.decode(e.Value, e.Revision, obj); err != nil {
			return err
		}
		last = k
		if ok, err := opts.Predicate.Matches(obj); err != nil || !ok {
			continue
		}
		items = append(items, obj)
	}
	if err := meta.SetList(listObj, items); err != nil {
		return err
	}
	cont := ""
	if more {
		if cont, err = storage.EncodeContinue(last+"\x00", keyPrefix, int64(rev)); err != nil {
			return err
		}
	}
	return s.versioner.UpdateList(listObj, rev, cont, nil)
}

func (s *Storage) keyOf(k store.Key) string {
	if k.Namespace == "" {
		return s.prefix + "/" + k.Name
	}
	return s.prefix + "/" + k.Namespace + "/" + k.Name
}

func (s *Storage) GuaranteedUpdate(ctx context.Context, key string, dest runtime.Object, ignoreNotFound bool,
	pre *storage.Preconditions, tryUpdate storage.UpdateFunc, cached runtime.Object) error {
	k, err := s.objectKey(key)
	if err != nil {
		return err
	}
	if _, err := conversion.EnforcePtr(dest); err != nil {
		return fmt.Errorf("unable to convert output object to pointer: %v", err)
	}
	for {
		cur := s.newFunc()
		rev, old, err := s.current(ctx, k, cached, cur)
		fromCache := cached != nil
		cached = nil
		switch {
		case errors.Is(err, store.ErrNotFound) && !ignoreNotFound:
			return storage.NewKeyNotFoundError(key, 0)
		case errors.Is(err, store.ErrNotFound):
			rev, old = 0, nil // create on update
		case err != nil:
			return err
		}
		if pre != nil {
			if err := pre.Check(key, cur); err != nil {
				if fromCache {
					continue
				}
				return err
			}
		}
		ret, _, err := tryUpdate(cur, storage.ResponseMeta{ResourceVersion: rev})
		if err != nil {
			if fromCache {
				continue // the cached copy may be stale: decide on the stored one
			}
			return err
		}
		data, err := s.encode(ret)
		if err != nil {
			return err
		}
		if old != nil && bytes.Equal(data, old) {
			if fromCache {
				continue
			}
			return s.decode(data, rev, dest)
		}
		var nrev uint64
		if rev == 0 {
			nrev, err = s.st.Create(ctx, k, data)
		} else {
			nrev, err = s.st.Update(ctx, k, data, rev)
		}
		switch {
		case errors.Is(err, store.ErrConflict), errors.Is(err, store.ErrExists):
			continue // someone else wrote first: run tryUpdate on their object
		case errors.Is(err, store.ErrNotFound):
			if !ignoreNotFound {
				return storage.NewKeyNotFoundError(key, 0)
			}
			continue
		case err != nil:
			return storage.NewInternalError(err)
		}
		return s.decode(data, nrev, dest)
	}
}

func (s *Storage) Stats(ctx context.Context) (storage.Stats, error) {
	entries, _, err := s.st.List(ctx, s.resource, "")
	if err != nil {
		return storage.Stats{}, err
	}
	return storage.Stats{ObjectCount: int64(len(entries))}, nil
}

func (s *Storage) ReadinessCheck() error { return s.st.Ping(context.Background()) }

func (s *Storage) GetCurrentResourceVersion(ctx context.Context) (uint64, error) {
	return s.st.LastRevision(ctx)
}

func (s *Storage) EnableResourceSizeEstimation(storage.KeysFunc) error { return nil }

// CompactRevision: the store keeps no history to compact; the watch cache
// in front answers 410 for versions older than its window.
func (s *Storage) CompactRevision() int64 { return 0 }

// RequestWatchProgress asks every watch of this resource to send a bookmark
// at the store's current revision once it has delivered every event up to
// it, so the watch cache knows it is fresh without waiting for a write.
func (s *Storage) RequestWatchProgress(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for w := range s.watchers {
		select {
		case w.progress <- struct{}{}:
		default: // one pending request is enough
		}
	}
	return nil
}

// compile-time check that the watch type is a watch.Interface.
var _ watch.Interface = (*storeWatch)(nil)
