package ebpf

import (
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/skep-io/skep/agent/dataplane"
)

// connectionsOf returns the counts ReadServices reports for key.
func connectionsOf(t *testing.T, cfg Config, key dataplane.ServiceKey) map[netip.AddrPort]uint64 {
	t.Helper()
	stats, err := ReadServices(cfg)
	if err != nil {
		t.Fatalf("ReadServices: %v", err)
	}
	for _, s := range stats {
		if s.Key == key {
			return s.Connections
		}
	}
	t.Fatalf("ReadServices has no %v: %+v", key, stats)
	return nil
}

func sum(m map[netip.AddrPort]uint64) uint64 {
	var n uint64
	for _, v := range m {
		n += v
	}
	return n
}

// TestConnectionCounters connects to a ClusterIP N times and sends M
// unconnected UDP datagrams: the counters of each backend say how many of
// them reached it, exactly as the clients saw it, and a removed backend's
// counter goes with it.
func TestConnectionCounters(t *testing.T) {
	cfg := testConfig(t)
	d := newDataplane(t, cfg)
	backends := threeBackends(t, "18087")
	tcp := &dataplane.Service{Key: tcpKey, ClusterIP: clusterIP, Port: 80, Backends: backends}
	udp := &dataplane.Service{Key: udpKey, ClusterIP: clusterIP, Port: 53, Backends: backends}
	if err := d.Sync(t.Context(), services(tcp, udp)); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if got := connectionsOf(t, cfg, tcpKey); len(got) != 0 {
		t.Errorf("counters before any connection: %v, want none", got)
	}

	addrOf := map[string]netip.AddrPort{}
	for i, b := range backends {
		addrOf["b"+string(rune('2'+i))] = netip.AddrPortFrom(b.Addr, b.Port)
	}
	for _, tc := range []struct {
		key  dataplane.ServiceKey
		spec clientSpec
	}{
		{tcpKey, clientSpec{Mode: "tcp", Addr: "10.96.0.10:80", Count: 30}},
		{udpKey, clientSpec{Mode: "udp", Addr: "10.96.0.10:53", Count: 20}},
	} {
		res := runClients(t, cfg.CgroupPath, tc.spec)
		want := map[netip.AddrPort]uint64{}
		for _, r := range res {
			if r.Err != "" {
				t.Fatalf("%s client: %s", tc.spec.Mode, r.Err)
			}
			want[addrOf[r.Backend]]++
		}
		got := connectionsOf(t, cfg, tc.key)
		if sum(got) != uint64(tc.spec.Count) {
			t.Errorf("%v: counters %v sum to %d after %d connections", tc.key, got, sum(got), tc.spec.Count)
		}
		for a, n := range want {
			if got[a] != n {
				t.Errorf("%v: backend %v counted %d, the clients reached it %d times", tc.key, a, got[a], n)
			}
		}
	}

	// The same numbers through the running Dataplane.
	stats, err := d.ServiceStats(t.Context())
	if err != nil {
		t.Fatalf("ServiceStats: %v", err)
	}
	var total uint64
	for _, s := range stats {
		total += sum(s.Connections)
	}
	if total != 50 {
		t.Errorf("ServiceStats counts %d connections over all services, want 50", total)
	}

	gone := netip.AddrPortFrom(backends[0].Addr, backends[0].Port)
	tcp.Backends, udp.Backends = backends[1:], backends[1:]
	if err := d.Sync(t.Context(), services(tcp, udp)); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if n, ok := connectionsOf(t, cfg, tcpKey)[gone]; ok {
		t.Errorf("removed backend %v still has a counter (%d)", gone, n)
	}
	var id uint32
	var perCPU []uint64
	it := d.maps().conns.Iterate()
	for it.Next(&id, &perCPU) {
		if _, ok := d.state.backends[id]; !ok {
			t.Errorf("counter of removed backend id %d left in the map", id)
		}
	}
}

// TestTCConnectionCounters: tc counts a flow once, when it creates it, not
// every packet of it.
func TestTCConnectionCounters(t *testing.T) {
	d := tcDataplane(t)
	frontend := netip.AddrPortFrom(nodeIP, 30080)
	const flows = 12
	for sport := uint16(50000); sport < 50000+flows; sport++ {
		client := netip.AddrPortFrom(netip.MustParseAddr("198.18.13.1"), sport)
		for range 3 {
			if ret, _ := run(t, d.objs.TC.Tc4Ingress, packet(protoTCP, client, frontend, "x")); ret != actOK && ret != actRedirect {
				t.Fatalf("verdict %d for a NodePort packet", int32(ret))
			}
		}
	}
	stats, err := d.ServiceStats(t.Context())
	if err != nil {
		t.Fatalf("ServiceStats: %v", err)
	}
	key := dataplane.ServiceKey{Namespace: "tc", Name: "np", Protocol: dataplane.TCP}
	for _, s := range stats {
		var want uint64
		if s.Key == key {
			want = flows
		}
		if got := sum(s.Connections); got != want {
			t.Errorf("%v: %d connections counted (%v), want %d", s.Key, got, s.Connections, want)
		}
	}
}

// TestStaleCounterDroppedAtStart: a count left for a backend id the maps
// no longer hold (a connection counted while its backend was removed) is
// dropped when a Dataplane takes the pins over, so that the id, handed out
// again, starts from zero.
func TestStaleCounterDroppedAtStart(t *testing.T) {
	cfg := testConfig(t)
	d := newDataplane(t, cfg)
	svc := &dataplane.Service{Key: tcpKey, ClusterIP: clusterIP, Port: 80, Backends: threeBackends(t, "18088")}
	if err := d.Sync(t.Context(), services(svc)); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	cpus, err := ebpf.PossibleCPU()
	if err != nil {
		t.Fatal(err)
	}
	counts := make([]uint64, cpus)
	counts[0] = 7
	live := uint32(0)
	for id := range d.state.backends {
		live = id
	}
	for _, id := range []uint32{live, 9999} {
		if err := d.maps().conns.Put(id, counts); err != nil {
			t.Fatalf("write counter: %v", err)
		}
	}
	d.Close()

	d2 := newDataplane(t, cfg)
	got, err := readConnections(d2.maps().conns)
	if err != nil {
		t.Fatalf("readConnections: %v", err)
	}
	if want := map[uint32]uint64{live: 7}; len(got) != 1 || got[live] != 7 {
		t.Errorf("counters after restart: %v, want %v (the live backend's kept, the stale one dropped)", got, want)
	}
}
