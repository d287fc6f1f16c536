package ebpf

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/skep-io/skep/bpf"
)

// Kinds of Sync, the "sync" label of the sync duration.
const (
	// syncFull compared against the maps read back whole: the first Sync
	// of a Dataplane, and the one after a failed write.
	syncFull = "full"
	// syncPartial compared against what the previous Sync wrote.
	syncPartial = "partial"
)

// metrics are the Prometheus metrics of one Dataplane.
type metrics struct {
	syncDuration *prometheus.HistogramVec
	syncErrors   prometheus.Counter
	maps         *mapCollector
	programs     *programCollector
}

func newMetrics(d *Dataplane) *metrics {
	labels := prometheus.Labels{"dataplane": "ebpf"}
	m := &metrics{
		syncDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "skep_dataplane_sync_duration_seconds",
			Help: "Time a successful Sync took to program the services into the maps. " +
				"sync=full compared against the maps read whole (the first Sync, or the one after a failed write), " +
				"sync=partial against what the previous Sync wrote.",
			ConstLabels: labels,
			Buckets:     prometheus.ExponentialBuckets(0.0001, 2, 16), // 100µs to 3.3s
		}, []string{"sync"}),
		syncErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name:        "skep_dataplane_sync_errors_total",
			Help:        "Syncs that failed. The next Sync reads the maps back and converges.",
			ConstLabels: labels,
		}),
		maps: &mapCollector{
			d: d,
			entries: prometheus.NewDesc("skep_dataplane_map_entries",
				"Entries in each eBPF map of the node, counted when scraped.", []string{"map"}, labels),
			capacity: prometheus.NewDesc("skep_dataplane_map_capacity",
				"Entries each eBPF map of the node can hold; the LRU maps evict their oldest beyond it.", []string{"map"}, labels),
		},
	}
	m.programs = &programCollector{
		d: d,
		runTime: prometheus.NewDesc("skep_bpf_program_run_time_seconds_total",
			"Time each attached eBPF program of the node ran, as the kernel counts it (run_time_ns); it grows only "+
				"while BPF statistics are enabled (kernel.bpf_stats_enabled=1 or the agent's --bpf-stats). Divided by "+
				"skep_bpf_program_runs_total over the same window: the cost of one run.", []string{"program"}, labels),
		runs: prometheus.NewDesc("skep_bpf_program_runs_total",
			"Runs of each attached eBPF program of the node counted by the kernel (run_cnt), while BPF statistics are enabled.",
			[]string{"program"}, labels),
	}
	// Both kinds are there from the start: a dashboard sees zero syncs
	// rather than no series.
	m.syncDuration.WithLabelValues(syncFull)
	m.syncDuration.WithLabelValues(syncPartial)
	return m
}

// Collectors returns the dataplane's Prometheus metrics, for the agent to
// register:
//
//	skep_dataplane_sync_duration_seconds{sync="full"|"partial"}  histogram
//	skep_dataplane_sync_errors_total                               counter
//	skep_dataplane_map_entries{map}                                gauge
//	skep_dataplane_map_capacity{map}                               gauge
//	skep_bpf_program_run_time_seconds_total{program}               counter
//	skep_bpf_program_runs_total{program}                           counter
//
// map is services, backends, affinity, conntrack or revnat; the entries
// are counted in the kernel at each scrape. program is the C name of an
// attached program (sock4_connect, sock4_sendmsg, sock4_recvmsg,
// sock4_getpeername, tc4_ingress, tc4_egress); its counters are the
// kernel's, read at each scrape, and grow only while BPF statistics are
// enabled. Every series carries
// dataplane="ebpf". After Close the map gauges are absent.
func (d *Dataplane) Collectors() []prometheus.Collector {
	return []prometheus.Collector{d.metrics.syncDuration, d.metrics.syncErrors, d.metrics.maps, d.metrics.programs}
}

// mapCollector counts the entries of the maps when scraped: the LRU maps
// change with traffic, not with Sync.
type mapCollector struct {
	d                 *Dataplane
	entries, capacity *prometheus.Desc
}

func (c *mapCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.entries
	ch <- c.capacity
}

