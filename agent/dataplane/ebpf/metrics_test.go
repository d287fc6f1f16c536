package ebpf

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/skep-io/skep/bpf"
)

// gather collects reg into name -> label signature -> metric.
func gather(t *testing.T, reg *prometheus.Registry) map[string]map[string]*dto.Metric {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	out := map[string]map[string]*dto.Metric{}
	for _, mf := range mfs {
		byLabels := map[string]*dto.Metric{}
		for _, m := range mf.Metric {
			var parts []string
			for _, l := range m.Label {
				parts = append(parts, l.GetName()+"="+l.GetValue())
			}
			byLabels[strings.Join(parts, ",")] = m
		}
		out[mf.GetName()] = byLabels
	}
	return out
}

func metric(t *testing.T, got map[string]map[string]*dto.Metric, name, labels string) *dto.Metric {
	t.Helper()
	m, ok := got[name][labels]
	if !ok {
		t.Fatalf("no %s{%s}; have %v", name, labels, got[name])
	}
	return m
}

// TestMetrics registers a real Dataplane's collectors, syncs, sends
// packets through tc and reads the metrics back.
func TestMetrics(t *testing.T) {
	cfg := testConfig(t)
	cfg.NodeIPs = []netip.Addr{nodeIP}
	d := newDataplane(t, cfg)
	reg := prometheus.NewRegistry()
	for _, c := range d.Collectors() {
		if err := reg.Register(c); err != nil {
			t.Fatalf("register: %v", err)
		}
	}

	got := gather(t, reg)
	for _, kind := range []string{"full", "partial"} {
		if n := metric(t, got, "skep_dataplane_sync_duration_seconds", "dataplane=ebpf,sync="+kind).Histogram.GetSampleCount(); n != 0 {
			t.Errorf("%s syncs before any Sync: %d", kind, n)
		}
	}
	if v := metric(t, got, "skep_dataplane_map_entries", "dataplane=ebpf,map=services").Gauge.GetValue(); v != 0 {
		t.Errorf("services map entries before any Sync: %v", v)
	}

	// The first Sync is full, the ones after it partial.
	for range 3 {
		if err := d.Sync(t.Context(), tcServices()); err != nil {
			t.Fatalf("Sync: %v", err)
		}
	}
	// Five flows to a NodePort: a forward and a reverse conntrack entry
	// each. One client of the affinity service: one affinity entry.
	for sport := uint16(51000); sport < 51005; sport++ {
		run(t, d.objs.TC.Tc4Ingress, packet(protoTCP, netip.AddrPortFrom(netip.MustParseAddr("198.18.14.1"), sport), netip.AddrPortFrom(nodeIP, 30080), ""))
	}
	run(t, d.objs.TC.Tc4Ingress, packet(protoTCP, ap("198.18.14.2:51000"), netip.AddrPortFrom(nodeIP, 30082), ""))

	got = gather(t, reg)
	full := metric(t, got, "skep_dataplane_sync_duration_seconds", "dataplane=ebpf,sync=full").Histogram
	partial := metric(t, got, "skep_dataplane_sync_duration_seconds", "dataplane=ebpf,sync=partial").Histogram
	if full.GetSampleCount() != 1 || partial.GetSampleCount() != 2 {
		t.Errorf("syncs observed: %d full, %d partial; want 1 and 2", full.GetSampleCount(), partial.GetSampleCount())
	}
	if full.GetSampleSum() <= 0 || full.GetSampleSum() > 10 {
		t.Errorf("full sync took %vs in the histogram", full.GetSampleSum())
	}
	for _, tc := range []struct {
		name     string
		entries  int
		capacity float64
	}{
		{"services", len(d.state.services), 262144},
		{"backends", len(d.state.backends), 131072},
		{"affinity", 1, 65536},
		{"conntrack", 12, 131072}, // 5 NodePort flows and the affinity one, both directions
		{"revnat", 0, 131072},
	} {
		labels := "dataplane=ebpf,map=" + tc.name
		if v := metric(t, got, "skep_dataplane_map_entries", labels).Gauge.GetValue(); v != float64(tc.entries) {
			t.Errorf("skep_dataplane_map_entries{%s} = %v, want %d", labels, v, tc.entries)
		}
		if v := metric(t, got, "skep_dataplane_map_capacity", labels).Gauge.GetValue(); v != tc.capacity {
			t.Errorf("skep_dataplane_map_capacity{%s} = %v, want %v", labels, v, tc.capacity)
		}
	}
	if len(d.state.services) < 10 || len(d.state.backends) != 10 {
		t.Fatalf("tcServices programmed %d service entries and %d backends; the test expects more than 10 and 10",
			len(d.state.services), len(d.state.backends))
	}
	if v := metric(t, got, "skep_dataplane_sync_errors_total", "dataplane=ebpf").Counter.GetValue(); v != 0 {
		t.Errorf("sync errors after good syncs: %v", v)
	}

	// A Sync that fails is counted, and a closed Dataplane reports no
	// maps rather than failing the scrape.
	d.Close()
	if err := d.Sync(t.Context(), tcServices()); err == nil {
		t.Fatal("Sync after Close succeeded")
	}
	got = gather(t, reg)
	if v := metric(t, got, "skep_dataplane_sync_errors_total", "dataplane=ebpf").Counter.GetValue(); v != 1 {
		t.Errorf("sync errors after a failed Sync: %v, want 1", v)
	}
	if m := got["skep_dataplane_map_entries"]; len(m) != 0 {
		t.Errorf("map entries after Close: %v, want none", m)
	}
}

// BenchmarkCountConntrack counts a conntrack map of 50,000 entries, what a
// scrape of a busy node costs.
func BenchmarkCountConntrack(b *testing.B) {
	cfg := testConfig(b)
	d := newDataplane(b, cfg)
	m := d.maps().ct
	const n = 50000
	keys := make([]bpf.CT4Key, n)
	for i := range keys {
		keys[i] = bpf.CT4Key{Saddr: uint32(i), Proto: protoTCP}
	}
	vals := make([]bpf.CT4Entry, n)
	if _, err := m.BatchUpdate(keys, vals, nil); err != nil {
		b.Fatalf("fill conntrack: %v", err)
	}
	for b.Loop() {
		got, err := countEntries[bpf.CT4Key, bpf.CT4Entry](m)
		if err != nil || got != n {
			b.Fatalf("count: %d, %v; want %d", got, err, n)
		}
	}
}
