package queue

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"
)

func TestAddDeduplicates(t *testing.T) {
	q := New()
	q.Add("a")
	q.Add("b")
	q.Add("a")
	if n := q.Len(); n != 2 {
		t.Fatalf("Len after adding a, b, a = %d, want 2", n)
	}
	k, _ := q.Get()
	if k != "a" {
		t.Fatalf("first Get = %q, want a", k)
	}
	// Added while processing: not handed out twice, queued again on Done.
	q.Add("a")
	if k, _ := q.Get(); k != "b" {
		t.Fatalf("second Get = %q, want b (a is being processed)", k)
	}
	q.Done("a")
	if k, _ := q.Get(); k != "a" {
		t.Fatalf("after Done, Get = %q, want a again", k)
	}
}

func TestAddAfterMergesABurst(t *testing.T) {
	q := New()
	for range 100 {
		q.AddAfter("svc", 30*time.Millisecond)
	}
	if n := q.Len(); n != 0 {
		t.Fatalf("Len right after AddAfter = %d, want 0", n)
	}
	deadline := time.Now().Add(2 * time.Second)
	for q.Len() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if n := q.Len(); n != 1 {
		t.Fatalf("Len after the delay = %d, want 1 (100 adds merged)", n)
	}
}

func TestRunRetriesFailures(t *testing.T) {
	q := New()
	var calls atomic.Int32
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		Run(ctx, q, 2, func(ctx context.Context, key string) error {
			if calls.Add(1) < 3 {
				return context.DeadlineExceeded // any error
			}
			return nil
		}, slog.New(slog.DiscardHandler))
		close(done)
	}()
	q.Add("k")
	deadline := time.Now().Add(2 * time.Second)
	for calls.Load() < 3 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done
	if n := calls.Load(); n != 3 {
		t.Fatalf("sync called %d times, want 3 (two failures, one success)", n)
	}
}
