package ebpf

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"time"

	"github.com/cilium/ebpf"

	"github.com/skep-io/skep/agent/dataplane"
	"github.com/skep-io/skep/bpf"
)

// change is the difference between what the maps hold and what they must
// hold, in the order it is written.
type change struct {
	putBackends    kv[uint32, bpf.LB4Backend]
	putNames       kv[uint32, bpf.LB4SvcName]
	putSlots       kv[bpf.LB4Key, bpf.LB4Service] // backend slots, slot > 0
	putEntries     kv[bpf.LB4Key, bpf.LB4Service] // service entries, slot 0
	delEntries     []bpf.LB4Key
	delSlots       []bpf.LB4Key
	delBackends    []uint32
	delNames       []uint32
	removedBackend map[uint32]bpf.LB4Backend
	// unservedBackend are kept backends that stopped taking new
	// connections (not ready, or terminating): their established flows
	// may finish, but connected UDP sockets have no end and are moved off.
	unservedBackend map[uint32]bpf.LB4Backend
}

type kv[K comparable, V any] struct {
	keys []K
	vals []V
}

func (c *kv[K, V]) add(k K, v V) {
	c.keys = append(c.keys, k)
	c.vals = append(c.vals, v)
}

func diffState(have, want *mapState) *change {
	c := &change{removedBackend: map[uint32]bpf.LB4Backend{}, unservedBackend: map[uint32]bpf.LB4Backend{}}
	for id, b := range want.backends {
		old, ok := have.backends[id]
		if !ok || old != b {
			c.putBackends.add(id, b)
		}
		if ok && old.Flags&bpf.BackendFlagServing != 0 && b.Flags&bpf.BackendFlagServing == 0 {
			c.unservedBackend[id] = b
		}
	}
	for id, n := range want.names {
		if old, ok := have.names[id]; !ok || old != n {
			c.putNames.add(id, n)
		}
	}
	for k, v := range want.services {
		if old, ok := have.services[k]; ok && old == v {
			continue
		}
		if k.BackendSlot == 0 {
			c.putEntries.add(k, v)
		} else {
			c.putSlots.add(k, v)
		}
	}
	for k := range have.services {
		if _, ok := want.services[k]; ok {
			continue
		}
		if k.BackendSlot == 0 {
			c.delEntries = append(c.delEntries, k)
		} else {
			c.delSlots = append(c.delSlots, k)
		}
	}
	for id, b := range have.backends {
		if _, ok := want.backends[id]; !ok {
			c.delBackends = append(c.delBackends, id)
			c.removedBackend[id] = b
		}
	}
	for id := range have.names {
		if _, ok := want.names[id]; !ok {
			c.delNames = append(c.delNames, id)
		}
	}
	return c
}

func union[K comparable, V any](a, b map[K]V) map[K]V {
	out := make(map[K]V, len(a)+len(b))
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		out[k] = v
	}
	return out
}

func (c *change) writes() int {
	return len(c.putBackends.keys) + len(c.putNames.keys) + len(c.putSlots.keys) + len(c.putEntries.keys) +
		len(c.delEntries) + len(c.delSlots) + len(c.delBackends) + len(c.delNames)
}

// apply writes the change so that the datapath never sees a service
// without backends or a slot naming a missing backend: backends first,
// then the slots that name them, then the service entries whose count
// exposes the slots; removals go the other way round.
func (c *change) apply(m lbMaps) error {
	if err := writeBatch(m.backends, c.putBackends.keys, c.putBackends.vals); err != nil {
		return fmt.Errorf("write backends: %w", err)
	}
	if err := writeBatch(m.names, c.putNames.keys, c.putNames.vals); err != nil {
		return fmt.Errorf("write service names: %w", err)
	}
	if err := writeBatch(m.services, c.putSlots.keys, c.putSlots.vals); err != nil {
		return fmt.Errorf("write backend slots: %w", err)
	}
	if err := writeBatch(m.services, c.putEntries.keys, c.putEntries.vals); err != nil {
		return fmt.Errorf("write service entries: %w", err)
	}
	if err := deleteBatch(m.services, c.delEntries); err != nil {
		return fmt.Errorf("delete service entries: %w", err)
	}
	if err := deleteBatch(m.services, c.delSlots); err != nil {
		return fmt.Errorf("delete backend slots: %w", err)
	}
	if err := deleteBatch(m.backends, c.delBackends); err != nil {
		return fmt.Errorf("delete backends: %w", err)
	}
	if err := deleteBatch(m.names, c.delNames); err != nil {
		return fmt.Errorf("delete service names: %w", err)
	}
	return nil
}

// Sync makes the maps carry exactly services, writing only what differs
// from what they hold. A failed write leaves the maps partly updated but
// never inconsistent; the next Sync or Apply reads them back and converges.
func (d *Dataplane) Sync(ctx context.Context, services map[dataplane.ServiceKey]*dataplane.Service) (err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	start := time.Now()
	kind := syncPartial
	if d.resync || !d.synced {
		kind = syncFull
	}
	defer func() {
		if err != nil {
			d.metrics.syncErrors.Inc()
			return
		}
		d.synced = true
		d.metrics.syncDuration.WithLabelValues(kind).Observe(time.Since(start).Seconds())
	}()
	if d.objs == nil {
		return errors.New("sync ebpf dataplane: closed")
	}
	// The caller may reuse its map; Apply changes this copy.
	d.desired = maps.Clone(services)
	if d.desired == nil {
		d.desired = map[dataplane.ServiceKey]*dataplane.Service{}
	}
	return d.syncFull(ctx, start)
}

