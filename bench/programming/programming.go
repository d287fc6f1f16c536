// Package programming measures how long each dataplane takes to program
// services, and what the programmed state costs in memory: `skep-bench sync`.
//
// Each measurement drives a dataplane package directly, the way the agent
// does, in a place of its own that is removed afterwards: the eBPF
// dataplane with its own pin directory and cgroup, the iptables and
// nftables ones in their own network namespaces. Nothing carries over from one measurement to the
// next, so every full sync starts cold.
package programming

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	ciliumebpf "github.com/cilium/ebpf"

	"github.com/skep-io/skep/agent/dataplane"
	"github.com/skep-io/skep/agent/dataplane/dataplanetest"
	"github.com/skep-io/skep/agent/dataplane/ebpf"
	"github.com/skep-io/skep/agent/dataplane/iptables"
	"github.com/skep-io/skep/agent/dataplane/nftables"
	"github.com/skep-io/skep/bench/report"
)

// Bench is the name of this benchmark in reports.
const Bench = "sync"

// Modes are the dataplanes measured, the reference first.
var Modes = dataplane.Modes

// Metrics of one measurement.
const (
	// MetricSync is the time from a cold start to the first Sync carrying
	// every service: New (load and attach programs, or check the iptables
	// tools, or nft) plus the full Sync.
	MetricSync = "sync_s"
	// MetricChange is the Sync that follows a change of one service's
	// backends among all of them.
	MetricChange = "change_ms"
	// MetricApply is the incremental sync of one endpoint change: Apply
	// given only the changed Service, the way the agent programs a change
	// (eBPF writes that Service's entries; iptables and nftables make
	// kube-proxy's partial sync). The median of applyRepeats.
	MetricApply = "apply_ms"
	// MetricHeap is the Go heap the dataplane keeps after the syncs.
	MetricHeap = "heap_MiB"
	// MetricMapMemory is what the kernel charges for the eBPF maps.
	MetricMapMemory = "bpf_map_MiB"
	// MetricRules is the number of iptables rules in the namespace.
	MetricRules = "iptables_rules"
	// MetricNftRules and MetricNftElements are the rules and the map and
	// set elements of the nftables table: where iptables has a rule per
	// service address, nftables has an element.
	MetricNftRules    = "nft_rules"
	MetricNftElements = "nft_elements"
)

// Config is what to measure.
type Config struct {
	Sizes  []int    // numbers of services; default 1,000, 10,000, 30,000
	Rounds int      // default 3
	Modes  []string // default Modes
	// CgroupRoot is the cgroup2 hierarchy the eBPF socket programs attach
	// below; default /sys/fs/cgroup/unified.
	CgroupRoot string
	// PinRoot is the bpffs directory pin directories are made in; default
	// /sys/fs/bpf.
	PinRoot string
	// Timeout bounds one measurement; default 30 minutes (iptables takes
	// minutes at 30,000 services).
	Timeout time.Duration
	// Progress receives one line per measurement; nil: none.
	Progress io.Writer
	Logger   *slog.Logger
}

