package leader

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"

	"github.com/skep-io/skep/controlplane/api"
	"github.com/skep-io/skep/controlplane/apiserver/apiservertest"
	"github.com/skep-io/skep/controlplane/client"
	"github.com/skep-io/skep/internal/testwait"
)

// cutOff is a client whose connection can be cut, as a partition would.
type cutOff struct {
	client.Interface
	cut atomic.Bool
}

var errCut = errors.New("connection cut")

func (c *cutOff) Get(ctx context.Context, r *api.Resource, ns, name string) (api.Object, error) {
	if c.cut.Load() {
		return nil, errCut
	}
	return c.Interface.Get(ctx, r, ns, name)
}

func (c *cutOff) Update(ctx context.Context, r *api.Resource, obj api.Object) (api.Object, error) {
	if c.cut.Load() {
		return nil, errCut
	}
	return c.Interface.Update(ctx, r, obj)
}

// timeline records leadership starts and stops and fails the test if two
// candidates ever lead at once.
type timeline struct {
	t       *testing.T
	mu      sync.Mutex
	leading string
	events  []string
	started map[string]time.Time
}

func (tl *timeline) start(id string) func(ctx context.Context) {
	return func(ctx context.Context) {
		tl.mu.Lock()
		if tl.leading != "" {
			tl.t.Errorf("%s became leader while %s still leads", id, tl.leading)
		}
		tl.leading = id
		tl.events = append(tl.events, "start "+id)
		tl.started[id] = time.Now()
		tl.mu.Unlock()
		<-ctx.Done()
	}
}

func (tl *timeline) stop(id string) func() {
	return func() {
		tl.mu.Lock()
		defer tl.mu.Unlock()
		if tl.leading == id {
			tl.leading = ""
		}
		tl.events = append(tl.events, "stop "+id)
	}
}

func (tl *timeline) leader() string {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	return tl.leading
}

var fast = Config{LeaseDuration: 1500 * time.Millisecond, RenewDeadline: time.Second, RenewPeriod: 200 * time.Millisecond, RetryPeriod: 100 * time.Millisecond}

type candidate struct {
	id     string
	client *cutOff
	stop   func()
}

func campaign(t *testing.T, c client.Interface, tl *timeline, id string, cfg Config) *candidate {
	cand := &candidate{id: id, client: &cutOff{Interface: c}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := New(cand.client, id, cfg).Run(ctx, tl.start(id), tl.stop(id)); err != nil {
			t.Errorf("Run(%s): %v", id, err)
		}
	}()
	var once sync.Once
	cand.stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(cand.stop)
	return cand
}

func lease(t *testing.T, c client.Interface) *coordinationv1.Lease {
	t.Helper()
	o, err := c.Get(context.Background(), leasesResource, DefaultNamespace, DefaultName)
	if err != nil {
		t.Fatalf("get lease: %v", err)
	}
	return o.(*coordinationv1.Lease)
}

func TestReleaseHandsOverAtOnce(t *testing.T) {
	c := apiservertest.Start(t)
	tl := &timeline{t: t, started: map[string]time.Time{}}
	a := campaign(t, c, tl, "a", fast)
	testwait.For(t, 5*time.Second, 10*time.Millisecond, testwait.Holds("a to lead", func() bool { return tl.leader() == "a" }))
	campaign(t, c, tl, "b", fast)
	time.Sleep(fast.LeaseDuration) // b must not take a lease a renews
	if l := tl.leader(); l != "a" {
		t.Fatalf("leader is %q while a renews its lease, want a", l)
	}
	stopped := time.Now()
	a.stop() // releases the lease
	testwait.For(t, 5*time.Second, 10*time.Millisecond, testwait.Holds("b to lead", func() bool { return tl.leader() == "b" }))
	if d := time.Since(stopped); d > fast.LeaseDuration {
		t.Errorf("b took %s to lead after a released the lease; want less than the lease duration %s", d, fast.LeaseDuration)
	}
	if l := lease(t, c); *l.Spec.HolderIdentity != "b" {
		t.Fatalf("lease holder after hand-over %q, want b", *l.Spec.HolderIdentity)
	}
}

func TestCrashedLeaderIsReplacedAfterLeaseExpiry(t *testing.T) {
	c := apiservertest.Start(t)
	tl := &timeline{t: t, started: map[string]time.Time{}}
	cfg := fast
	cfg.KeepOnCancel = true // a crash: nothing is released
	a := campaign(t, c, tl, "a", cfg)
	testwait.For(t, 5*time.Second, 10*time.Millisecond, testwait.Holds("a to lead", func() bool { return tl.leader() == "a" }))
	campaign(t, c, tl, "b", cfg)
	killed := time.Now()
	a.stop()
	testwait.For(t, 10*time.Second, 10*time.Millisecond, testwait.Holds("b to lead", func() bool { return tl.leader() == "b" }))
	took := time.Since(killed)
	t.Logf("b took over %s after a crashed (lease duration %s)", took.Round(10*time.Millisecond), cfg.LeaseDuration)
	if took < cfg.LeaseDuration-cfg.RenewPeriod {
		t.Fatalf("b took over %s after a's last renewal could have been; the lease lasts %s", took, cfg.LeaseDuration)
	}
	if l := lease(t, c); *l.Spec.HolderIdentity != "b" || *l.Spec.LeaseTransitions != 1 {
		t.Fatalf("lease holder %s transitions %d, want b and 1", *l.Spec.HolderIdentity, *l.Spec.LeaseTransitions)
	}
}

// TestCutOffLeaderStepsDownFirst: a leader that cannot reach the API stops
// leading (RenewDeadline) before anyone else may start (LeaseDuration).
func TestCutOffLeaderStepsDownFirst(t *testing.T) {
	c := apiservertest.Start(t)
	tl := &timeline{t: t, started: map[string]time.Time{}}
	a := campaign(t, c, tl, "a", fast)
	testwait.For(t, 5*time.Second, 10*time.Millisecond, testwait.Holds("a to lead", func() bool { return tl.leader() == "a" }))
	campaign(t, c, tl, "b", fast)
	a.client.cut.Store(true)
	testwait.For(t, 10*time.Second, 10*time.Millisecond, testwait.Holds("b to lead", func() bool { return tl.leader() == "b" }))
	tl.mu.Lock()
	got := fmt.Sprint(tl.events)
	tl.mu.Unlock()
	if got != "[start a stop a start b]" {
		t.Fatalf("events %s, want a to stop before b starts", got)
	}
	// a reconnects and becomes a candidate again, not a second leader.
	a.client.cut.Store(false)
	time.Sleep(2 * fast.LeaseDuration)
	if l := tl.leader(); l != "b" {
		t.Fatalf("after a reconnected the leader is %q, want b", l)
	}
}
