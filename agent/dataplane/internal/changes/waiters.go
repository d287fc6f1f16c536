package changes

import (
	"context"
	"sync"
)

// Waiters lets each caller of a dataplane's Sync wait for the write that
// carries its state: Sync records the state (Tracker.Update gives its
// generation) and waits; the sync loop publishes each write's generation
// and error.
type Waiters struct {
	mu      sync.Mutex
	doneGen uint64
	lastErr error
	ch      chan struct{} // closed and replaced after each write
}

func NewWaiters() *Waiters { return &Waiters{ch: make(chan struct{})} }

// Publish tells the waiters that generations up to gen are written, or
// that the write failed with err.
func (w *Waiters) Publish(gen uint64, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if gen > w.doneGen {
		w.doneGen = gen
	}
	w.lastErr = err
	close(w.ch)
	w.ch = make(chan struct{})
}

// Wait returns the error of the write that carried gen, once it is made;
// ctx's error when ctx ends first; closed when stopped is closed first
// (the sync loop has ended).
func (w *Waiters) Wait(ctx context.Context, gen uint64, stopped <-chan struct{}, closed error) error {
	for {
		w.mu.Lock()
		if w.doneGen >= gen {
			err := w.lastErr
			w.mu.Unlock()
			return err
		}
		ch := w.ch
		w.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-stopped:
			return closed
		}
	}
}
