package store

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

// newTestStore runs an in-process NATS server on a random loopback port with
// its files under t.TempDir(), as nats-server's own tests do.
func newTestStore(t *testing.T) (*Store, *Embedded) {
	t.Helper()
	e, err := StartEmbedded(EmbeddedConfig{StoreDir: t.TempDir(), Listen: "127.0.0.1:-1", User: "skep", Password: "test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Shutdown)
	nc, err := e.Connect()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	s, err := Open(t.Context(), nc, Config{})
	if err != nil {
		t.Fatal(err)
	}
	return s, e
}

func TestCompareAndSet(t *testing.T) {
	s, _ := newTestStore(t)
	ctx := t.Context()
	k := Key{Resource: "pods", Namespace: "default", Name: "web.1"}

	rev1, err := s.Create(ctx, k, []byte("v1"))
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	steps := []struct {
		name    string
		do      func() error
		wantErr error
	}{
		{"create again", func() error { _, err := s.Create(ctx, k, []byte("x")); return err }, ErrExists},
		{"update with the revision read", func() error { _, err := s.Update(ctx, k, []byte("v2"), rev1); return err }, nil},
		{"update with a stale revision", func() error { _, err := s.Update(ctx, k, []byte("v3"), rev1); return err }, ErrConflict},
		{"delete with a stale revision", func() error { return s.Delete(ctx, k, rev1) }, ErrConflict},
		{"delete unconditionally", func() error { return s.Delete(ctx, k, 0) }, nil},
		{"get after delete", func() error { _, err := s.Get(ctx, k); return err }, ErrNotFound},
		{"update after delete", func() error { _, err := s.Update(ctx, k, []byte("v4"), rev1+1); return err }, ErrNotFound},
		{"create after delete", func() error { _, err := s.Create(ctx, k, []byte("v5")); return err }, nil},
	}
	for _, step := range steps {
		err := step.do()
		if step.wantErr == nil && err != nil || step.wantErr != nil && !errors.Is(err, step.wantErr) {
			t.Fatalf("%s: got error %v, want %v", step.name, err, step.wantErr)
		}
	}
	e, err := s.Get(ctx, k)
	if err != nil || string(e.Value) != "v5" || e.Key != k {
		t.Fatalf("get: got %+v, %v; want value v5 under %v", e, err, k)
	}
}

func TestListIsScopedAndWatchResumes(t *testing.T) {
	s, _ := newTestStore(t)
	ctx := t.Context()
	for i := range 3 {
		if _, err := s.Create(ctx, Key{"pods", "a", fmt.Sprint("p", i)}, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Create(ctx, Key{"pods", "b", "q"}, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create(ctx, Key{"nodes", "", "n1"}, []byte("x")); err != nil {
		t.Fatal(err)
	}
	inA, _, err := s.List(ctx, "pods", "a")
	if err != nil || len(inA) != 3 {
		t.Fatalf("list pods in a: got %d, %v; want 3", len(inA), err)
	}
	all, rev, err := s.List(ctx, "pods", "")
	if err != nil || len(all) != 4 {
		t.Fatalf("list all pods: got %d, %v; want 4", len(all), err)
	}

	// Changes made while nobody watches are delivered to a watch resumed
	// from the list's revision; the node change is not.
	if _, err := s.Create(ctx, Key{"pods", "a", "late"}, []byte("y")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create(ctx, Key{"nodes", "", "n2"}, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, Key{"pods", "b", "q"}, 0); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	events, err := s.Watch(wctx, "pods", "", rev)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		typ  EventType
		name string
	}{{Put, "late"}, {Deleted, "q"}}
	for _, w := range want {
		select {
		case ev := <-events:
			if ev.Type != w.typ || ev.Entry.Key.Name != w.name || ev.Entry.Revision <= rev {
				t.Fatalf("watch from %d: got %+v, want type %v name %s", rev, ev, w.typ, w.name)
			}
		case <-wctx.Done():
			t.Fatalf("watch from %d: no event for %s", rev, w.name)
		}
	}
}

func TestSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	start := func() (*Store, *Embedded) {
		e, err := StartEmbedded(EmbeddedConfig{StoreDir: dir, Listen: "127.0.0.1:-1", User: "u", Password: "p"})
		if err != nil {
			t.Fatal(err)
		}
		nc, err := e.Connect()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		s, err := Open(t.Context(), nc, Config{})
		if err != nil {
			t.Fatal(err)
		}
		return s, e
	}
	s, e := start()
	k := Key{"services", "default", "web"}
	rev, err := s.Create(t.Context(), k, []byte("svc"))
	if err != nil {
		t.Fatal(err)
	}
	e.Shutdown()
	s, e = start()
	t.Cleanup(e.Shutdown)
	got, err := s.Get(t.Context(), k)
	if err != nil || got.Revision != rev || string(got.Value) != "svc" {
		t.Fatalf("after restart: got %+v, %v; want revision %d", got, err, rev)
	}
}

func BenchmarkCreate(b *testing.B) {
	e, err := StartEmbedded(EmbeddedConfig{StoreDir: b.TempDir(), Listen: "127.0.0.1:-1", User: "u", Password: "p", SyncAlways: true})
	if err != nil {
		b.Fatal(err)
	}
	defer e.Shutdown()
	nc, _ := e.Connect()
	defer nc.Close()
	s, err := Open(b.Context(), nc, Config{})
	if err != nil {
		b.Fatal(err)
	}
	value := make([]byte, 1024)
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if _, err := s.Create(b.Context(), Key{"pods", "default", fmt.Sprint("p", i)}, value); err != nil {
			b.Fatal(err)
		}
	}
}

// TestManyWatches: the API server holds one watch per client watch (an
// agent has four), so the embedded NATS must not cap them at its default
// of 1,000 consumers per stream.
func TestManyWatches(t *testing.T) {
	s, _ := newTestStore(t)
	ctx := t.Context()
	const n = 1200
	watches := make([]<-chan Event, n)
	for i := range watches {
		w, err := s.Watch(ctx, "services", "", 0)
		if err != nil {
			t.Fatalf("watch %d of %d: %v", i+1, n, err)
		}
		watches[i] = w
	}
	if _, err := s.Create(ctx, Key{Resource: "services", Namespace: "default", Name: "web"}, []byte("v1")); err != nil {
		t.Fatal(err)
	}
	for i, w := range watches {
		select {
		case ev := <-w:
			if ev.Entry.Key.Name != "web" {
				t.Fatalf("watch %d saw %+v", i, ev)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("watch %d of %d saw nothing in 30s", i+1, n)
		}
	}
}

// TestListUnderWrites lists while other keys are being rewritten, as the
// agents rewrite pod statuses while a controller lists pods: every list
// holds every key, each once. (A key rewritten while the list was being
// read loses its old message, since one value is kept per key; the list
// must still deliver its new one.)
func TestListUnderWrites(t *testing.T) {
	s, _ := newTestStore(t)
	ctx := t.Context()
	const keys = 100
	for i := range keys {
		if _, err := s.Create(ctx, Key{"pods", "default", fmt.Sprint("p", i)}, []byte("v0")); err != nil {
			t.Fatal(err)
		}
	}
	wctx, stop := context.WithCancel(ctx)
	writerDone := make(chan error, 1)
	go func() {
		// Rewrite the keys from the last to the first, over and over, so
		// that a list in progress keeps meeting keys it has not read yet.
		for n := 0; ; n++ {
			i := keys - 1 - n%keys
			k := Key{"pods", "default", fmt.Sprint("p", i)}
			cur, err := s.Get(wctx, k)
			if err == nil {
				_, err = s.Update(wctx, k, []byte(fmt.Sprint("v", n)), cur.Revision)
			}
			if wctx.Err() != nil {
				writerDone <- nil
				return
			}
			if err != nil && !errors.Is(err, ErrConflict) {
				writerDone <- err
				return
			}
		}
	}()
	for round := range 200 {
		got, _, err := s.List(ctx, "pods", "default")
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]int{}
		for _, e := range got {
			seen[e.Key.Name]++
		}
		for i := range keys {
			if name := fmt.Sprint("p", i); seen[name] != 1 {
				stop()
				t.Fatalf("list %d under writes: %s seen %d times (%d entries); want once each of %d keys", round, name, seen[name], len(got), keys)
			}
		}
	}
	stop()
	if err := <-writerDone; err != nil {
		t.Fatal(err)
	}
}
