package ebpf

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/skep-io/skep/agent/dataplane"
	"github.com/skep-io/skep/bpf"
)

// stateIndex finds, for each service in a mapState, the entries it owns,
// so that a partial sync reads and replaces one service's entries without
// scanning the maps; and counts, over the desired state, how many services
// claim each frontend, so that a partial sync knows when a frontend two
// services want changes hands (which only a full plan decides the way a
// full sync does).
type stateIndex struct {
	ids      map[bpf.LB4SvcName]uint32
	entries  map[uint32][]bpf.LB4Key // service id -> its service entries and slots
	backends map[uint32][]uint32     // service id -> its backend ids
	claims   map[bpf.LB4Key]int      // slot-0 key of a frontend -> desired services claiming it
}

func indexState(st *mapState, desired map[dataplane.ServiceKey]*dataplane.Service) *stateIndex {
	x := &stateIndex{
		ids:      make(map[bpf.LB4SvcName]uint32, len(st.names)),
		entries:  make(map[uint32][]bpf.LB4Key, len(st.names)),
		backends: make(map[uint32][]uint32, len(st.names)),
		claims:   make(map[bpf.LB4Key]int, len(desired)),
	}
	for id, n := range st.names {
		x.ids[n] = id
	}
	for k, v := range st.services {
		x.entries[v.SvcId] = append(x.entries[v.SvcId], k)
	}
	for id, b := range st.backends {
		x.backends[b.SvcId] = append(x.backends[b.SvcId], id)
	}
	for _, s := range desired {
		x.claim(s, 1)
	}
	return x
}

// claim adds delta to the claims of s's frontends and reports whether any
// of them is, before or after, claimed by more than one service.
func (x *stateIndex) claim(s *dataplane.Service, delta int) (contested bool) {
	if !planned(s) {
		return false
	}
	proto := protoNumber(s.Key.Protocol)
	for _, fe := range frontendsOf(s) {
		k := fe.key(proto, 0)
		n := x.claims[k]
		contested = contested || n > 1 || n+delta > 1
		if n+delta <= 0 {
			delete(x.claims, k)
		} else {
			x.claims[k] = n + delta
		}
	}
	return contested
}

// Apply changes the service ports in changed (nil: removed) and leaves the
// others as they are. It reads and writes only the changed services'
// entries, so its cost does not grow with the number of services. The
// write order is a full sync's: backends, names, slots, entries, then the
// removals in reverse, so the datapath never sees a slot without its
// backend or an entry counting missing slots. A change that moves a
// frontend claimed by two services, or that follows a failed write, is
// planned in full instead, which decides such cases the same way.
func (d *Dataplane) Apply(ctx context.Context, changed map[dataplane.ServiceKey]*dataplane.Service) (err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	start := time.Now()
	if d.objs == nil {
		return errors.New("apply to ebpf dataplane: closed")
	}
	if !d.synced {
		return dataplane.ErrNeedFullSync
	}
	kind := syncPartial
	defer func() {
		if err != nil {
			d.metrics.syncErrors.Inc()
			return
		}
		d.metrics.syncDuration.WithLabelValues(kind).Observe(time.Since(start).Seconds())
	}()

	full := d.resync || d.index == nil
	if d.index == nil {
		// Only the claims matter here; the full plan rebuilds the rest.
		d.index = indexState(newMapState(), d.desired)
	}
	for k, s := range changed {
		if s != nil && s.Key != k {
			return fmt.Errorf("apply to ebpf dataplane: service %s given under key %s", s.Key, k)
		}
	}
	for k, s := range changed {
		full = d.index.claim(d.desired[k], -1) || full
		full = d.index.claim(s, 1) || full
		if s == nil {
			delete(d.desired, k)
		} else {
			d.desired[k] = s
		}
	}
	if full {
		kind = syncFull
		return d.syncFull(ctx, start)
	}

	keys := make([]dataplane.ServiceKey, 0, len(changed))
	for k := range changed {
		keys = append(keys, k)
	}
	// Sorted as a full plan goes, so new ids come out the same.
	slices.SortFunc(keys, compareKeys)

	// What the maps hold of the changed services, and what they must.
	have := newMapState()
	backendIDs := map[backendIdent]uint32{}
	for _, k := range keys {
		id, ok := d.index.ids[svcName(k)]
		if !ok {
			continue
		}
		have.names[id] = d.state.names[id]
		for _, key := range d.index.entries[id] {
			have.services[key] = d.state.services[key]
		}
		for _, bid := range d.index.backends[id] {
			b := d.state.backends[bid]
			have.backends[bid] = b
			backendIDs[backendIdent{b.SvcId, b.Address, b.Port}] = bid
		}
	}
	want := newMapState()
	want.nextSvcID, want.nextBackendID = d.state.nextSvcID, d.state.nextBackendID
	p := planner{want: want, svcIDs: d.index.ids, backendIDs: backendIDs, log: d.log}
	for _, k := range keys {
		if s := changed[k]; planned(s) {
			p.add(k, s)
		}
	}

	c := diffState(have, want)
	if err := c.apply(d.maps()); err != nil {
		d.resync = true
		return fmt.Errorf("apply to ebpf dataplane: %w", err)
	}
	d.commit(have, want)
	d.afterWrite(ctx, c, start)
	return nil
}

// commit replaces the entries of have by those of want in d.state and its
// index, after they were written. Caller holds mu.
func (d *Dataplane) commit(have, want *mapState) {
	st, x := d.state, d.index
	for id, n := range have.names {
		delete(st.names, id)
		delete(x.ids, n)
		delete(x.entries, id)
		delete(x.backends, id)
	}
	for k := range have.services {
		delete(st.services, k)
	}
	for id := range have.backends {
		delete(st.backends, id)
	}
	for id, n := range want.names {
		st.names[id] = n
		x.ids[n] = id
	}
	for k, v := range want.services {
		st.services[k] = v
		x.entries[v.SvcId] = append(x.entries[v.SvcId], k)
	}
	for id, b := range want.backends {
		st.backends[id] = b
		x.backends[b.SvcId] = append(x.backends[b.SvcId], id)
	}
	st.nextSvcID, st.nextBackendID = want.nextSvcID, want.nextBackendID
}