func (c *mapCollector) Collect(ch chan<- prometheus.Metric) {
	maps, err := c.d.cloneCountedMaps()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.entries, err)
		return
	}
	for _, m := range maps {
		n, err := m.count(m.m)
		m.m.Close()
		if err != nil {
			ch <- prometheus.NewInvalidMetric(c.entries, fmt.Errorf("count entries of %s: %w", m.name, err))
			continue
		}
		ch <- prometheus.MustNewConstMetric(c.entries, prometheus.GaugeValue, float64(n), m.name)
		ch <- prometheus.MustNewConstMetric(c.capacity, prometheus.GaugeValue, float64(m.m.MaxEntries()), m.name)
	}
}

// programCollector reads the kernel's counters of the attached programs
// when scraped. A restarted agent loads new programs, whose counters
// start from zero: Prometheus sees a counter reset, as for any restart.
type programCollector struct {
	d             *Dataplane
	runTime, runs *prometheus.Desc
}

func (c *programCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.runTime
	ch <- c.runs
}

func (c *programCollector) Collect(ch chan<- prometheus.Metric) {
	stats, err := c.d.ProgramStats()
	if err != nil {
		if c.d.closed() {
			return
		}
		ch <- prometheus.NewInvalidMetric(c.runTime, err)
		return
	}
	for _, s := range stats {
		ch <- prometheus.MustNewConstMetric(c.runTime, prometheus.CounterValue, s.RunTime.Seconds(), s.Name)
		ch <- prometheus.MustNewConstMetric(c.runs, prometheus.CounterValue, float64(s.RunCount), s.Name)
	}
}

// closed reports whether Close ran.
func (d *Dataplane) closed() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.objs == nil
}

// countedMap is a map whose entries the metrics count.
type countedMap struct {
	name  string
	m     *ebpf.Map
	count func(*ebpf.Map) (int, error)
}

// cloneCountedMaps returns handles of their own on the counted maps, so
// that counting holds no lock Sync needs and survives a concurrent Close.
// It returns none once d is closed.
func (d *Dataplane) cloneCountedMaps() ([]countedMap, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.objs == nil {
		return nil, nil
	}
	maps := []countedMap{
		{"services", d.objs.Sock.Lb4Services, countEntries[bpf.LB4Key, bpf.LB4Service]},
		{"backends", d.objs.Sock.Lb4Backends, countEntries[uint32, bpf.LB4Backend]},
		{"affinity", d.objs.Sock.Lb4Affinity, countEntries[bpf.LB4AffinityKey, bpf.LB4AffinityVal]},
		{"conntrack", d.objs.TC.Lb4Ct, countEntries[bpf.CT4Key, bpf.CT4Entry]},
		{"revnat", d.objs.Sock.Sock4Revnat, countEntries[bpf.RevNATKey, bpf.RevNATVal]},
	}
	for i := range maps {
		c, err := maps[i].m.Clone()
		if err != nil {
			for _, m := range maps[:i] {
				m.m.Close()
			}
			return nil, fmt.Errorf("clone map %s: %w", maps[i].name, err)
		}
		maps[i].m = c
	}
	return maps, nil
}

// countChunk is how many entries one batch lookup reads; more than any
// hash bucket holds, which the kernel requires.
const countChunk = 4096

// countEntries counts the entries of a hash map in batches: a LRU map of
// 100k entries is a few dozen system calls instead of 100k.
func countEntries[K, V any](m *ebpf.Map) (int, error) {
	keys := make([]K, countChunk)
	vals := make([]V, countChunk)
	var (
		cursor ebpf.MapBatchCursor
		total  int
	)
	for {
		n, err := m.BatchLookup(&cursor, keys, vals, nil)
		total += n
		switch {
		case errors.Is(err, ebpf.ErrKeyNotExist):
			return total, nil
		case errors.Is(err, ebpf.ErrNotSupported):
			return countByIteration[K, V](m)
		case err != nil:
			return 0, err
		}
	}
}

func countByIteration[K, V any](m *ebpf.Map) (int, error) {
	var (
		k K
		v V
		n int
	)
	it := m.Iterate()
	for it.Next(&k, &v) {
		n++
	}
	return n, it.Err()
}