// syncFull plans every service of d.desired and writes the difference to
// what the maps hold (read back first when a write failed). Caller holds mu.
func (d *Dataplane) syncFull(ctx context.Context, start time.Time) error {
	if d.resync {
		st, err := loadMapState(d.maps())
		if err != nil {
			return fmt.Errorf("sync ebpf dataplane: %w", err)
		}
		st.nextSvcID = max(st.nextSvcID, d.state.nextSvcID)
		st.nextBackendID = max(st.nextBackendID, d.state.nextBackendID)
		d.state, d.resync = st, false
	}
	d.index = nil
	want := d.state.plan(d.desired, d.log)
	c := diffState(d.state, want)
	if err := c.apply(d.maps()); err != nil {
		d.resync = true
		return fmt.Errorf("sync ebpf dataplane: %w", err)
	}
	d.state = want
	d.index = indexState(want, d.desired)
	d.afterWrite(ctx, c, start)
	return nil
}

// afterWrite does what follows a successful write of c: forget removed
// backends, terminate UDP sockets of backends that stopped serving, count
// and log. Caller holds mu.
func (d *Dataplane) afterWrite(ctx context.Context, c *change, start time.Time) {
	d.lastWrites = c.writes()
	if len(c.removedBackend) > 0 {
		if err := d.forgetBackends(ctx, c.removedBackend); err != nil {
			// The datapath already ignores entries of removed backends;
			// this only frees them early.
			d.log.Warn("purge state of removed backends", "error", err)
		}
	}
	if gone := union(c.removedBackend, c.unservedBackend); len(gone) > 0 && d.term != nil {
		if peers := stalePeers(gone, d.state.backends); len(peers) > 0 {
			if err := d.term.terminate(ctx, d.cfg.CgroupPath, peers); err != nil {
				d.log.Warn("terminate UDP sockets of backends no longer serving", "error", err)
			}
		}
	}
	if n := c.writes(); n > 0 {
		d.log.Info("synced services", "services", len(d.state.names), "writes", n,
			"removed_backends", len(c.removedBackend), "duration", time.Since(start))
	}
}

// forgetBackends drops affinity and conntrack entries that name removed
// backends, so that no client stays bound to them, and their connection
// counters.
func (d *Dataplane) forgetBackends(ctx context.Context, removed map[uint32]bpf.LB4Backend) error {
	m := d.maps()
	var errs []error
	errs = append(errs, dropConnections(m.conns, func(id uint32) bool {
		_, gone := removed[id]
		return gone
	}))
	errs = append(errs, purge(m.affinity, func(_ bpf.LB4AffinityKey, v bpf.LB4AffinityVal) bool {
		_, gone := removed[v.BackendId]
		return gone
	}))
	errs = append(errs, purge(m.ct, func(_ bpf.CT4Key, v bpf.CT4Entry) bool {
		_, gone := removed[v.BackendId]
		return gone
	}))
	return errors.Join(errs...)
}

// purge deletes the entries of m for which drop is true.
func purge[K comparable, V any](m *ebpf.Map, drop func(K, V) bool) error {
	var (
		k    K
		v    V
		dead []K
	)
	it := m.Iterate()
	for it.Next(&k, &v) {
		if drop(k, v) {
			dead = append(dead, k)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read %s: %w", m, err)
	}
	if err := deleteBatch(m, dead); err != nil {
		return fmt.Errorf("delete from %s: %w", m, err)
	}
	return nil
}

// Services reads the services back from the maps.
func (d *Dataplane) Services(ctx context.Context) ([]dataplane.Service, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.objs == nil {
		return nil, errors.New("read ebpf dataplane services: closed")
	}
	st, err := loadMapState(d.maps())
	if err != nil {
		return nil, fmt.Errorf("read ebpf dataplane services: %w", err)
	}
	return st.servicesOf(d.cfg.NodeName), nil
}

// ServiceStats reads the services back from the maps, with the connections
// counted for each backend.
func (d *Dataplane) ServiceStats(ctx context.Context) ([]ServiceStats, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.objs == nil {
		return nil, errors.New("read ebpf dataplane services: closed")
	}
	return readStats(d.maps(), d.cfg.NodeName)
}

// ReadServices reads what a node's pinned maps hold, with the connections
// counted for each backend, without loading the node's programs into any
// hook or changing a map: for `skep dataplane services` beside a running
// agent.
func ReadServices(cfg Config) ([]ServiceStats, error) {
	dir := cfg.pinDir()
	if _, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("read ebpf dataplane services: no pins of node %s: %w", cfg.NodeName, err)
	}
	objs, err := bpf.Load(bpf.Options{PinDir: dir})
	if err != nil {
		return nil, fmt.Errorf("read ebpf dataplane services: %w", err)
	}
	d := &Dataplane{cfg: cfg, objs: objs}
	defer d.Close()
	return readStats(d.maps(), cfg.NodeName)
}

func readStats(m lbMaps, nodeName string) ([]ServiceStats, error) {
	st, err := loadMapState(m)
	if err != nil {
		return nil, fmt.Errorf("read ebpf dataplane services: %w", err)
	}
	conns, err := readConnections(m.conns)
	if err != nil {
		return nil, fmt.Errorf("read ebpf dataplane services: %w", err)
	}
	return st.statsOf(nodeName, conns), nil
}
