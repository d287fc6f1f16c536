package clientgo

import (
	"context"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// Short periods, so the test takes seconds; client-go requires
// LeaseDuration > RenewDeadline > RetryPeriod*1.2.
const (
	leaseDuration = 2 * time.Second
	renewDeadline = 1 * time.Second
	retryPeriod   = 200 * time.Millisecond
)

// candidate runs client-go's leader election for identity until its
// context ends.
type candidate struct {
	identity string
	cancel   context.CancelFunc
	leading  chan struct{} // closed when it starts leading
	done     chan struct{} // closed when RunOrDie returns
	stopped  chan struct{} // closed when it stops leading
}

func runCandidate(t *testing.T, cs kubernetes.Interface, identity string) *candidate {
	t.Helper()
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Name: "skep-test", Namespace: ns},
		Client:     cs.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: identity},
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &candidate{identity: identity, cancel: cancel, leading: make(chan struct{}), done: make(chan struct{}), stopped: make(chan struct{})}
	var once sync.Once
	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock:          lock,
		LeaseDuration: leaseDuration,
		RenewDeadline: renewDeadline,
		RetryPeriod:   retryPeriod,
		// A candidate that stops does not hand the Lease over: the next
		// one must wait for it to expire, as after a crash.
		ReleaseOnCancel: false,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(context.Context) { close(c.leading) },
			OnStoppedLeading: func() { once.Do(func() { close(c.stopped) }) },
		},
		Name: identity,
	})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(c.done)
		le.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-c.done
	})
	return c
}

func waitClosed(t *testing.T, ch <-chan struct{}, d time.Duration, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(d):
		t.Fatalf("%s: not within %v", what, d)
	}
}

// TestLeaderElection runs two candidates of client-go's leader election
// over a LeaseLock: the first acquires the Lease and renews it while the
// second waits, and the second takes over once the first stops.
func TestLeaderElection(t *testing.T) {
	_, cs, _ := start(t)
	ctx := t.Context()
	leases := cs.CoordinationV1().Leases(ns)

	a := runCandidate(t, cs, "a")
	waitClosed(t, a.leading, 5*time.Second, "a leading")
	lease, err := leases.Get(ctx, "skep-test", metav1.GetOptions{})
	must(t, "get lease", err)
	if lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity != "a" || lease.Spec.RenewTime == nil {
		t.Fatalf("the lease after a acquired it: %+v, want holder a with a renew time", lease.Spec)
	}
	firstRenew := lease.Spec.RenewTime.Time

	b := runCandidate(t, cs, "b")
	// Over more than a lease duration a keeps renewing and b does not
	// take over.
	select {
	case <-b.leading:
		t.Fatal("b took the lease while a was renewing it")
	case <-time.After(leaseDuration + renewDeadline):
	}
	lease, err = leases.Get(ctx, "skep-test", metav1.GetOptions{})
	must(t, "get lease", err)
	if *lease.Spec.HolderIdentity != "a" || !lease.Spec.RenewTime.After(firstRenew) {
		t.Fatalf("after %v the lease is held by %s renewed at %v, want a, renewed after %v",
			leaseDuration+renewDeadline, *lease.Spec.HolderIdentity, lease.Spec.RenewTime, firstRenew)
	}
	transitions := ptrValue(lease.Spec.LeaseTransitions)

	a.cancel()
	waitClosed(t, a.stopped, 5*time.Second, "a stopping to lead after its context ended")
	waitClosed(t, b.leading, 3*leaseDuration, "b taking over after a stopped")
	lease, err = leases.Get(ctx, "skep-test", metav1.GetOptions{})
	must(t, "get lease", err)
	if *lease.Spec.HolderIdentity != "b" || ptrValue(lease.Spec.LeaseTransitions) != transitions+1 {
		t.Errorf("after b took over the lease is held by %s after %d transitions, want b after %d",
			*lease.Spec.HolderIdentity, ptrValue(lease.Spec.LeaseTransitions), transitions+1)
	}

	b.cancel()
	<-b.done
	must(t, "delete lease", leases.Delete(ctx, "skep-test", metav1.DeleteOptions{}))
}

func ptrValue(p *int32) int32 {
	if p == nil {
		return 0
	}
	return *p
}
