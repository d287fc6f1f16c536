package ebpf

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/skep-io/skep/agent/dataplane"
)

// loopEnv makes the test binary a load loop inside the test cgroup: many
// connects (or datagrams) as fast as it can, for the programs' counters.
const loopEnv = "SKEP_EBPF_TEST_LOOP"

// loopSpec is what a load loop does.
type loopSpec struct {
	// Mode: "tcp" connects, calls getpeername and closes with a reset
	// (no TIME_WAIT, so the ports never run out); "udp" sends datagrams
	// from one unconnected socket.
	Mode  string
	Addr  string
	Count int
}

func init() {
	// Before TestMain: a loop must not run the tests.
	if raw := os.Getenv(loopEnv); raw != "" {
		os.Exit(runLoop(raw))
	}
}

func runLoop(raw string) int {
	var spec loopSpec
	if err := json.Unmarshal([]byte(raw), &spec); err != nil {
		fmt.Fprintln(os.Stderr, "bad loop spec:", err)
		return 2
	}
	ap := netip.MustParseAddrPort(spec.Addr)
	sa := &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
	fail := func(i int, what string, err error) int {
		fmt.Fprintf(os.Stderr, "%s %d of %d to %s: %v\n", what, i, spec.Count, spec.Addr, err)
		return 1
	}
	switch spec.Mode {
	case "tcp":
		for i := range spec.Count {
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
			if err != nil {
				return fail(i, "socket", err)
			}
			unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
			if err := connect(fd, sa); err != nil {
				unix.Close(fd)
				return fail(i, "connect", err)
			}
			if _, err := unix.Getpeername(fd); err != nil {
				unix.Close(fd)
				return fail(i, "getpeername", err)
			}
			unix.Close(fd)
		}
	case "udp":
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
		if err != nil {
			return fail(0, "socket", err)
		}
		defer unix.Close(fd)
		for i := range spec.Count {
			if err := unix.Sendto(fd, []byte("hi"), 0, sa); err != nil {
				return fail(i, "sendto", err)
			}
		}
	default:
		return fail(0, "mode "+spec.Mode, fmt.Errorf("allowed are tcp, udp"))
	}
	return 0
}

// runLoop runs a load loop in cgroup and waits for it.
func runLoopIn(t testing.TB, cgroup string, spec loopSpec) {
	t.Helper()
	raw, _ := json.Marshal(spec)
	cg, err := os.Open(cgroup)
	if err != nil {
		t.Fatalf("open cgroup: %v", err)
	}
	defer cg.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), loopEnv+"="+string(raw))
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cg.Fd())}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("loop %s: %v\n%s", raw, err, out)
	}
}

// sinks listens on n consecutive TCP ports of addr (accepting and
// dropping every connection) and on the first port for UDP (never read:
// datagrams beyond the buffer are dropped, which costs the sender
// nothing). It returns the backends.
func sinks(t testing.TB, addr string, port uint16, n int) []dataplane.Backend {
	t.Helper()
	var out []dataplane.Backend
	for i := range n {
		ap := netip.AddrPortFrom(netip.MustParseAddr(addr), port+uint16(i))
		ln, err := net.ListenTCP("tcp4", net.TCPAddrFromAddrPort(ap))
		if err != nil {
			t.Fatalf("listen %s: %v", ap, err)
		}
		t.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
		if i == 0 {
			pc, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(ap))
			if err != nil {
				t.Fatalf("listen udp %s: %v", ap, err)
			}
			t.Cleanup(func() { pc.Close() })
		}
		out = append(out, backend(ap))
	}
	return out
}

func enableStats(t testing.TB) {
	t.Helper()
	c, err := EnableStats()
	if err != nil {
		t.Fatalf("EnableStats: %v", err)
	}
	t.Cleanup(func() { c.Close() })
}

func statsByName(stats []ProgramStats) map[string]ProgramStats {
	out := map[string]ProgramStats{}
	for _, s := range stats {
		out[s.Name] = s
	}
	return out
}

func programStats(t testing.TB, d *Dataplane) []ProgramStats {
	t.Helper()
	s, err := d.ProgramStats()
	if err != nil {
		t.Fatalf("ProgramStats: %v", err)
	}
	return s
}

