package traffic

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/skep-io/skep/agent/dataplane/ebpf"
	"github.com/skep-io/skep/bench/report"
)

// The two loads, after netperf's TCP_CRR and TCP_RR.
const (
	// LoadCRR opens a connection per request: connect, one HTTP request,
	// the answer, close. It is the load that pays the service layer's cost
	// per connection (socket LB's connect hook; iptables' nat chains, which
	// only the first packet of a connection traverses).
	LoadCRR = "crr"
	// LoadRR sends request after request on connections kept alive: what a
	// service costs once a connection is made.
	LoadRR = "rr"
)

// LoadSpec is one run of the load generator. It travels as JSON to the
// client process, which runs inside a pod's (or the lab client's) network
// namespace and a cgroup of the node it stands for.
type LoadSpec struct {
	Kind string `json:"kind"` // LoadCRR or LoadRR
	// Targets are host:port addresses; connections go to them in turn, so
	// that the direct path spreads over the backends as a Service does.
	Targets []string `json:"targets"`
	// Source, when set, is the local address every connection binds to
	// (its port is still chosen at connect time).
	Source string `json:"source,omitempty"`
	// Concurrency is how many connections (rr) or connect loops (crr) run
	// at once.
	Concurrency int `json:"concurrency"`
	// Warmup runs the load unmeasured first (neighbour entries, conntrack,
	// caches); Duration is the measured window after it.
	Warmup   time.Duration `json:"warmup"`
	Duration time.Duration `json:"duration"`
	// Timeout bounds one connect + request + answer.
	Timeout time.Duration `json:"timeout"`
	// Cgroups are cgroup2 directories whose CPU time (cpu.stat usage_usec)
	// is read at the start and the end of the measured window.
	Cgroups map[string]string `json:"cgroups,omitempty"`
	// ReuseTimeWait sets net.ipv4.tcp_tw_reuse=1 in the client's network
	// namespace before the run: a crr load opens more connections per
	// minute than the ephemeral ports a destination has while each waits
	// 60 s in TIME_WAIT (the client closes first, so TIME_WAIT is on the
	// client's side only).
	ReuseTimeWait bool `json:"reuseTimeWait,omitempty"`
	// BPFNodes are lab nodes in eBPF mode whose programs' run-time
	// counters (the kernel's bpf_stats, read through the links pinned
	// under ebpf.DefaultPinRoot) are read at the window's edges, as the
	// CPU time is. The load generator enables BPF statistics for its
	// whole run.
	BPFNodes []string `json:"bpfNodes,omitempty"`
	// BPFPinRoot is where the nodes' pin directories are;
	// ebpf.DefaultPinRoot, where the lab's agents pin, when empty.
	BPFPinRoot string `json:"bpfPinRoot,omitempty"`
}

// LoadResult is what one run measured in its window.
type LoadResult struct {
	// Completed counts connections (crr) or requests (rr) that ended
	// inside the window with a 200 answer from an echo server.
	Completed int64 `json:"completed"`
	// Errors counts failed attempts inside the window; FirstError says
	// what the first one was.
	Errors     int64   `json:"errors"`
	FirstError string  `json:"firstError,omitempty"`
	Window     float64 `json:"windowSeconds"`
	// P50 and P99 are latencies of connect+request+answer (crr) or of
	// request+answer (rr), in microseconds.
	P50 float64 `json:"p50us"`
	P99 float64 `json:"p99us"`
	// ConnectP50 and ConnectP99 are, for crr, latencies of the connect
	// alone (SYN to SYN-ACK), in microseconds: the first-packet latency,
	// where a connection meets the service layer.
	ConnectP50 float64 `json:"connectP50us,omitempty"`
	ConnectP99 float64 `json:"connectP99us,omitempty"`
	// CPU is, per cgroup of the spec, the CPU time spent in the window, in
	// microseconds.
	CPU map[string]float64 `json:"cpuUs,omitempty"`
	// BPF is, per program (sock4_connect, tc4_ingress...), what the
	// kernel counted in the window, summed over the spec's BPFNodes.
	BPF map[string]ProgramCost `json:"bpf,omitempty"`
}

// ProgramCost is what one eBPF program ran in a window.
type ProgramCost struct {
	RunTimeNs float64 `json:"runTimeNs"`
	Runs      uint64  `json:"runs"`
}

// NsPerRun is the mean cost of one run; 0 when it never ran.
func (c ProgramCost) NsPerRun() float64 {
	if c.Runs == 0 {
		return 0
	}
	return c.RunTimeNs / float64(c.Runs)
}

