package ebpf

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"syscall"
	"testing"

	"github.com/skep-io/skep/agent/dataplane"
)

// TestStaleUDPSocketTerminated holds a connected UDP socket to a ClusterIP
// while its backend is removed, or stops serving (a terminating pod, kept
// in the Endpoints as not ready): the socket must be destroyed instead of
// sending to a backend that no longer takes the service's traffic.
func TestStaleUDPSocketTerminated(t *testing.T) {
	t.Run("removed", func(t *testing.T) {
		testStaleUDPSocket(t, func(backends []dataplane.Backend, victim int) []dataplane.Backend {
			return append(append([]dataplane.Backend{}, backends[:victim]...), backends[victim+1:]...)
		})
	})
	t.Run("terminating", func(t *testing.T) {
		testStaleUDPSocket(t, func(backends []dataplane.Backend, victim int) []dataplane.Backend {
			out := append([]dataplane.Backend{}, backends...)
			out[victim].Terminating = true
			return out
		})
	})
}

func testStaleUDPSocket(t *testing.T, change func(backends []dataplane.Backend, victim int) []dataplane.Backend) {
	cfg := testConfig(t)
	d := newDataplane(t, cfg)
	if d.term == nil {
		t.Fatal("no UDP socket terminator loaded (needs bpf_sock_destroy, Linux 6.5)")
	}
	backends := threeBackends(t, "18086")
	svc := &dataplane.Service{Key: udpKey, ClusterIP: clusterIP, Port: 53, Backends: backends}
	if err := d.Sync(t.Context(), services(svc)); err != nil {
		t.Fatalf("Sync: %v", err)
	}

	cg, err := os.Open(cfg.CgroupPath)
	if err != nil {
		t.Fatalf("open cgroup: %v", err)
	}
	defer cg.Close()
	raw, _ := json.Marshal(clientSpec{Mode: "udp-hold", Addr: "10.96.0.10:53"})
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), clientEnv+"="+string(raw))
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cg.Fd())}
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start client: %v", err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	lines := bufio.NewScanner(stdout)
	next := func() clientResult {
		t.Helper()
		if !lines.Scan() {
			t.Fatalf("client ended early: %v", lines.Err())
		}
		var r clientResult
		if err := json.Unmarshal(lines.Bytes(), &r); err != nil {
			t.Fatalf("client output %q: %v", lines.Text(), err)
		}
		return r
	}

	first := next()
	if first.Err != "" || first.Peer != "10.96.0.10:53" {
		t.Fatalf("first exchange: %+v, want an answer from 10.96.0.10:53", first)
	}
	victim := -1
	for i, b := range backends {
		if "b"+b.Addr.String()[len("127.0.0."):] == first.Backend {
			victim = i
		}
	}
	if victim < 0 {
		t.Fatalf("first exchange answered by %q, not one of the backends", first.Backend)
	}
	svc2 := *svc
	svc2.Backends = change(backends, victim)
	if err := d.Sync(t.Context(), services(&svc2)); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	stdin.Write([]byte("\n"))
	// A destroyed UDP socket is disconnected: the application's next write
	// fails with EDESTADDRREQ, or a pending read with ECONNABORTED.
	// Without termination the exchange would succeed: the removed backend's
	// server still runs.
	if second := next(); second.Err != "ECONNABORTED" && second.Err != "EDESTADDRREQ" {
		t.Errorf("socket connected to backend %s, which no longer serves: second exchange %+v, want ECONNABORTED or EDESTADDRREQ", first.Backend, second)
	}
}
