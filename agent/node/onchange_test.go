package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skep-io/skep/controlplane/api"
	"github.com/skep-io/skep/controlplane/apiserver/apiservertest"
	"github.com/skep-io/skep/controlplane/client"
	"github.com/skep-io/skep/internal/testwait"
)

// TestKickerRun checks the loop behind the dataplane sync and the
// LoadBalancer announcements: a first run, a resync, on the informer's
// full list, a run after each change, a failed run tried again without a
// change, and nothing more once ctx ends.
func TestKickerRun(t *testing.T) {
	c := apiservertest.Start(t)
	configmaps := api.MustLookup("configmaps")
	create := func(name string) {
		t.Helper()
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name}}
		if _, err := c.Create(t.Context(), configmaps, cm); err != nil {
			t.Fatal(err)
		}
	}
	create("before")
	inf := client.NewInformer(c, configmaps, client.InformerOptions{Logger: slog.New(slog.DiscardHandler)})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go inf.Run(ctx)

	type run struct {
		objects        int
		at             time.Time
		failed, resync bool
	}
	var mu sync.Mutex
	var runs []run
	failNext := false
	done := make(chan struct{})
	go func() {
		defer close(done)
		k := newKicker()
		inf.AddHandlers(k.handlers())
		k.run(ctx, time.Hour, func(resync bool) error {
			mu.Lock()
			defer mu.Unlock()
			r := run{objects: len(inf.List()), at: time.Now(), failed: failNext, resync: resync}
			runs = append(runs, r)
			failNext = false
			if r.failed {
				return errors.New("dataplane refused")
			}
			return nil
		}, inf)
	}()
	// lastSaw passes once the latest run saw n objects and succeeded.
	lastSaw := func(n int) func() error {
		return func() error {
			mu.Lock()
			defer mu.Unlock()
			if len(runs) == 0 {
				return errors.New("no run yet")
			}
			if last := runs[len(runs)-1]; last.objects != n || last.failed {
				return fmt.Errorf("the last of %d runs saw %d objects (failed: %t), want a successful one with %d", len(runs), last.objects, last.failed, n)
			}
			return nil
		}
	}
	testwait.For(t, 5*time.Second, 10*time.Millisecond, lastSaw(1))
	mu.Lock()
	if !runs[0].resync {
		t.Error("the first run was not told it is a full one")
	}
	mu.Unlock()

	create("after")
	testwait.For(t, 5*time.Second, 10*time.Millisecond, lastSaw(2))

	mu.Lock()
	failNext = true
	mu.Unlock()
	create("refused")
	testwait.For(t, 5*time.Second, 10*time.Millisecond, lastSaw(3))
	mu.Lock()
	var failedAt, retriedAt time.Time
	for i, r := range runs {
		if i > 0 && r.resync {
			t.Errorf("run %d was told it is a resync within the hour", i)
		}
		if r.failed {
			failedAt = r.at
		} else if !failedAt.IsZero() && retriedAt.IsZero() {
			retriedAt = r.at
		}
	}
	mu.Unlock()
	if failedAt.IsZero() {
		t.Fatal("no run failed")
	}
	if d := retriedAt.Sub(failedAt); d < retryFailedSync-50*time.Millisecond {
		t.Errorf("the failed run was tried again after %s, want about %s with no change in between", d, retryFailedSync)
	}

	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("run still running 5s after its ctx ended")
	}
}

// TestKickerResyncs checks a run comes every resync period without a
// change, told so.
func TestKickerResyncs(t *testing.T) {
	c := apiservertest.Start(t)
	inf := client.NewInformer(c, api.MustLookup("configmaps"), client.InformerOptions{Logger: slog.New(slog.DiscardHandler)})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go inf.Run(ctx)
	var mu sync.Mutex
	resyncs := 0
	go newKicker().run(ctx, 20*time.Millisecond, func(resync bool) error {
		mu.Lock()
		defer mu.Unlock()
		if resync {
			resyncs++
		}
		return nil
	}, inf)
	testwait.For(t, 5*time.Second, 10*time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		if resyncs < 3 {
			return fmt.Errorf("%d full runs, want the first and two resyncs", resyncs)
		}
		return nil
	})
}