// Rate is completions per second of the window.
func (r LoadResult) Rate() float64 {
	if r.Window <= 0 {
		return 0
	}
	return float64(r.Completed) / r.Window
}

// CPUPer is the CPU time of a cgroup per completion, in microseconds.
func (r LoadResult) CPUPer(cgroup string) float64 {
	if r.Completed == 0 {
		return 0
	}
	return r.CPU[cgroup] / float64(r.Completed)
}

func (s *LoadSpec) check() error {
	switch {
	case s.Kind != LoadCRR && s.Kind != LoadRR:
		return fmt.Errorf("load kind %q: allowed are %s, %s", s.Kind, LoadCRR, LoadRR)
	case len(s.Targets) == 0:
		return errors.New("load: no targets")
	case s.Concurrency < 1:
		return fmt.Errorf("load concurrency %d: at least 1", s.Concurrency)
	case s.Duration <= 0:
		return fmt.Errorf("load duration %s: must be positive", s.Duration)
	}
	if s.Timeout <= 0 {
		s.Timeout = 3 * time.Second
	}
	return nil
}

// ClientMain is the load generator's process: it reads a LoadSpec as JSON
// from in, runs it, and writes the LoadResult as JSON to out. `skep-bench
// client` is this; the bench starts it with nsenter inside the client's
// network namespace and in a cgroup below the client's node, so that the
// node's socket programs see it as one of the node's processes.
func ClientMain(ctx context.Context, in io.Reader, out io.Writer) error {
	var spec LoadSpec
	if err := json.NewDecoder(in).Decode(&spec); err != nil {
		return fmt.Errorf("read the load spec: %w", err)
	}
	if spec.ReuseTimeWait {
		// /proc/sys/net is the network namespace of whoever opens it.
		if err := os.WriteFile("/proc/sys/net/ipv4/tcp_tw_reuse", []byte("1"), 0o644); err != nil {
			return fmt.Errorf("set tcp_tw_reuse: %w", err)
		}
	}
	res, err := RunLoad(ctx, spec)
	if err != nil {
		return err
	}
	return json.NewEncoder(out).Encode(res)
}

// request is the one request every connection sends, HTTP/1.1 keep-alive:
// the echo server answers with a small JSON object and a Content-Length,
// and leaves closing to the client. The client closing first puts
// TIME_WAIT on the client's side, never on the backend's, where a SYN
// reusing a 4-tuple from another path (other timestamps) could hit PAWS.
var request = []byte("GET / HTTP/1.1\r\nHost: echo\r\nUser-Agent: skep-bench\r\n\r\n")

