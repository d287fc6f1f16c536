// Package queue is the work queue controllers share: keys, not objects,
// so that many changes to one object become one sync; a key is never
// handed to two workers at once; failed keys come back with a growing
// delay.
package queue

import (
	"context"
	"log/slog"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// Queue is a deduplicating FIFO of keys with delayed and rate-limited adds.
type Queue struct {
	mu         sync.Mutex
	cond       *sync.Cond
	items      []string
	queued     map[string]bool // in items
	processing map[string]bool // handed out, not Done yet
	dirty      map[string]bool // added while processing: requeue on Done
	waiting    map[string]time.Time
	failures   map[string]int
	shutdown   bool

	baseDelay, maxDelay time.Duration
}

// New returns an empty queue whose retries back off from 5ms to 30s.
func New() *Queue {
	q := &Queue{
		queued:     map[string]bool{},
		processing: map[string]bool{},
		dirty:      map[string]bool{},
		waiting:    map[string]time.Time{},
		failures:   map[string]int{},
		baseDelay:  5 * time.Millisecond,
		maxDelay:   30 * time.Second,
	}
	q.cond = sync.NewCond(&q.mu)
	return q
}

// Add queues key unless it is queued already.
func (q *Queue) Add(key string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.addLocked(key)
}

func (q *Queue) addLocked(key string) {
	if q.shutdown {
		return
	}
	if q.processing[key] {
		q.dirty[key] = true
		return
	}
	if q.queued[key] {
		return
	}
	q.queued[key] = true
	q.items = append(q.items, key)
	q.cond.Signal()
}

// AddAfter queues key after d. Adds of a key already waiting are merged
// into the earlier one, which is what batches a burst of changes.
func (q *Queue) AddAfter(key string, d time.Duration) {
	if d <= 0 {
		q.Add(key)
		return
	}
	at := time.Now().Add(d)
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.shutdown {
		return
	}
	if t, ok := q.waiting[key]; ok && !t.After(at) {
		return
	}
	q.waiting[key] = at
	time.AfterFunc(d, func() {
		q.mu.Lock()
		defer q.mu.Unlock()
		if t, ok := q.waiting[key]; ok && t.Equal(at) {
			delete(q.waiting, key)
			q.addLocked(key)
		}
	})
}

// AddRateLimited queues key after a delay that doubles with each failure
// since the last Forget.
func (q *Queue) AddRateLimited(key string) {
	q.mu.Lock()
	n := q.failures[key]
	q.failures[key] = n + 1
	q.mu.Unlock()
	d := q.baseDelay << min(n, 20)
	q.AddAfter(key, min(d, q.maxDelay))
}

// Forget resets key's failure count.
func (q *Queue) Forget(key string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.failures, key)
}

// Get blocks until a key is ready or the queue shuts down (ok false).
func (q *Queue) Get() (key string, ok bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.items) == 0 && !q.shutdown {
		q.cond.Wait()
	}
	if len(q.items) == 0 {
		return "", false
	}
	key, q.items = q.items[0], q.items[1:]
	delete(q.queued, key)
	q.processing[key] = true
	return key, true
}

// Done marks key processed; if it was added meanwhile it is queued again.
func (q *Queue) Done(key string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.processing, key)
	if q.dirty[key] {
		delete(q.dirty, key)
		q.addLocked(key)
	}
}

// Len is the number of keys ready to be processed.
func (q *Queue) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.items)
}

// ShutDown wakes every Get; they return ok false once the queue is empty
// of ready keys, and nothing more is queued.
func (q *Queue) ShutDown() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.shutdown = true
	q.items, q.queued = nil, map[string]bool{}
	q.cond.Broadcast()
}

// SyncFunc reconciles one key.
type SyncFunc func(ctx context.Context, key string) error

// Run processes keys with workers goroutines until ctx ends: a key whose
// sync fails is retried with back-off, one that succeeds is forgotten.
func Run(ctx context.Context, q *Queue, workers int, syncKey SyncFunc, logger *slog.Logger) {
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				key, ok := q.Get()
				if !ok {
					return
				}
				if err := syncKey(ctx, key); err != nil && ctx.Err() == nil {
					level := slog.LevelWarn
					if apierrors.IsConflict(err) {
						level = slog.LevelDebug // a cache a step behind: normal
					}
					logger.Log(ctx, level, "sync failed, will retry", "key", key, "err", err)
					q.AddRateLimited(key)
				} else {
					q.Forget(key)
				}
				q.Done(key)
			}
		})
	}
	<-ctx.Done()
	q.ShutDown()
	wg.Wait()
}
