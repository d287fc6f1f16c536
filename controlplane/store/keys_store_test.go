package store_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/skep-io/skep/controlplane/store"
	"github.com/skep-io/skep/controlplane/store/storetest"
)

// Names NATS refused ("nats: invalid key"), took as wildcards, or stored
// under another name's key before keys were encoded.
var attackNames = []string{"*", ">", "%00", "a=b", "a.b", "a b", "ünï", "_", "a_b", "A", "\x00"}

func TestAttackNamesAreDistinctObjects(t *testing.T) {
	st := storetest.Open(t)
	ctx := t.Context()
	for _, name := range attackNames {
		if _, err := st.Create(ctx, store.Key{Resource: "configmaps", Namespace: "default", Name: name}, []byte(name)); err != nil {
			t.Fatalf("create %q: %v", name, err)
		}
	}
	for _, name := range attackNames {
		e, err := st.Get(ctx, store.Key{Resource: "configmaps", Namespace: "default", Name: name})
		if err != nil || string(e.Value) != name || e.Key.Name != name {
			t.Errorf("get %q: got key %q value %q, %v", name, e.Key.Name, e.Value, err)
		}
	}
	list, _, err := st.List(ctx, "configmaps", "default")
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != len(attackNames) {
		t.Fatalf("list: %d objects, want %d", len(list), len(attackNames))
	}
	for _, e := range list {
		if e.Key.Name != string(e.Value) || e.Key.Namespace != "default" {
			t.Errorf("list: key %+v holds the value of %q", e.Key, e.Value)
		}
	}
}

func TestWildcardNamespaceListsOnlyItself(t *testing.T) {
	st := storetest.Open(t)
	ctx := t.Context()
	for _, ns := range []string{"a", "b", "*", ">", "_", ""} {
		if _, err := st.Create(ctx, store.Key{Resource: "pods", Namespace: ns, Name: "p"}, []byte(ns)); err != nil {
			t.Fatalf("create in %q: %v", ns, err)
		}
	}
	for _, ns := range []string{"*", ">", "_"} {
		list, _, err := st.List(ctx, "pods", ns)
		if err != nil {
			t.Fatal(err)
		}
		if len(list) != 1 || list[0].Key.Namespace != ns || string(list[0].Value) != ns {
			t.Errorf("list namespace %q: got %+v, want only the pod in %q", ns, list, ns)
		}
	}
	if all, _, err := st.List(ctx, "pods", ""); err != nil || len(all) != 6 {
		t.Errorf("list every namespace: %d objects, %v; want 6", len(all), err)
	}

	// A watch of namespace "*" sees nothing of the others either: after
	// its one pod, the next event is the one made in "*" after a pod in
	// "a".
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	events, err := st.Watch(wctx, "pods", "*", 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []store.Key{{Resource: "pods", Namespace: "a", Name: "q"}, {Resource: "pods", Namespace: "*", Name: "q"}} {
		if _, err := st.Create(ctx, k, nil); err != nil {
			t.Fatal(err)
		}
	}
	for _, want := range []string{"p", "q"} {
		select {
		case ev := <-events:
			if ev.Entry.Key.Namespace != "*" || ev.Entry.Key.Name != want {
				t.Errorf("watch namespace \"*\": got %+v, want %s in \"*\"", ev.Entry.Key, want)
			}
		case <-wctx.Done():
			t.Fatalf("watch namespace \"*\": no event for %s", want)
		}
	}
}

func TestObjectSizeLimit(t *testing.T) {
	st := storetest.Open(t)
	ctx := t.Context()
	k := store.Key{Resource: "configmaps", Namespace: "default", Name: "big"}
	atLimit := bytes.Repeat([]byte("x"), store.MaxObjectBytes)
	rev, err := st.Create(ctx, k, atLimit)
	if err != nil {
		t.Fatalf("create %d bytes, the limit: %v", len(atLimit), err)
	}
	over := append(atLimit, 'x')
	if _, err := st.Update(ctx, k, over, rev); !errors.Is(err, store.ErrTooLarge) {
		t.Errorf("update to %d bytes: got %v, want ErrTooLarge", len(over), err)
	}
	if e, err := st.Get(ctx, k); err != nil || e.Revision != rev || len(e.Value) != len(atLimit) {
		t.Errorf("after a refused update: revision %d, %d bytes, %v; want revision %d unchanged", e.Revision, len(e.Value), err, rev)
	}
	k2 := store.Key{Resource: "configmaps", Namespace: "default", Name: "bigger"}
	if _, err := st.Create(ctx, k2, over); !errors.Is(err, store.ErrTooLarge) {
		t.Errorf("create %d bytes: got %v, want ErrTooLarge", len(over), err)
	}
	if _, err := st.Get(ctx, k2); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("get after a refused create: got %v, want ErrNotFound", err)
	}
}

// TestOverlongNames: a key longer than a NATS protocol line allows is not
// sent to NATS (which would close the connection); it cannot exist, so
// reads find nothing and a create fails, and the store keeps working.
func TestOverlongNames(t *testing.T) {
	st := storetest.Open(t)
	ctx := t.Context()
	k := store.Key{Resource: "configmaps", Namespace: "default", Name: strings.Repeat("a", 5000)}
	if _, err := st.Get(ctx, k); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("get an overlong name: got %v, want ErrNotFound", err)
	}
	if err := st.Delete(ctx, k, 0); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("delete an overlong name: got %v, want ErrNotFound", err)
	}
	if _, err := st.Create(ctx, k, []byte("x")); err == nil {
		t.Error("create an overlong name: no error")
	}
	if _, _, err := st.List(ctx, "configmaps", k.Name); err == nil {
		t.Error("list an overlong namespace: no error")
	}
	if _, err := st.Create(ctx, store.Key{Resource: "configmaps", Namespace: "default", Name: "after"}, []byte("x")); err != nil {
		t.Errorf("create after the overlong names: %v", err)
	}
}
