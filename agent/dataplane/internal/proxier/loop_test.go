package proxier

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/skep-io/skep/agent/dataplane"
	"github.com/skep-io/skep/agent/dataplane/internal/changes"
)

// fake records the writes the loop asks for.
type fake struct {
	mu     sync.Mutex
	writes []bool // full, per write
	fail   error  // the next write's error
	gone   bool
}

func (f *fake) Rewrite(changes.Snapshot) bool { return false }

func (f *fake) Write(_ context.Context, _ changes.Snapshot, full bool, _ time.Time) (Result, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.writes = append(f.writes, full)
	err := f.fail
	f.fail = nil
	return Result{}, err
}

func (f *fake) Gone(context.Context) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	gone := f.gone
	f.gone = false
	return gone
}

func (f *fake) fulls() []bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]bool(nil), f.writes...)
}

var errClosed = errors.New("closed")

func svc(port int) map[dataplane.ServiceKey]*dataplane.Service {
	k := dataplane.ServiceKey{Namespace: "default", Name: "web", Protocol: dataplane.TCP}
	return map[dataplane.ServiceKey]*dataplane.Service{k: {Key: k, ClusterIP: netip.MustParseAddr("10.96.0.10"), Port: uint16(port)}}
}

func start(t *testing.T, f *fake) *Loop {
	l := New(Config{Mode: "test", Closed: errClosed, MinSyncInterval: time.Millisecond, CheckInterval: 10 * time.Millisecond}, f)
	l.Start(t.Context(), nil)
	t.Cleanup(l.Close)
	return l
}

// TestSyncWritesFullThenPartial: the first write is full, a change after
// it partial, and a Sync with nothing changed writes nothing.
func TestSyncWritesFullThenPartial(t *testing.T) {
	f := &fake{}
	l := start(t, f)
	ctx := t.Context()
	for _, port := range []int{80, 81, 81} {
		if err := l.Sync(ctx, svc(port)); err != nil {
			t.Fatal(err)
		}
	}
	if got := f.fulls(); len(got) != 2 || !got[0] || got[1] {
		t.Errorf("writes (full?) = %v, want [true false]", got)
	}
}

// TestFailedWriteIsRetriedFull: Sync returns the write's error, and the
// loop retries on its own with a full sync.
func TestFailedWriteIsRetriedFull(t *testing.T) {
	f := &fake{}
	l := start(t, f)
	ctx := t.Context()
	if err := l.Sync(ctx, svc(80)); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	f.mu.Lock()
	f.fail = boom
	f.mu.Unlock()
	if err := l.Sync(ctx, svc(81)); !errors.Is(err, boom) {
		t.Fatalf("Sync = %v, want the write's error", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(f.fulls()) < 3 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := f.fulls(); len(got) < 3 || !got[2] {
		t.Errorf("writes (full?) = %v, want a full retry after the failed one", got)
	}
}

// TestGoneRulesAreRewritten: when the periodic check finds the rules gone,
// the loop writes them all again without being asked.
func TestGoneRulesAreRewritten(t *testing.T) {
	f := &fake{}
	l := start(t, f)
	if err := l.Sync(t.Context(), svc(80)); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	f.gone = true
	f.mu.Unlock()
	deadline := time.Now().Add(5 * time.Second)
	for len(f.fulls()) < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := f.fulls(); len(got) != 2 || !got[1] {
		t.Errorf("writes (full?) = %v, want [true true]", got)
	}
}

// TestSyncAfterClose returns Config.Closed.
func TestSyncAfterClose(t *testing.T) {
	l := start(t, &fake{})
	l.Close()
	if err := l.Sync(t.Context(), svc(80)); !errors.Is(err, errClosed) {
		t.Errorf("Sync after Close = %v, want %v", err, errClosed)
	}
}