func (c *Config) setDefaults() error {
	if len(c.Sizes) == 0 {
		c.Sizes = []int{1000, 10000, 30000}
	}
	for _, n := range c.Sizes {
		// Addresses are 10.96.x.y and 10.244-245.x.y: 16 bits of index.
		if n < 1 || n > 65535 {
			return fmt.Errorf("size %d: 1 to 65,535 services", n)
		}
	}
	if c.Rounds == 0 {
		c.Rounds = 3
	}
	if len(c.Modes) == 0 {
		c.Modes = Modes
	}
	for _, m := range c.Modes {
		if err := dataplane.CheckMode(m); err != nil {
			return err
		}
	}
	if c.CgroupRoot == "" {
		c.CgroupRoot = "/sys/fs/cgroup/unified"
	}
	if c.PinRoot == "" {
		c.PinRoot = "/sys/fs/bpf"
	}
	if c.Timeout == 0 {
		c.Timeout = 30 * time.Minute
	}
	if c.Progress == nil {
		c.Progress = io.Discard
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// Run measures every size in every mode, the modes interleaved within each
// round, and adds the samples to rep.
func Run(ctx context.Context, cfg Config, rep *report.Report) error {
	if err := cfg.setDefaults(); err != nil {
		return err
	}
	for _, n := range cfg.Sizes {
		services := dataplanetest.Services(n)
		err := report.Interleave(cfg.Rounds, cfg.Modes, func(round int, mode string) error {
			mctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
			defer cancel()
			m, err := measure(mctx, cfg, mode, services)
			if err != nil {
				return fmt.Errorf("%d services: %w", n, err)
			}
			add := func(metric, unit string, v float64) {
				rep.Add(report.Sample{Bench: Bench, Variant: mode, N: n, Metric: metric, Unit: unit, Round: round, Value: v})
			}
			add(MetricSync, "s", m.sync.Seconds())
			add(MetricChange, "ms", float64(m.change)/float64(time.Millisecond))
			add(MetricApply, "ms", float64(m.apply)/float64(time.Millisecond))
			add(MetricHeap, "MiB", float64(m.heap)/(1<<20))
			switch mode {
			case "ebpf":
				add(MetricMapMemory, "MiB", float64(m.kernelBytes)/(1<<20))
			case "iptables":
				add(MetricRules, "rules", float64(m.rules))
			case "nftables":
				add(MetricNftRules, "rules", float64(m.rules))
				add(MetricNftElements, "elements", float64(m.elements))
			}
			fmt.Fprintf(cfg.Progress, "sync: round %d %-8s %6d services: sync %s, one change %s (full state), %s (incremental), heap %.1f MiB%s\n",
				round, mode, n, m.sync.Round(time.Millisecond), m.change.Round(10*time.Microsecond), m.apply.Round(time.Microsecond),
				float64(m.heap)/(1<<20), m.kernelNote(mode))
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// measurement is one cold start, sync and change in one mode.
type measurement struct {
	sync, change time.Duration
	apply        time.Duration // median of applyRepeats incremental changes
	heap         uint64        // bytes of Go heap the dataplane holds
	kernelBytes  uint64        // eBPF: map memory the kernel charges
	rules        int           // iptables, nftables: rules in the namespace
	elements     int           // nftables: map and set elements
}

func (m measurement) kernelNote(mode string) string {
	switch mode {
	case "ebpf":
		return fmt.Sprintf(", maps %.1f MiB", float64(m.kernelBytes)/(1<<20))
	case "nftables":
		return fmt.Sprintf(", %d rules, %d elements", m.rules, m.elements)
	}
	return fmt.Sprintf(", %d rules", m.rules)
}

// changedKey is the service whose backend changes: the middle one, where
// neither the first nor the last position flatters a dataplane.
func changedKey(n int) dataplane.ServiceKey {
	return dataplanetest.Key(n / 2)
}

// withOneChange returns services with the second backend of changedKey
// moved to 10.246.0.1, sharing everything else.
func withOneChange(services map[dataplane.ServiceKey]*dataplane.Service) map[dataplane.ServiceKey]*dataplane.Service {
	out := make(map[dataplane.ServiceKey]*dataplane.Service, len(services))
	for k, v := range services {
		out[k] = v
	}
	key := changedKey(len(services))
	changed := *services[key]
	changed.Backends = []dataplane.Backend{changed.Backends[0], {Addr: netip.MustParseAddr("10.246.0.1"), Port: 8080, Ready: true}}
	out[key] = &changed
	return out
}

// syncer is what measure needs of a dataplane.
type syncer interface {
	Sync(ctx context.Context, services map[dataplane.ServiceKey]*dataplane.Service) error
	Apply(ctx context.Context, changed map[dataplane.ServiceKey]*dataplane.Service) error
}

// applyRepeats is how many incremental changes are timed; their median is
// reported, since one takes well under a millisecond in eBPF.
const applyRepeats = 11

func measure(ctx context.Context, cfg Config, mode string, services map[dataplane.ServiceKey]*dataplane.Service) (m measurement, err error) {
	changed := withOneChange(services)
	suffix := randomSuffix()

	// The heap is measured from here: whatever the dataplane allocates
	// and keeps is its own state (services were made before).
	base := liveHeap()
	var (
		dp     syncer
		kernel func() error
		start  time.Time // set by each mode after its place is made
	)
	switch mode {
	case "ebpf":
		var place *ebpfPlace
		if place, err = newEBPFPlace(cfg, suffix); err != nil {
			return m, err
		}
		defer func() { err = errors.Join(err, place.remove()) }()
		start = time.Now()
		var d *ebpf.Dataplane
		if d, err = ebpf.New(ctx, place.config(cfg.Logger)); err != nil {
			return m, err
		}
		defer func() { err = errors.Join(err, d.Cleanup(context.WithoutCancel(ctx))) }()
		dp = d
		kernel = func() (err error) { m.kernelBytes, err = mapMemory(place.pinDir()); return err }
	case "iptables":
		var ns string
		if ns, err = newNetns(ctx, "skep-bench-"+suffix); err != nil {
			return m, err
		}
		defer func() { err = errors.Join(err, deleteNetns("skep-bench-"+suffix)) }()
		start = time.Now()
		var p *iptables.Proxier
		if p, err = iptables.New(ctx, iptables.Config{NodeName: "bench", NetNS: ns, MinSyncInterval: time.Nanosecond, Logger: cfg.Logger}); err != nil {
			return m, err
		}
		// Deleting the namespace drops its rules at once; the proxier's
		// own Cleanup, a restore deleting 200,000 rules one chain at a
		// time, would take minutes at 30,000 services.
		defer func() { err = errors.Join(err, p.Close()) }()
		dp = p
		kernel = func() (err error) { m.rules, err = countRules(ctx, ns); return err }
	case "nftables":
		var ns string
		if ns, err = newNetns(ctx, "skep-bench-"+suffix); err != nil {
			return m, err
		}
		// Deleting the namespace deletes the table.
		defer func() { err = errors.Join(err, deleteNetns("skep-bench-"+suffix)) }()
		start = time.Now()
		var p *nftables.Proxier
		if p, err = nftables.New(ctx, nftables.Config{NodeName: "bench", NetNS: ns, MinSyncInterval: time.Nanosecond, Logger: cfg.Logger}); err != nil {
			return m, err
		}
		defer func() { err = errors.Join(err, p.Close()) }()
		dp = p
		kernel = func() (err error) { m.rules, m.elements, err = countNft(ctx, ns); return err }
	default:
		return m, dataplane.CheckMode(mode)
	}
	if err = dp.Sync(ctx, services); err != nil {
		return m, fmt.Errorf("full sync: %w", err)
	}
	m.sync = time.Since(start)

	start = time.Now()
	if err = dp.Sync(ctx, changed); err != nil {
		return m, fmt.Errorf("sync one change: %w", err)
	}
	m.change = time.Since(start)

	// The same backend moves back and forth, given as the one changed
	// Service.
	key := changedKey(len(services))
	times := make([]time.Duration, applyRepeats)
	for i := range times {
		next := services[key] // the change above is undone first
		if i%2 == 1 {
			next = changed[key]
		}
		start = time.Now()
		if err = dp.Apply(ctx, map[dataplane.ServiceKey]*dataplane.Service{key: next}); err != nil {
			return m, fmt.Errorf("apply one change: %w", err)
		}
		times[i] = time.Since(start)
	}
	slices.Sort(times)
	m.apply = times[len(times)/2]

	if heap := liveHeap(); heap > base {
		m.heap = heap - base
	}
	err = kernel()
	return m, err
}

// liveHeap is the heap in use after a full collection: what is reachable.
func liveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// ebpfPlace is a pin root and a cgroup of one measurement's own.
type ebpfPlace struct {
	pinRoot, cgroup string
}

func newEBPFPlace(cfg Config, suffix string) (*ebpfPlace, error) {
	p := &ebpfPlace{
		pinRoot: filepath.Join(cfg.PinRoot, "skep-bench-"+suffix),
		cgroup:  filepath.Join(cfg.CgroupRoot, "skep-bench-"+suffix),
	}
	if err := os.Mkdir(p.cgroup, 0o755); err != nil {
		return nil, fmt.Errorf("create cgroup for the socket programs: %w", err)
	}
	return p, nil
}

func (p *ebpfPlace) config(log *slog.Logger) ebpf.Config {
	return ebpf.Config{NodeName: "bench", PinRoot: p.pinRoot, CgroupPath: p.cgroup, Logger: log,
		NodeIPs: []netip.Addr{netip.MustParseAddr("127.0.0.1")}}
}

func (p *ebpfPlace) pinDir() string { return filepath.Join(p.pinRoot, "bench") }

// remove deletes the cgroup (its programs were detached by Cleanup; a
// cgroup may take a moment to go once the last link is gone) and whatever
// of the pin root is left.
func (p *ebpfPlace) remove() error {
	var errs []error
	if err := os.RemoveAll(p.pinRoot); err != nil {
		errs = append(errs, fmt.Errorf("remove pin root: %w", err))
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := os.Remove(p.cgroup)
		if err == nil || errors.Is(err, os.ErrNotExist) {
			break
		}
		if time.Now().After(deadline) {
			errs = append(errs, fmt.Errorf("remove cgroup: %w", err))
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	return errors.Join(errs...)
}

// mapMemory adds up the memory the kernel charges for the maps pinned in
// dir (links are pinned there too and are skipped).
func mapMemory(dir string) (uint64, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0, fmt.Errorf("read pin directory: %w", err)
	}
	var total uint64
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "link_") {
			continue
		}
		m, err := ciliumebpf.LoadPinnedMap(filepath.Join(dir, e.Name()), &ciliumebpf.LoadPinOptions{ReadOnly: true})
		if err != nil {
			continue // not a map
		}
		info, err := m.Info()
		m.Close()
		if err != nil {
			return 0, fmt.Errorf("map info of %s: %w", e.Name(), err)
		}
		bytes, ok := info.Memlock()
		if !ok {
			return 0, fmt.Errorf("map %s: the kernel reports no memlock", e.Name())
		}
		total += bytes
	}
	return total, nil
}

// newNetns makes an empty network namespace with loopback up and returns
// its path.
func newNetns(ctx context.Context, name string) (string, error) {
	if out, err := exec.CommandContext(ctx, "ip", "netns", "add", name).CombinedOutput(); err != nil {
		return "", fmt.Errorf("ip netns add %s: %w: %s", name, err, strings.TrimSpace(string(out)))
	}
	path := "/run/netns/" + name
	if out, err := exec.CommandContext(ctx, "nsenter", "--net="+path, "ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
		return path, errors.Join(fmt.Errorf("loopback up in %s: %w: %s", name, err, strings.TrimSpace(string(out))), deleteNetns(name))
	}
	return path, nil
}

func deleteNetns(name string) error {
	if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns del %s: %w: %s", name, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// countRules counts the rules (-A lines) of every table in the namespace.
func countRules(ctx context.Context, netnsPath string) (int, error) {
	cmd := exec.CommandContext(ctx, "nsenter", "--net="+netnsPath, "iptables-save")
	out, err := cmd.StdoutPipe()
	if err != nil {
		return 0, err
	}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("iptables-save: %w", err)
	}
	n := 0
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "-A ") {
			n++
		}
	}
	if err := cmd.Wait(); err != nil {
		return 0, fmt.Errorf("iptables-save: %w", err)
	}
	return n, sc.Err()
}

// countNft counts the rules and the map and set elements of every table
// in the namespace.
func countNft(ctx context.Context, netnsPath string) (rules, elements int, err error) {
	out, err := exec.CommandContext(ctx, "nsenter", "--net="+netnsPath, "nft", "-j", "list", "ruleset").Output()
	if err != nil {
		return 0, 0, fmt.Errorf("nft list ruleset: %w", err)
	}
	var listing struct {
		Nftables []struct {
			Rule *struct{}
			Map  *struct{ Elem []json.RawMessage }
			Set  *struct{ Elem []json.RawMessage }
		}
	}
	if err := json.Unmarshal(out, &listing); err != nil {
		return 0, 0, fmt.Errorf("decode nft list ruleset: %w", err)
	}
	for _, o := range listing.Nftables {
		switch {
		case o.Rule != nil:
			rules++
		case o.Map != nil:
			elements += len(o.Map.Elem)
		case o.Set != nil:
			elements += len(o.Set.Elem)
		}
	}
	return rules, elements, nil
}

func randomSuffix() string {
	b := make([]byte, 4)
	rand.Read(b)
	return hex.EncodeToString(b)
}
