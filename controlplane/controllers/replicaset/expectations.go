package replicaset

import (
	"sync"
	"time"
)

// expectTimeout is how long a create or delete may take to show up in the
// watch before the controller stops counting on it.
const expectTimeout = time.Minute

// expectations remember, per owner, the pods a sync created or deleted
// whose watch events have not arrived yet, so that the next sync, reading
// a cache that lags, neither creates nor deletes them a second time.
type expectations struct {
	mu     sync.Mutex
	owners map[string]*pending
}

type pending struct {
	creates, deletes map[string]time.Time // pod name -> when
}

func newExpectations() *expectations { return &expectations{owners: map[string]*pending{}} }

func (e *expectations) get(key string) *pending {
	p, ok := e.owners[key]
	if !ok {
		p = &pending{creates: map[string]time.Time{}, deletes: map[string]time.Time{}}
		e.owners[key] = p
	}
	return p
}

func (e *expectations) expectCreate(key, pod string, now time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.get(key).creates[pod] = now
}

func (e *expectations) expectDelete(key, pod string, now time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.get(key).deletes[pod] = now
}

// forgetName drops an expectation whose write failed.
func (e *expectations) forgetName(key, pod string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	p := e.get(key)
	delete(p.creates, pod)
	delete(p.deletes, pod)
}

func (e *expectations) forget(key string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.owners, key)
}

// pending drops what the cache now shows (a created pod seen, a deleted
// pod gone or terminating) or what took too long, and returns the rest.
func (e *expectations) pending(key string, observe func(pod string) (seen, gone bool), now time.Time) (creates, deletes map[string]bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	p := e.get(key)
	creates, deletes = map[string]bool{}, map[string]bool{}
	for name, at := range p.creates {
		if seen, _ := observe(name); seen || now.Sub(at) > expectTimeout {
			delete(p.creates, name)
			continue
		}
		creates[name] = true
	}
	for name, at := range p.deletes {
		if _, gone := observe(name); gone || now.Sub(at) > expectTimeout {
			delete(p.deletes, name)
			continue
		}
		deletes[name] = true
	}
	return creates, deletes
}
