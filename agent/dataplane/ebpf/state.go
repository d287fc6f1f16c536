package ebpf

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"time"

	"github.com/cilium/ebpf"

	"github.com/skep-io/skep/agent/dataplane"
	"github.com/skep-io/skep/bpf"
)

// lbMaps are the maps the agent writes or purges.
type lbMaps struct {
	services *ebpf.Map // bpf.LB4Key -> bpf.LB4Service
	backends *ebpf.Map // backend id -> bpf.LB4Backend
	names    *ebpf.Map // svc id -> bpf.LB4SvcName
	affinity *ebpf.Map // bpf.LB4AffinityKey -> bpf.LB4AffinityVal
	ct       *ebpf.Map // bpf.CT4Key -> bpf.CT4Entry
	conns    *ebpf.Map // backend id -> new connections, one count per CPU
}

// mapState is the content of the maps the agent owns: what they hold (read
// back at start) or what they should hold (planned by Sync).
type mapState struct {
	services map[bpf.LB4Key]bpf.LB4Service
	backends map[uint32]bpf.LB4Backend
	names    map[uint32]bpf.LB4SvcName

	// Ids are handed out upwards and not reused while the agent runs, so
	// that an id left in an affinity or conntrack entry never names a
	// different backend.
	nextSvcID     uint32
	nextBackendID uint32
}

func newMapState() *mapState { return newMapStateSized(0, 0, 0) }

func newMapStateSized(services, backends, names int) *mapState {
	return &mapState{
		services:      make(map[bpf.LB4Key]bpf.LB4Service, services),
		backends:      make(map[uint32]bpf.LB4Backend, backends),
		names:         make(map[uint32]bpf.LB4SvcName, names),
		nextSvcID:     1,
		nextBackendID: 1,
	}
}

// loadMapState reads the maps whole.
func loadMapState(m lbMaps) (*mapState, error) {
	st := newMapState()
	if err := readMap(m.services, st.services); err != nil {
		return nil, fmt.Errorf("read services map: %w", err)
	}
	if err := readMap(m.backends, st.backends); err != nil {
		return nil, fmt.Errorf("read backends map: %w", err)
	}
	if err := readMap(m.names, st.names); err != nil {
		return nil, fmt.Errorf("read service names map: %w", err)
	}
	for id := range st.names {
		st.nextSvcID = max(st.nextSvcID, id+1)
	}
	for _, s := range st.services {
		st.nextSvcID = max(st.nextSvcID, s.SvcId+1)
	}
	for id := range st.backends {
		st.nextBackendID = max(st.nextBackendID, id+1)
	}
	return st, nil
}

func readMap[K comparable, V any](m *ebpf.Map, out map[K]V) error {
	var (
		k K
		v V
	)
	it := m.Iterate()
	for it.Next(&k, &v) {
		out[k] = v
	}
	return it.Err()
}

// backendIdent is what makes a backend the same one across syncs.
type backendIdent struct {
	svcID uint32
	addr  uint32
	port  uint16
}

func protoNumber(p dataplane.Protocol) uint8 {
	if p == dataplane.UDP {
		return 17
	}
	return 6
}

func protoName(n uint8) dataplane.Protocol {
	if n == 17 {
		return dataplane.UDP
	}
	return dataplane.TCP
}

func svcName(k dataplane.ServiceKey) bpf.LB4SvcName {
	var n bpf.LB4SvcName
	copyString(n.Namespace[:len(n.Namespace)-1], k.Namespace)
	copyString(n.Name[:len(n.Name)-1], k.Name)
	copyString(n.Port[:len(n.Port)-1], k.Port)
	n.Proto = protoNumber(k.Protocol)
	return n
}

func copyString(dst []int8, s string) {
	for i := 0; i < len(dst) && i < len(s); i++ {
		dst[i] = int8(s[i])
	}
}

func cString(b []int8) string {
	out := make([]byte, 0, len(b))
	for _, c := range b {
		if c == 0 {
			break
		}
		out = append(out, byte(c))
	}
	return string(out)
}

func serviceKeyOf(n bpf.LB4SvcName) dataplane.ServiceKey {
	return dataplane.ServiceKey{
		Namespace: cString(n.Namespace[:]),
		Name:      cString(n.Name[:]),
		Port:      cString(n.Port[:]),
		Protocol:  protoName(n.Proto),
	}
}

