package changes

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestWaiters(t *testing.T) {
	w := NewWaiters()
	stopped := make(chan struct{})
	errClosed := errors.New("closed")
	got := make(chan error, 1)
	go func() { got <- w.Wait(context.Background(), 2, stopped, errClosed) }()

	w.Publish(1, nil) // an earlier generation: still waiting
	select {
	case err := <-got:
		t.Fatalf("Wait(2) returned %v after generation 1 was published", err)
	case <-time.After(20 * time.Millisecond):
	}
	failed := errors.New("write failed")
	w.Publish(3, failed) // a write carrying 2 and 3 failed
	if err := <-got; !errors.Is(err, failed) {
		t.Errorf("Wait(2) = %v, want the error of the write that carried it", err)
	}
	if err := w.Wait(context.Background(), 3, stopped, errClosed); !errors.Is(err, failed) {
		t.Errorf("Wait(3) after it was published = %v, want %v at once", err, failed)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := w.Wait(ctx, 4, stopped, errClosed); !errors.Is(err, context.Canceled) {
		t.Errorf("Wait with an ended context = %v, want context.Canceled", err)
	}
	close(stopped)
	if err := w.Wait(context.Background(), 4, stopped, errClosed); !errors.Is(err, errClosed) {
		t.Errorf("Wait after the loop stopped = %v, want %v", err, errClosed)
	}
}
