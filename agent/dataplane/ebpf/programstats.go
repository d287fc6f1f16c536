package ebpf

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/skep-io/skep/bpf"
)

// ProgramStats is what the kernel counted for one of the dataplane's
// programs while BPF statistics were enabled (kernel.bpf_stats_enabled=1,
// or a process holding EnableStats): how often it ran and how long it ran
// in total. Only runs while statistics are enabled are counted, so a cost
// per run is taken from the difference of two readings (Sub) over a
// window in which they were enabled throughout.
type ProgramStats struct {
	// Name is the program's C function name: sock4_connect, tc4_ingress...
	Name     string
	RunTime  time.Duration
	RunCount uint64
}

// NsPerRun is the mean cost of one run in nanoseconds; 0 when it never ran.
func (s ProgramStats) NsPerRun() float64 {
	if s.RunCount == 0 {
		return 0
	}
	return float64(s.RunTime.Nanoseconds()) / float64(s.RunCount)
}

// SubStats returns, per program of after, what it counted since before:
// the costs of a window. A program missing from before (attached during
// the window) counts from zero; one whose counters went back (replaced by
// an agent restart) counts what the new one counted.
func SubStats(after, before []ProgramStats) []ProgramStats {
	prev := map[string]ProgramStats{}
	for _, s := range before {
		prev[s.Name] = s
	}
	out := make([]ProgramStats, 0, len(after))
	for _, s := range after {
		p := prev[s.Name]
		if s.RunCount >= p.RunCount && s.RunTime >= p.RunTime {
			s.RunCount -= p.RunCount
			s.RunTime -= p.RunTime
		}
		out = append(out, s)
	}
	return out
}

// EnableStats turns the kernel's BPF run-time statistics on until the
// returned Closer is closed (BPF_ENABLE_STATS; they stay on while any
// process holds such a handle or kernel.bpf_stats_enabled is 1). Counting
// costs two clock reads per program run, a few tens of nanoseconds, which
// is why the agent does not keep them on unless asked to.
//
// Requires at least Linux 5.8 and CAP_SYS_ADMIN.
func EnableStats() (io.Closer, error) {
	c, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		return nil, fmt.Errorf("enable BPF run-time statistics: %w", err)
	}
	return c, nil
}

// programPin names, for each attached program, the link pin it is found
// by in a node's pin directory and its Objects field.
type programPin struct {
	name string // the C function name
	pin  string
	prog func(*bpf.Objects) *ebpf.Program
}

// programPins are the programs the dataplane attaches, in the order they
// are reported: the socket programs first (one run per connect, sendmsg,
// recvmsg or getpeername of a balanced process), then tc (one run per
// packet on the external interface).
var programPins = func() []programPin {
	names := []string{"sock4_connect", "sock4_sendmsg", "sock4_recvmsg", "sock4_getpeername"}
	var out []programPin
	for i, a := range sockAttaches {
		out = append(out, programPin{names[i], a.pin, a.prog})
	}
	return append(out,
		programPin{"tc4_ingress", pinTCIngress, func(o *bpf.Objects) *ebpf.Program { return o.TC.Tc4Ingress }},
		programPin{"tc4_egress", pinTCEgress, func(o *bpf.Objects) *ebpf.Program { return o.TC.Tc4Egress }},
	)
}()

// ProgramStats reads the counters of the programs d loaded.
func (d *Dataplane) ProgramStats() ([]ProgramStats, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.objs == nil {
		return nil, errors.New("read program statistics: dataplane closed")
	}
	var out []ProgramStats
	for _, p := range programPins {
		st, err := p.prog(d.objs).Stats()
		if err != nil {
			return nil, fmt.Errorf("read statistics of %s: %w", p.name, err)
		}
		out = append(out, ProgramStats{Name: p.name, RunTime: st.Runtime, RunCount: st.RunCount})
	}
	return out, nil
}

// ReadProgramStats reads the counters of the programs attached through the
// links pinned for cfg.NodeName, with no Dataplane open: what `skep
// dataplane stats` and the benchmarks read from outside the agent. Programs
// with no pinned link (no tc without an interface, or tc attached through
// clsact on kernels without tcx) are left out.
func ReadProgramStats(cfg Config) ([]ProgramStats, error) {
	dir := cfg.pinDir()
	if _, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("read program statistics: %w", err)
	}
	var out []ProgramStats
	for _, p := range programPins {
		path := filepath.Join(dir, p.pin)
		st, err := pinnedProgramStats(path)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read statistics of %s: %w", p.name, err)
		}
		out = append(out, ProgramStats{Name: p.name, RunTime: st.Runtime, RunCount: st.RunCount})
	}
	return out, nil
}

func pinnedProgramStats(path string) (*ebpf.ProgramStats, error) {
	l, err := link.LoadPinnedLink(path, nil)
	if err != nil {
		return nil, err
	}
	defer l.Close()
	info, err := l.Info()
	if err != nil {
		return nil, fmt.Errorf("link info of %s: %w", path, err)
	}
	prog, err := ebpf.NewProgramFromID(info.Program)
	if err != nil {
		return nil, fmt.Errorf("open program %d of %s: %w", info.Program, path, err)
	}
	defer prog.Close()
	return prog.Stats()
}