// frontend is one address and port a service answers on.
type frontend struct {
	addr  netip.Addr // invalid for the NodePort wildcard
	port  uint16
	flags uint8
}

func frontendsOf(s *dataplane.Service) []frontend {
	local := uint8(0)
	if s.ExternalPolicyLocal {
		local = bpf.SvcFlagLocal
	}
	fes := []frontend{{addr: s.ClusterIP, port: s.Port}}
	if s.NodePort != 0 {
		fes = append(fes, frontend{port: s.NodePort, flags: bpf.SvcFlagNodePort | local})
	}
	for _, a := range s.LoadBalancerIPs {
		if a.Is4() {
			fes = append(fes, frontend{addr: a, port: s.Port, flags: bpf.SvcFlagExternal | local})
		}
	}
	for _, a := range s.ExternalIPs {
		if a.Is4() {
			fes = append(fes, frontend{addr: a, port: s.Port, flags: bpf.SvcFlagExternal | bpf.SvcFlagExtIP | local})
		}
	}
	return fes
}

func (f frontend) key(proto uint8, slot uint16) bpf.LB4Key {
	k := bpf.LB4Key{Dport: bpf.NativeEndianPort(f.port), BackendSlot: slot, Proto: proto}
	if f.addr.Is4() {
		k.Address = bpf.NativeEndianAddr(f.addr.As4())
	}
	return k
}

// plan computes what the maps must hold for services, keeping the ids the
// current state gave to services and backends that stay.
func (st *mapState) plan(services map[dataplane.ServiceKey]*dataplane.Service, log *slog.Logger) *mapState {
	want := newMapStateSized(len(st.services), len(st.backends), len(services))
	want.nextSvcID, want.nextBackendID = st.nextSvcID, st.nextBackendID

	svcIDs := make(map[bpf.LB4SvcName]uint32, len(st.names))
	for id, n := range st.names {
		svcIDs[n] = id
	}
	backendIDs := make(map[backendIdent]uint32, len(st.backends))
	for id, b := range st.backends {
		backendIDs[backendIdent{b.SvcId, b.Address, b.Port}] = id
	}
	p := planner{want: want, svcIDs: svcIDs, backendIDs: backendIDs, log: log}
	for _, key := range plannedKeys(services) {
		p.add(key, services[key])
	}
	return want
}

