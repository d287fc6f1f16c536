package ebpf

import (
	"net/netip"
	"testing"

	"github.com/skep-io/skep/agent/dataplane"
	"github.com/skep-io/skep/agent/dataplane/dataplanetest"
)

// BenchmarkSync10000 programs 10,000 services of two backends into empty
// maps: the full sync of an agent starting on a fresh node.
func BenchmarkSync10000(b *testing.B) {
	cfg := testConfig(b)
	d := newDataplane(b, cfg)
	svcs := dataplanetest.Services(10000)
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
	svcs := dataplanetest.Services(10000)
	if err := d.Sync(b.Context(), svcs); err != nil {
		b.Fatalf("Sync: %v", err)
	}
	key := dataplanetest.Key(42)
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

// BenchmarkApplyOneChange10000 and 30000 change the backends of one service
// among N by Apply, given only that service: the cost must not grow with N.
func BenchmarkApplyOneChange10000(b *testing.B) { benchmarkApplyOneChange(b, 10000) }
func BenchmarkApplyOneChange30000(b *testing.B) { benchmarkApplyOneChange(b, 30000) }

func benchmarkApplyOneChange(b *testing.B, n int) {
	cfg := testConfig(b)
	d := newDataplane(b, cfg)
	svcs := dataplanetest.Services(n)
	if err := d.Sync(b.Context(), svcs); err != nil {
		b.Fatalf("Sync: %v", err)
	}
	key := dataplanetest.Key(n / 2)
	orig := svcs[key]
	changed := *orig
	changed.Backends = append([]dataplane.Backend{}, orig.Backends...)
	changed.Backends[1].Addr = netip.MustParseAddr("10.246.0.42")
	i := 0
	for b.Loop() {
		next := orig
		if i%2 == 0 {
			next = &changed
		}
		i++
		if err := d.Apply(b.Context(), map[dataplane.ServiceKey]*dataplane.Service{key: next}); err != nil {
			b.Fatalf("Apply: %v", err)
		}
		if d.lastWrites != 3 {
			b.Fatalf("one-backend change wrote %d entries, want 3", d.lastWrites)
		}
	}
}