// TestProgramStats: with statistics enabled, the kernel counts one run of
// sock4_connect per connect and one of sock4_getpeername per getpeername
// of a balanced process; the Dataplane, the pins and the metrics all say
// so.
func TestProgramStats(t *testing.T) {
	cfg := testConfig(t)
	d := newDataplane(t, cfg)
	backends := sinks(t, "127.0.0.2", 18200, 1)
	svc := &dataplane.Service{Key: tcpKey, ClusterIP: clusterIP, Port: 80, Backends: backends}
	if err := d.Sync(t.Context(), services(svc)); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	enableStats(t)
	before := programStats(t, d)
	pinnedBefore, err := ReadProgramStats(cfg)
	if err != nil {
		t.Fatalf("ReadProgramStats: %v", err)
	}
	const n = 50
	runLoopIn(t, cfg.CgroupPath, loopSpec{Mode: "tcp", Addr: "10.96.0.10:80", Count: n})
	runLoopIn(t, cfg.CgroupPath, loopSpec{Mode: "tcp", Addr: "127.0.0.2:18200", Count: n})

	delta := statsByName(SubStats(programStats(t, d), before))
	// An interrupted connect is called again (the loop's connect retries
	// EINTR), so connect may count a few more.
	if c := delta["sock4_connect"]; c.RunCount < 2*n || c.RunCount > 2*n+10 || c.RunTime <= 0 {
		t.Errorf("sock4_connect counted %d runs in %v after %d connects", c.RunCount, c.RunTime, 2*n)
	}
	if g := delta["sock4_getpeername"]; g.RunCount != 2*n {
		t.Errorf("sock4_getpeername counted %d runs after %d calls", g.RunCount, 2*n)
	}
	if s := delta["sock4_sendmsg"]; s.RunCount != 0 {
		t.Errorf("sock4_sendmsg counted %d runs, no datagram was sent", s.RunCount)
	}
	for _, name := range []string{"sock4_connect", "sock4_sendmsg", "sock4_recvmsg", "sock4_getpeername", "tc4_ingress", "tc4_egress"} {
		if _, ok := delta[name]; !ok {
			t.Errorf("ProgramStats has no %s: %v", name, delta)
		}
	}

	// The pins lead to the same programs (no tc here: no interface).
	pinnedAfter, err := ReadProgramStats(cfg)
	if err != nil {
		t.Fatalf("ReadProgramStats: %v", err)
	}
	pinned := statsByName(SubStats(pinnedAfter, pinnedBefore))
	if len(pinned) != 4 {
		t.Errorf("ReadProgramStats without an interface: %v, want the four socket programs", pinned)
	}
	if pinned["sock4_getpeername"].RunCount != 2*n || pinned["sock4_connect"].RunCount != delta["sock4_connect"].RunCount {
		t.Errorf("the pinned programs counted %v, the Dataplane's %v", pinned, delta)
	}

	// The metrics read the same counters.
	reg := prometheus.NewRegistry()
	for _, c := range d.Collectors() {
		reg.MustRegister(c)
	}
	got := gather(t, reg)
	now := statsByName(programStats(t, d))
	runs := metric(t, got, "skep_bpf_program_runs_total", "dataplane=ebpf,program=sock4_getpeername").Counter.GetValue()
	if runs != float64(now["sock4_getpeername"].RunCount) {
		t.Errorf("skep_bpf_program_runs_total{program=sock4_getpeername} = %v, the kernel counts %d", runs, now["sock4_getpeername"].RunCount)
	}
	secs := metric(t, got, "skep_bpf_program_run_time_seconds_total", "dataplane=ebpf,program=sock4_connect").Counter.GetValue()
	if secs <= 0 || secs > now["sock4_connect"].RunTime.Seconds() {
		t.Errorf("skep_bpf_program_run_time_seconds_total{program=sock4_connect} = %v, the kernel counts %v", secs, now["sock4_connect"].RunTime)
	}
}

// BenchmarkSockCost measures what the socket programs cost per run, as the
// kernel counts it (bpf_stats: run_time_ns / run_cnt), for connects and
// datagrams of a process in the balanced cgroup:
//
//	go test -p 1 -run '^$' -bench SockCost -benchtime 3x ./agent/dataplane/ebpf/
//
// Each iteration is one process making loopConnects connects (or
// datagrams); the metrics are the programs' mean cost per run over all of
// them. ns/op is the whole process and means little.
func BenchmarkSockCost(b *testing.B) {
	for _, tc := range []struct {
		name     string
		mode     string
		backends int
		addr     string
		prog     []string
	}{
		// A ClusterIP with one backend, and with 100.
		{"clusterip-1", "tcp", 1, "10.96.0.10:80", []string{"sock4_connect", "sock4_getpeername"}},
		{"clusterip-100", "tcp", 100, "10.96.0.10:80", []string{"sock4_connect", "sock4_getpeername"}},
		// A connect to an address no Service has, as a pod's to another
		// pod.
		{"not-service", "tcp", 1, "127.0.0.2:18300", []string{"sock4_connect", "sock4_getpeername"}},
		// A port of a node address that is no NodePort: the wildcard
		// lookup too.
		{"node-not-service", "tcp", 1, "127.0.0.1:18300", []string{"sock4_connect"}},
		// Unconnected UDP to a ClusterIP: sendmsg translates each
		// datagram.
		{"udp-sendmsg", "udp", 1, "10.96.0.10:53", []string{"sock4_sendmsg"}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			cfg := testConfig(b)
			d := newDataplane(b, cfg)
			backends := sinks(b, "127.0.0.2", 18300, tc.backends)
			if tc.name == "node-not-service" {
				backends = sinks(b, "127.0.0.1", 18300, 1)
			}
			svcs := services(
				&dataplane.Service{Key: tcpKey, ClusterIP: clusterIP, Port: 80, Backends: backends},
				&dataplane.Service{Key: udpKey, ClusterIP: clusterIP, Port: 53, Backends: backends[:1]},
			)
			if err := d.Sync(b.Context(), svcs); err != nil {
				b.Fatalf("Sync: %v", err)
			}
			enableStats(b)
			spec := loopSpec{Mode: tc.mode, Addr: tc.addr, Count: loopConnects}
			// One loop unmeasured: the maps' first entries, caches.
			runLoopIn(b, cfg.CgroupPath, loopSpec{Mode: tc.mode, Addr: tc.addr, Count: 200})
			before := programStats(b, d)
			for b.Loop() {
				runLoopIn(b, cfg.CgroupPath, spec)
			}
			delta := statsByName(SubStats(programStats(b, d), before))
			for _, p := range tc.prog {
				s := delta[p]
				if s.RunCount < uint64(b.N*loopConnects) {
					b.Fatalf("%s ran %d times for %d calls", p, s.RunCount, b.N*loopConnects)
				}
				b.ReportMetric(s.NsPerRun(), strings.TrimPrefix(p, "sock4_")+"-ns/run")
			}
		})
	}
}

// loopConnects is how many connects or datagrams one benchmark iteration
// makes.
const loopConnects = 20000