// plannedKeys are the keys of the services that are programmed (IPv4,
// not headless), sorted, so that two services claiming one frontend
// resolve the same way every time and new ids are handed out in the same
// order whether a service arrives in a full or a partial sync.
func plannedKeys(services map[dataplane.ServiceKey]*dataplane.Service) []dataplane.ServiceKey {
	keys := make([]dataplane.ServiceKey, 0, len(services))
	for k, s := range services {
		if planned(s) {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, compareKeys)
	return keys
}

// planned reports whether a service is programmed at all.
func planned(s *dataplane.Service) bool { return s != nil && s.ClusterIP.Is4() }

// planner adds services to a planned state, one at a time.
type planner struct {
	want *mapState
	// svcIDs and backendIDs are the ids already given: a service or a
	// backend found there keeps its id; new ones take the next from want.
	svcIDs     map[bpf.LB4SvcName]uint32
	backendIDs map[backendIdent]uint32
	log        *slog.Logger
	serving    []slotBackend // scratch
}

type slotBackend struct {
	id    uint32
	local bool
}

// add plans one service: its name, backends, entries and slots.
func (p *planner) add(key dataplane.ServiceKey, s *dataplane.Service) {
	want := p.want
	proto := protoNumber(key.Protocol)
	name := svcName(key)
	id, ok := p.svcIDs[name]
	if !ok {
		id = want.nextSvcID
		want.nextSvcID++
	}
	want.names[id] = name

	serving := p.serving[:0]
	defer func() { p.serving = serving }()
	for _, b := range s.Backends {
		if !b.Addr.Is4() {
			continue
		}
		ident := backendIdent{id, bpf.NativeEndianAddr(b.Addr.As4()), bpf.NativeEndianPort(b.Port)}
		bid, ok := p.backendIDs[ident]
		if !ok {
			bid = want.nextBackendID
			want.nextBackendID++
			p.backendIDs[ident] = bid
		}
		if _, dup := want.backends[bid]; dup {
			continue
		}
		var flags uint8
		if b.Local {
			flags |= bpf.BackendFlagLocal
		}
		if b.Serving() {
			flags |= bpf.BackendFlagServing
			serving = append(serving, slotBackend{bid, b.Local})
		}
		want.backends[bid] = bpf.LB4Backend{Address: ident.addr, Port: ident.port, Proto: proto, Flags: flags, SvcId: id}
	}
	// Local backends first: externalTrafficPolicy Local picks among
	// slots 1..local_count. By id within each group, so that a
	// backend added later lands at the end and moves no other slot.
	slices.SortFunc(serving, func(a, b slotBackend) int {
		if a.local != b.local {
			if a.local {
				return -1
			}
			return 1
		}
		return cmp.Compare(a.id, b.id)
	})
	serving = serving[:min(len(serving), 0xffff)]
	var localCount uint16
	for _, b := range serving {
		if b.local {
			localCount++
		}
	}
	affinity := uint32(0)
	if s.AffinityTimeout > 0 {
		affinity = uint32(max((s.AffinityTimeout+time.Second-1)/time.Second, 1))
	}

	for _, fe := range frontendsOf(s) {
		k0 := fe.key(proto, 0)
		if other, taken := want.services[k0]; taken {
			p.log.Warn("frontend claimed by two services, keeping the first",
				"service", key.String(), "other", serviceKeyOf(want.names[other.SvcId]).String(),
				"frontend", fmt.Sprintf("%v:%d", fe.addr, fe.port))
			continue
		}
		want.services[k0] = bpf.LB4Service{
			SvcId:           id,
			AffinityTimeout: affinity,
			Count:           uint16(len(serving)),
			LocalCount:      localCount,
			Flags:           fe.flags,
		}
		for i, b := range serving {
			want.services[fe.key(proto, uint16(i+1))] = bpf.LB4Service{BackendId: b.id, SvcId: id}
		}
	}
}

func compareKeys(a, b dataplane.ServiceKey) int {
	return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name),
		cmp.Compare(a.Port, b.Port), cmp.Compare(a.Protocol, b.Protocol))
}

// ServiceStats is one service port as a node's maps hold it, with what the
// datapath counted for it.
type ServiceStats struct {
	dataplane.Service
	// Connections counts the new connections sent to each backend since it
	// was programmed: connects and unconnected UDP sends balanced by the
	// socket programs, and flows tc balanced from outside. A backend that
	// was never chosen has no entry.
	Connections map[netip.AddrPort]uint64
}

// servicesOf turns map state back into the dataplane's model.
func (st *mapState) servicesOf(nodeName string) []dataplane.Service {
	stats := st.statsOf(nodeName, nil)
	out := make([]dataplane.Service, len(stats))
	for i, s := range stats {
		out[i] = s.Service
	}
	return out
}