// RunLoad runs a load in the calling process's network namespace.
func RunLoad(ctx context.Context, spec LoadSpec) (LoadResult, error) {
	if err := spec.check(); err != nil {
		return LoadResult{}, err
	}
	dialer, err := spec.dialer()
	if err != nil {
		return LoadResult{}, err
	}

	if len(spec.BPFNodes) > 0 {
		stop, err := ebpf.EnableStats()
		if err != nil {
			return LoadResult{}, err
		}
		defer stop.Close()
	}

	start := time.Now()
	winStart := start.Add(spec.Warmup)
	winEnd := winStart.Add(spec.Duration)
	parent := ctx
	ctx, cancel := context.WithDeadline(ctx, winEnd)
	defer cancel()

	// CPU time is read by a timer at the window's edges, not by the
	// workers, so that every run reads it the same way.
	var edges windowEdges
	var cpuErr error
	cpuDone := make(chan struct{})
	go func() {
		defer close(cpuDone)
		edges, cpuErr = spec.readEdges(parent, winStart, winEnd)
	}()

	var (
		mu        sync.Mutex
		latencies []float64
		connects  []float64 // crr: the connect alone
		completed atomic.Int64
		failed    atomic.Int64
		firstErr  atomic.Value
		next      atomic.Uint64
	)
	inWindow := func(t time.Time) bool { return !t.Before(winStart) && t.Before(winEnd) }
	fail := func(err error) {
		if t := time.Now(); inWindow(t) && ctx.Err() == nil {
			failed.Add(1)
			firstErr.CompareAndSwap(nil, err.Error())
		}
	}
	target := func() string { return spec.Targets[int(next.Add(1)-1)%len(spec.Targets)] }

	var wg sync.WaitGroup
	for range spec.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine, mineConnect []float64
			w := worker{dialer: &dialer, timeout: spec.Timeout, stop: winEnd}
			defer w.close()
			for ctx.Err() == nil {
				t0 := time.Now()
				var err error
				if spec.Kind == LoadCRR {
					err = w.connectRequestClose(ctx, target())
				} else {
					err = w.request(ctx, target)
				}
				t1 := time.Now()
				if err != nil {
					fail(err)
					w.close()
					// A failure (a reset, a full accept queue) must not
					// turn into a busy loop.
					time.Sleep(10 * time.Millisecond)
					continue
				}
				if inWindow(t1) {
					completed.Add(1)
					mine = append(mine, float64(t1.Sub(t0).Nanoseconds())/1e3)
					if spec.Kind == LoadCRR {
						mineConnect = append(mineConnect, float64(w.connectTime.Nanoseconds())/1e3)
					}
				}
			}
			mu.Lock()
			latencies = append(latencies, mine...)
			connects = append(connects, mineConnect...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	<-cpuDone
	if cpuErr != nil {
		return LoadResult{}, cpuErr
	}
	res := LoadResult{Completed: completed.Load(), Errors: failed.Load(), Window: spec.Duration.Seconds()}
	if e, ok := firstErr.Load().(string); ok {
		res.FirstError = e
	}
	if len(latencies) > 0 {
		slices.Sort(latencies)
		res.P50 = report.Quantile(latencies, 0.5)
		res.P99 = report.Quantile(latencies, 0.99)
	}
	if len(connects) > 0 {
		slices.Sort(connects)
		res.ConnectP50 = report.Quantile(connects, 0.5)
		res.ConnectP99 = report.Quantile(connects, 0.99)
	}
	if len(spec.Cgroups) > 0 {
		res.CPU = map[string]float64{}
		for name := range spec.Cgroups {
			res.CPU[name] = edges.cpuEnd[name] - edges.cpuStart[name]
		}
	}
	if len(spec.BPFNodes) > 0 {
		res.BPF = map[string]ProgramCost{}
		for name, end := range edges.bpfEnd {
			begin := edges.bpfStart[name]
			if end.Runs >= begin.Runs {
				res.BPF[name] = ProgramCost{RunTimeNs: end.RunTimeNs - begin.RunTimeNs, Runs: end.Runs - begin.Runs}
			}
		}
	}
	return res, nil
}

// dialer is how the load's connections are made: from spec.Source, when
// given, with the port left to the connect.
func (s *LoadSpec) dialer() (net.Dialer, error) {
	dialer := net.Dialer{Timeout: s.Timeout}
	if s.Source == "" {
		return dialer, nil
	}
	ip := net.ParseIP(s.Source)
	if ip == nil {
		return dialer, fmt.Errorf("load source %q: not an IP address", s.Source)
	}
	dialer.LocalAddr = &net.TCPAddr{IP: ip}
	// Bind the address only: the port is picked at connect time, per
	// destination, so TIME_WAIT ports of one destination do not use up the
	// ports of another.
	dialer.Control = func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, ipBindAddressNoPort, 1)
		})
		return errors.Join(err, serr)
	}
	return dialer, nil
}

// windowEdges are the cgroups' CPU times and the BPF programs' costs at
// the start and the end of the measured window.
type windowEdges struct {
	cpuStart, cpuEnd map[string]float64
	bpfStart, bpfEnd map[string]ProgramCost
}

// readEdges waits for the window's start and end and reads the CPU times
// and BPF costs at each, unless ctx ends first.
func (s *LoadSpec) readEdges(ctx context.Context, start, end time.Time) (e windowEdges, err error) {
	at := func(t time.Time) error {
		select {
		case <-time.After(time.Until(t)):
			return nil
		case <-ctx.Done():
			return fmt.Errorf("load interrupted: %w", ctx.Err())
		}
	}
	if err = at(start); err != nil {
		return e, err
	}
	if e.cpuStart, err = readCPU(s.Cgroups); err != nil {
		return e, err
	}
	if e.bpfStart, err = readBPF(s.BPFPinRoot, s.BPFNodes); err != nil {
		return e, err
	}
	if err = at(end); err != nil {
		return e, err
	}
	if e.cpuEnd, err = readCPU(s.Cgroups); err != nil {
		return e, err
	}
	e.bpfEnd, err = readBPF(s.BPFPinRoot, s.BPFNodes)
	return e, err
}

// ipBindAddressNoPort is IP_BIND_ADDRESS_NO_PORT from linux/in.h.
const ipBindAddressNoPort = 24

// worker is one loop of the load: a connection of its own (kept for rr)
// and a reader on it.
type worker struct {
	dialer  *net.Dialer
	timeout time.Duration
	stop    time.Time // the end of the run: nothing waits past it
	conn    net.Conn
	rd      *bufio.Reader
	// connectTime is how long the last dial took.
	connectTime time.Duration
}

