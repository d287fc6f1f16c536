package main

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/skep-io/skep/agent/dataplane"
	"github.com/skep-io/skep/agent/dataplane/ebpf"
)

// TestDataplaneStats runs `skep dataplane stats` on a node whose socket
// programs balance five HTTP fetches through a ClusterIP during its
// window: it shows sock4_connect with those runs and a cost per run.
func TestDataplaneStats(t *testing.T) {
	node := fmt.Sprintf("skep-test-stats-%d", os.Getpid())
	cg := filepath.Join("/sys/fs/cgroup/unified", node)
	if err := os.Mkdir(cg, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(cg) })
	cfg := ebpf.Config{NodeName: node, CgroupPath: cg, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	d, err := ebpf.New(t.Context(), cfg)
	if err != nil {
		t.Fatalf("new ebpf dataplane: %v", err)
	}
	t.Cleanup(func() {
		d.Close()
		if err := ebpf.Cleanup(cfg); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	ln, err := net.Listen("tcp4", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	backend := netip.MustParseAddrPort(ln.Addr().String())
	key := dataplane.ServiceKey{Namespace: "default", Name: "stats", Port: "http", Protocol: dataplane.TCP}
	svc := &dataplane.Service{Key: key, ClusterIP: netip.MustParseAddr("10.96.0.11"), Port: 80,
		Backends: []dataplane.Backend{{Addr: backend.Addr(), Port: backend.Port(), Ready: true, Local: true, NodeName: node}}}
	if err := d.Sync(t.Context(), map[dataplane.ServiceKey]*dataplane.Service{key: svc}); err != nil {
		t.Fatalf("Sync: %v", err)
	}

	stats := exec.Command(skepBinary, "dataplane", "stats", "--node-name", node, "--window", "3s")
	var out strings.Builder
	stats.Stdout, stats.Stderr = &out, &out
	if err := stats.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	cgfd, err := os.Open(cg)
	if err != nil {
		t.Fatal(err)
	}
	defer cgfd.Close()
	const fetches = 5
	for range fetches {
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), "SKEP_TEST_FETCH=http://10.96.0.11:80/")
		cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cgfd.Fd())}
		if b, err := cmd.CombinedOutput(); err != nil || string(b) != "ok" {
			t.Fatalf("fetch through the ClusterIP: %q (%v)", b, err)
		}
	}
	if err := stats.Wait(); err != nil {
		t.Fatalf("skep dataplane stats: %v\n%s", err, out.String())
	}
	t.Logf("skep dataplane stats:\n%s", out.String())
	var found bool
	for _, line := range strings.Split(out.String(), "\n") {
		f := strings.Fields(line)
		if len(f) != 4 || f[0] != "sock4_connect" {
			continue
		}
		found = true
		runs, _ := strconv.Atoi(f[1])
		ns, _ := strconv.ParseFloat(f[2], 64)
		if runs != fetches || ns <= 0 {
			t.Errorf("sock4_connect: %d runs of %s ns in the window, want %d runs of some ns", runs, f[2], fetches)
		}
	}
	if !found {
		t.Errorf("no sock4_connect line in:\n%s", out.String())
	}

	if b, err := exec.Command(skepBinary, "dataplane", "stats", "--node-name", "no-such-node").CombinedOutput(); err == nil ||
		!strings.Contains(string(b), "no eBPF dataplane of node no-such-node") {
		t.Errorf("stats of a node without pins: %v, %q; want an error naming the node", err, b)
	}
}