// statsOf is servicesOf with the connection counts of conns (backend id ->
// count) attached.
func (st *mapState) statsOf(nodeName string, conns map[uint32]uint64) []ServiceStats {
	byID := map[uint32]*ServiceStats{}
	get := func(id uint32) *ServiceStats {
		s := byID[id]
		if s == nil {
			s = &ServiceStats{Service: dataplane.Service{Key: serviceKeyOf(st.names[id])}}
			byID[id] = s
		}
		return s
	}
	for k, v := range st.services {
		if k.BackendSlot != 0 {
			continue
		}
		s := get(v.SvcId)
		port := bpf.PortFromNative(k.Dport)
		addr := bpf.AddrFromNative(k.Address)
		s.AffinityTimeout = time.Duration(v.AffinityTimeout) * time.Second
		if v.Flags&bpf.SvcFlagLocal != 0 {
			s.ExternalPolicyLocal = true // only external frontends carry it
		}
		switch {
		case v.Flags&bpf.SvcFlagNodePort != 0:
			s.NodePort = port
		case v.Flags&bpf.SvcFlagExtIP != 0:
			s.ExternalIPs = append(s.ExternalIPs, addr)
		case v.Flags&bpf.SvcFlagExternal != 0:
			s.LoadBalancerIPs = append(s.LoadBalancerIPs, addr)
		default:
			s.ClusterIP, s.Port = addr, port
		}
	}
	ids := make([]uint32, 0, len(st.backends))
	for id := range st.backends {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		b := st.backends[id]
		s, ok := byID[b.SvcId]
		if !ok {
			continue
		}
		be := dataplane.Backend{
			Addr:  bpf.AddrFromNative(b.Address),
			Port:  bpf.PortFromNative(b.Port),
			Local: b.Flags&bpf.BackendFlagLocal != 0,
			Ready: b.Flags&bpf.BackendFlagServing != 0,
		}
		if be.Local {
			be.NodeName = nodeName
		}
		s.Backends = append(s.Backends, be)
		if n, ok := conns[id]; ok {
			if s.Connections == nil {
				s.Connections = map[netip.AddrPort]uint64{}
			}
			s.Connections[netip.AddrPortFrom(be.Addr, be.Port)] = n
		}
	}
	out := make([]ServiceStats, 0, len(byID))
	for _, s := range byID {
		slices.SortFunc(s.LoadBalancerIPs, netip.Addr.Compare)
		slices.SortFunc(s.ExternalIPs, netip.Addr.Compare)
		out = append(out, *s)
	}
	slices.SortFunc(out, func(a, b ServiceStats) int { return compareKeys(a.Key, b.Key) })
	return out
}

// readConnections sums the per-CPU connection counts of every backend, in
// batches: a few system calls for thousands of backends.
func readConnections(m *ebpf.Map) (map[uint32]uint64, error) {
	cpus, err := ebpf.PossibleCPU()
	if err != nil {
		return nil, fmt.Errorf("read connection counters: %w", err)
	}
	out := map[uint32]uint64{}
	keys := make([]uint32, countChunk)
	perCPU := make([]uint64, countChunk*cpus)
	var cursor ebpf.MapBatchCursor
	for {
		n, err := m.BatchLookup(&cursor, keys, perCPU, nil)
		for i, id := range keys[:n] {
			var sum uint64
			for _, c := range perCPU[i*cpus : (i+1)*cpus] {
				sum += c
			}
			out[id] = sum
		}
		switch {
		case errors.Is(err, ebpf.ErrKeyNotExist):
			return out, nil
		case err != nil:
			return nil, fmt.Errorf("read connection counters: %w", err)
		}
	}
}

// dropConnections deletes the counters of the backends for which drop is
// true. Only backends that got a connection have one, so the ids are
// looked up first: a batch delete stops at the first missing key.
func dropConnections(m *ebpf.Map, drop func(id uint32) bool) error {
	conns, err := readConnections(m)
	if err != nil {
		return err
	}
	var dead []uint32
	for id := range conns {
		if drop(id) {
			dead = append(dead, id)
		}
	}
	if err := deleteBatch(m, dead); err != nil {
		return fmt.Errorf("delete connection counters: %w", err)
	}
	return nil
}

// writeBatch writes keys and values in one BPF_MAP_UPDATE_BATCH, or one by
// one where the map type lacks batch operations.
func writeBatch[K comparable, V any](m *ebpf.Map, keys []K, vals []V) error {
	if len(keys) == 0 {
		return nil
	}
	_, err := m.BatchUpdate(keys, vals, nil)
	if !errors.Is(err, ebpf.ErrNotSupported) {
		return err
	}
	for i := range keys {
		if err := m.Put(keys[i], vals[i]); err != nil {
			return err
		}
	}
	return nil
}

// deleteBatch deletes keys in batches; keys already gone are skipped.
func deleteBatch[K comparable](m *ebpf.Map, keys []K) error {
	for len(keys) > 0 {
		n, err := m.BatchDelete(keys, nil)
		if err == nil {
			return nil
		}
		if !errors.Is(err, ebpf.ErrKeyNotExist) && !errors.Is(err, ebpf.ErrNotSupported) {
			return err
		}
		// The batch stopped at keys[n]: delete it alone and go on.
		if n >= len(keys) {
			return nil
		}
		if err := m.Delete(keys[n]); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return err
		}
		keys = keys[n+1:]
	}
	return nil
}