func (w *worker) close() {
	if w.conn != nil {
		w.conn.Close()
		w.conn, w.rd = nil, nil
	}
}

func (w *worker) dial(ctx context.Context, addr string) error {
	start := time.Now()
	c, err := w.dialer.DialContext(ctx, "tcp", addr)
	w.connectTime = time.Since(start)
	if err != nil {
		return fmt.Errorf("connect %s: %w", addr, err)
	}
	w.conn = c
	if w.rd == nil {
		w.rd = bufio.NewReaderSize(c, 4096)
	} else {
		w.rd.Reset(c)
	}
	return nil
}

// connectRequestClose is one crr transaction.
func (w *worker) connectRequestClose(ctx context.Context, addr string) error {
	if err := w.dial(ctx, addr); err != nil {
		return err
	}
	err := w.exchange()
	w.close()
	return err
}

// request is one rr transaction, on the worker's connection, which it
// opens to the next target when there is none.
func (w *worker) request(ctx context.Context, target func() string) error {
	if w.conn == nil {
		if err := w.dial(ctx, target()); err != nil {
			return err
		}
	}
	return w.exchange()
}

// exchange sends the request and reads one whole answer: status line,
// headers up to the blank line, and Content-Length bytes of body, which
// must come from an echo server.
func (w *worker) exchange() error {
	deadline := time.Now().Add(w.timeout)
	if w.stop.Before(deadline) {
		deadline = w.stop
	}
	w.conn.SetDeadline(deadline)
	if _, err := w.conn.Write(request); err != nil {
		return fmt.Errorf("send request: %w", err)
	}
	status, err := w.rd.ReadSlice('\n')
	if err != nil {
		return fmt.Errorf("read answer: %w", err)
	}
	if !bytes.HasPrefix(status, []byte("HTTP/1.1 200 ")) {
		return fmt.Errorf("answer %q: want HTTP/1.1 200", strings.TrimSpace(string(status)))
	}
	length := -1
	for {
		line, err := w.rd.ReadSlice('\n')
		if err != nil {
			return fmt.Errorf("read answer headers: %w", err)
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			break
		}
		if name, value, ok := bytes.Cut(line, []byte(":")); ok && strings.EqualFold(string(name), "Content-Length") {
			if length, err = strconv.Atoi(strings.TrimSpace(string(value))); err != nil {
				return fmt.Errorf("answer Content-Length %q: %w", value, err)
			}
		}
	}
	if length < 0 || length > 4096 {
		return fmt.Errorf("answer has Content-Length %d: want an echo server's small JSON answer", length)
	}
	body, err := w.rd.Peek(length)
	if err != nil {
		return fmt.Errorf("read answer body: %w", err)
	}
	if !bytes.Contains(body, []byte(`"pod":`)) {
		return fmt.Errorf("answer %q: not an echo server's", body)
	}
	w.rd.Discard(length)
	return nil
}

// readBPF reads the run-time counters of the nodes' programs, summed per
// program over the nodes.
func readBPF(pinRoot string, nodes []string) (map[string]ProgramCost, error) {
	out := map[string]ProgramCost{}
	for _, node := range nodes {
		stats, err := ebpf.ReadProgramStats(ebpf.Config{NodeName: node, PinRoot: pinRoot})
		if err != nil {
			return nil, fmt.Errorf("read the eBPF programs' counters of node %s: %w", node, err)
		}
		for _, s := range stats {
			c := out[s.Name]
			c.RunTimeNs += float64(s.RunTime.Nanoseconds())
			c.Runs += s.RunCount
			out[s.Name] = c
		}
	}
	return out, nil
}

// readCPU reads usage_usec from each cgroup's cpu.stat (cgroup2 keeps it
// without the cpu controller).
func readCPU(cgroups map[string]string) (map[string]float64, error) {
	out := map[string]float64{}
	for name, dir := range cgroups {
		data, err := os.ReadFile(filepath.Join(dir, "cpu.stat"))
		if err != nil {
			return nil, fmt.Errorf("read CPU time of %s: %w", name, err)
		}
		found := false
		for _, line := range strings.Split(string(data), "\n") {
			if v, ok := strings.CutPrefix(line, "usage_usec "); ok {
				n, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
				if err != nil {
					return nil, fmt.Errorf("read CPU time of %s: usage_usec %q: %w", name, v, err)
				}
				out[name], found = n, true
			}
		}
		if !found {
			return nil, fmt.Errorf("read CPU time of %s: no usage_usec in %s/cpu.stat", name, dir)
		}
	}
	return out, nil
}
