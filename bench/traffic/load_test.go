package traffic

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/skep-io/skep/agent/dataplane"
	"github.com/skep-io/skep/agent/dataplane/ebpf"
)

// echoServer answers as the echo image does, on loopback.
func echoServer(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]string{"pod": "echo-test", "client": r.RemoteAddr})
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// ownCgroup is the cgroup2 directory of this process.
func ownCgroup(t testing.TB) string {
	t.Helper()
	data, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			return filepath.Join("/sys/fs/cgroup/unified", p)
		}
	}
	t.Fatalf("no cgroup2 line in /proc/self/cgroup:\n%s", data)
	return ""
}

func TestRunLoad(t *testing.T) {
	addr := echoServer(t)
	cg := ownCgroup(t)
	for _, kind := range []string{LoadCRR, LoadRR} {
		t.Run(kind, func(t *testing.T) {
			res, err := RunLoad(context.Background(), LoadSpec{Kind: kind, Targets: []string{addr}, Concurrency: 2,
				Warmup: 100 * time.Millisecond, Duration: 400 * time.Millisecond, Timeout: time.Second,
				Cgroups: map[string]string{"self": cg}})
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%+v", res)
			if res.Completed < 10 || res.Errors != 0 {
				t.Errorf("completed %d, errors %d (%s): want many, none", res.Completed, res.Errors, res.FirstError)
			}
			if res.P50 <= 0 || res.P99 < res.P50 {
				t.Errorf("p50 %.1fµs p99 %.1fµs: want 0 < p50 <= p99", res.P50, res.P99)
			}
			if kind == LoadCRR && (res.ConnectP50 <= 0 || res.ConnectP99 < res.ConnectP50 || res.ConnectP50 > res.P50) {
				t.Errorf("connect p50 %.1fµs p99 %.1fµs, transaction p50 %.1fµs: want 0 < connect p50 <= connect p99, connect p50 <= transaction p50",
					res.ConnectP50, res.ConnectP99, res.P50)
			}
			if kind == LoadRR && res.ConnectP50 != 0 {
				t.Errorf("rr: connect p50 %.1fµs, want none measured", res.ConnectP50)
			}
			if res.CPUPer("self") <= 0 {
				t.Errorf("CPU per transaction %.2fµs: want > 0", res.CPUPer("self"))
			}
			if rate := res.Rate(); rate != float64(res.Completed)/0.4 {
				t.Errorf("rate %.1f: want completed/window", rate)
			}
		})
	}
}

func TestRunLoadCountsFailures(t *testing.T) {
	// A port nobody listens on: every connect is refused.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	res, err := RunLoad(context.Background(), LoadSpec{Kind: LoadCRR, Targets: []string{addr}, Concurrency: 1,
		Duration: 200 * time.Millisecond, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.Completed != 0 || res.Errors == 0 || !strings.Contains(res.FirstError, "refused") {
		t.Errorf("completed %d errors %d first %q: want none completed, refused connections counted", res.Completed, res.Errors, res.FirstError)
	}
}

