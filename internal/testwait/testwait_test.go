package testwait

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// recorder stands in for the test given to For, so that its failure can
// be checked rather than failing this test.
type recorder struct {
	testing.TB
	mu     sync.Mutex
	failed string
}

func (r *recorder) Helper() {}

// Fatalf records the failure and stops the goroutine, as testing.T does.
func (r *recorder) Fatalf(format string, args ...any) {
	r.mu.Lock()
	r.failed = fmt.Sprintf(format, args...)
	r.mu.Unlock()
	panic(r)
}

func run(r *recorder, total, interval time.Duration, check func() error) (failed string) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer func() {
			if p := recover(); p != nil && p != r {
				panic(p)
			}
		}()
		For(r, total, interval, check)
	}()
	<-done
	return r.failed
}

func TestForReturnsOnceTheCheckPasses(t *testing.T) {
	calls := 0
	r := &recorder{TB: t}
	start := time.Now()
	failed := run(r, time.Second, 5*time.Millisecond, func() error {
		calls++
		if calls < 3 {
			return errors.New("not yet")
		}
		return nil
	})
	if failed != "" {
		t.Fatalf("For failed: %s", failed)
	}
	if calls != 3 {
		t.Errorf("check called %d times, want 3", calls)
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("For took %s for three checks 5ms apart", d)
	}
}

func TestForFailsWithTheLastError(t *testing.T) {
	calls := 0
	r := &recorder{TB: t}
	start := time.Now()
	failed := run(r, 50*time.Millisecond, 10*time.Millisecond, func() error {
		calls++
		if calls == 1 {
			return errors.New("first")
		}
		return errors.New("pod web not ready")
	})
	if !strings.Contains(failed, "pod web not ready") || !strings.Contains(failed, "50ms") {
		t.Errorf("failure %q, want the last error and the time waited", failed)
	}
	if d := time.Since(start); d < 50*time.Millisecond {
		t.Errorf("For gave up after %s, before the 50ms it was given", d)
	}
}

func TestHoldsNamesWhatIsAwaited(t *testing.T) {
	ok := false
	check := Holds("the leader", func() bool { return ok })
	if err := check(); err == nil || !strings.Contains(err.Error(), "the leader") {
		t.Errorf("check before cond holds: %v, want an error naming the leader", err)
	}
	ok = true
	if err := check(); err != nil {
		t.Errorf("check once cond holds: %v", err)
	}
}
