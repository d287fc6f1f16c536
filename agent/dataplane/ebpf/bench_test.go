package ebpf

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/skep-io/skep/agent/dataplane"
)

// manyServices makes n ClusterIP services of two remote backends each.
func manyServices(n int) map[dataplane.ServiceKey]*dataplane.Service {
	out := make(map[dataplane.ServiceKey]*dataplane.Service, n)
	for i := 0; i < n; i++ {
		key := dataplane.ServiceKey{Namespace: "bench", Name: fmt.Sprintf("svc-%d", i), Protocol: dataplane.TCP}
		out[key] = &dataplane.Service{
			Key:       key,
			ClusterIP: netip.AddrFrom4([4]byte{10, 96, byte(i >> 8), byte(i)}),
			Port:      80,
			Backends: []dataplane.Backend{
				{Addr: netip.AddrFrom4([4]byte{10, 244, byte(i >> 8), byte(i)}), Port: 8080, Ready: true},
				{Addr: netip.AddrFrom4([4]byte{10, 245, byte(i >> 8), byte(i)}), Port: 8080, Ready: true},
			},
		}
	}
	return out
}

// BenchmarkSync10000 programs 10,000 services of two backends into empty
// maps: the full sync of an agent starting on a fresh node.
func BenchmarkSync10000(b *testing.B) {
	cfg := testConfig(b)
	d := newDataplane(b, cfg)
	svcs := manyServices(10000)
	empty := map[dataplane.ServiceKey]*dataplane.Service{}
	for b.Loop() {
		if err := d.Sync(b.Context(), svcs); err != nil {
			b.Fatalf("Sync: %v", err)
		}
		b.StopTimer()
		// Per service: a name, two backends, an entry and two slots.
		if d.lastWrites != 10000*6 {
			b.Fatalf("full sync wrote %d entries, want %d", d.lastWrites, 10000*6)
		}
		if err := d.Sync(b.Context(), empty); err != nil {
			b.Fatalf("Sync empty: %v", err)
		}
		b.StartTimer()
	}
}

// BenchmarkSyncOneChange10000 changes the backends of one service among
// 10,000: the writes must be a handful, not a resync.
func BenchmarkSyncOneChange10000(b *testing.B) {
	cfg := testConfig(b)
	d := newDataplane(b, cfg)
	svcs := manyServices(10000)
	if err := d.Sync(b.Context(), svcs); err != nil {
		b.Fatalf("Sync: %v", err)
	}
	key := dataplane.ServiceKey{Namespace: "bench", Name: "svc-42", Protocol: dataplane.TCP}
	orig := svcs[key]
	changed := *orig
	changed.Backends = append([]dataplane.Backend{}, orig.Backends...)
	changed.Backends[1].Addr = netip.MustParseAddr("10.246.0.42")
	i := 0
	for b.Loop() {
		if i%2 == 0 {
			svcs[key] = &changed
		} else {
			svcs[key] = orig
		}
		i++
		if err := d.Sync(b.Context(), svcs); err != nil {
			b.Fatalf("Sync: %v", err)
		}
		if d.lastWrites > 4 {
			b.Fatalf("one-backend change wrote %d entries", d.lastWrites)
		}
	}
}