func TestRunLoadRejectsNonEcho(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "nope", http.StatusServiceUnavailable)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	res, err := RunLoad(context.Background(), LoadSpec{Kind: LoadRR, Targets: []string{ln.Addr().String()}, Concurrency: 1,
		Duration: 200 * time.Millisecond, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.Completed != 0 || !strings.Contains(res.FirstError, "503") {
		t.Errorf("completed %d first error %q: want a 503 answer counted as a failure", res.Completed, res.FirstError)
	}
}

func TestClientMain(t *testing.T) {
	addr := echoServer(t)
	spec, _ := json.Marshal(LoadSpec{Kind: LoadRR, Targets: []string{addr}, Concurrency: 1, Duration: 100 * time.Millisecond})
	var out strings.Builder
	if err := ClientMain(context.Background(), strings.NewReader(string(spec)), &out); err != nil {
		t.Fatal(err)
	}
	var res LoadResult
	if err := json.Unmarshal([]byte(out.String()), &res); err != nil || res.Completed == 0 {
		t.Fatalf("answer %q (%v): want a LoadResult with completions", out.String(), err)
	}
	if err := ClientMain(context.Background(), strings.NewReader(`{"kind":"udp"}`), &out); err == nil {
		t.Error("a spec of an unknown kind was run")
	}
}

func TestRunLoadInterrupted(t *testing.T) {
	addr := echoServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := RunLoad(ctx, LoadSpec{Kind: LoadCRR, Targets: []string{addr}, Concurrency: 1, Duration: 10 * time.Second})
	if err == nil || time.Since(start) > 2*time.Second {
		t.Errorf("an interrupted load returned %v after %s: want an error, at once", err, time.Since(start))
	}
}

// balancedSelf gives tb an eBPF dataplane of its own (node "bench", a
// pin root and a cgroup of its own) and moves this process into the
// balanced cgroup until tb ends, so that RunLoad's connects go through the
// socket programs. It returns the dataplane and its pin root.
func balancedSelf(tb testing.TB) (*ebpf.Dataplane, string) {
	tb.Helper()
	home := ownCgroup(tb)
	cg, err := os.MkdirTemp("/sys/fs/cgroup/unified", "skep-traffic-test-")
	if err != nil {
		tb.Fatal(err)
	}
	pinRoot, err := os.MkdirTemp("/sys/fs/bpf", "skep-traffic-test-")
	if err != nil {
		tb.Fatal(err)
	}
	cfg := ebpf.Config{NodeName: "bench", PinRoot: pinRoot, CgroupPath: cg, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	d, err := ebpf.New(context.Background(), cfg)
	if err != nil {
		tb.Fatalf("new ebpf dataplane: %v", err)
	}
	tb.Cleanup(func() {
		d.Close()
		if err := ebpf.Cleanup(cfg); err != nil {
			tb.Errorf("cleanup: %v", err)
		}
		os.Remove(pinRoot)
	})
	// Back before the cleanup above runs, so that the cgroup can go.
	self := []byte(strconv.Itoa(os.Getpid()))
	if err := os.WriteFile(filepath.Join(cg, "cgroup.procs"), self, 0o644); err != nil {
		tb.Fatalf("join cgroup %s: %v", cg, err)
	}
	tb.Cleanup(func() {
		if err := os.WriteFile(filepath.Join(home, "cgroup.procs"), self, 0o644); err != nil {
			tb.Errorf("back to cgroup %s: %v", home, err)
		}
		if err := os.Remove(cg); err != nil {
			tb.Errorf("remove cgroup: %v", err)
		}
	})
	return d, pinRoot
}

// TestRunLoadBPFCosts runs a crr load from a cgroup an eBPF dataplane
// balances: the result carries what sock4_connect cost per run in the
// window, a run per connection.
func TestRunLoadBPFCosts(t *testing.T) {
	addr := echoServer(t)
	_, pinRoot := balancedSelf(t)
	res, err := RunLoad(context.Background(), LoadSpec{Kind: LoadCRR, Targets: []string{addr}, Concurrency: 1,
		Warmup: 50 * time.Millisecond, Duration: 300 * time.Millisecond, Timeout: time.Second,
		BPFNodes: []string{"bench"}, BPFPinRoot: pinRoot})
	if err != nil {
		t.Fatal(err)
	}
	c := res.BPF["sock4_connect"]
	t.Logf("completed %d; sock4_connect %d runs, %.0f ns/run", res.Completed, c.Runs, c.NsPerRun())
	// The counters are read a moment after the window's edges, as the
	// CPU time is: a connection that completed at the window's start may
	// have connected before the first reading.
	if res.Completed < 10 || c.Runs*10 < uint64(res.Completed)*9 || c.Runs > uint64(res.Completed)*11/10 || c.NsPerRun() <= 0 {
		t.Errorf("%d connections, sock4_connect %d runs of %.0f ns: want a run of some ns per connection", res.Completed, c.Runs, c.NsPerRun())
	}
	if _, ok := res.BPF["tc4_ingress"]; ok {
		t.Errorf("tc4_ingress reported for a dataplane without an interface: %v", res.BPF)
	}
}

// BenchmarkCRRProgramCost is the traffic benchmarks' crr load (a Go HTTP
// client, a connection per request) on loopback, from a balanced cgroup,
// to an echo server directly and through a ClusterIP: what the socket
// programs cost per run under a real load, where the rest of each
// connection's work leaves the caches colder than a tight connect loop
// does.
//
//	go test -p 1 -run '^$' -bench CRRProgramCost -benchtime 1x ./bench/traffic/
func BenchmarkCRRProgramCost(b *testing.B) {
	for _, tc := range []struct{ name, target string }{
		{"direct", ""},
		{"clusterip", "10.96.0.10:80"},
	} {
		b.Run(tc.name, func(b *testing.B) {
			addr := netip.MustParseAddrPort(echoServer(b))
			d, pinRoot := balancedSelf(b)
			key := dataplane.ServiceKey{Namespace: "default", Name: "echo", Port: "http", Protocol: dataplane.TCP}
			svc := &dataplane.Service{Key: key, ClusterIP: netip.MustParseAddr("10.96.0.10"), Port: 80,
				Backends: []dataplane.Backend{{Addr: addr.Addr(), Port: addr.Port(), Ready: true, Local: true, NodeName: "bench"}}}
			if err := d.Sync(context.Background(), map[dataplane.ServiceKey]*dataplane.Service{key: svc}); err != nil {
				b.Fatalf("Sync: %v", err)
			}
			target := tc.target
			if target == "" {
				target = addr.String()
			}
			var total map[string]ProgramCost
			var completed int64
			var window float64
			for b.Loop() {
				res, err := RunLoad(context.Background(), LoadSpec{Kind: LoadCRR, Targets: []string{target}, Concurrency: 2,
					Warmup: 200 * time.Millisecond, Duration: 2 * time.Second, Timeout: time.Second,
					BPFNodes: []string{"bench"}, BPFPinRoot: pinRoot})
				if err != nil {
					b.Fatal(err)
				}
				if res.Errors > 0 {
					b.Fatalf("%d errors, first: %s", res.Errors, res.FirstError)
				}
				completed += res.Completed
				window += res.Window
				if total == nil {
					total = map[string]ProgramCost{}
				}
				for name, c := range res.BPF {
					t := total[name]
					t.RunTimeNs += c.RunTimeNs
					t.Runs += c.Runs
					total[name] = t
				}
			}
			b.ReportMetric(float64(completed)/window, "conn/s")
			for _, name := range []string{"sock4_connect", "sock4_getpeername"} {
				b.ReportMetric(total[name].NsPerRun(), strings.TrimPrefix(name, "sock4_")+"-ns/run")
			}
		})
	}
}
