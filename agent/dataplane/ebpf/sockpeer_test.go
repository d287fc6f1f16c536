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

// TestTCPPeer: getpeername of a TCP socket shows the frontend it connected
// to, and only that socket's: a socket connected straight to a backend
// shows the backend, and once the frontend is gone, the socket shows the
// backend it is really connected to.
func TestTCPPeer(t *testing.T) {
	cfg := testConfig(t)
	d := newDataplane(t, cfg)
	backends := threeBackends(t, "18090")
	tcp := &dataplane.Service{Key: tcpKey, ClusterIP: clusterIP, Port: 80, Backends: backends[:1]}
	if err := d.Sync(t.Context(), services(tcp)); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	checkResults(t, runClients(t, cfg.CgroupPath, clientSpec{Mode: "tcp", Addr: "10.96.0.10:80", Count: 20}), "10.96.0.10:80", "b2")
	// The same backend, connected to directly, right after sockets that
	// were translated to it.
	checkResults(t, runClients(t, cfg.CgroupPath, clientSpec{Mode: "tcp", Addr: "127.0.0.2:18090", Count: 20}), "127.0.0.2:18090", "b2")

	cg, err := os.Open(cfg.CgroupPath)
	if err != nil {
		t.Fatal(err)
	}
	defer cg.Close()
	raw, _ := json.Marshal(clientSpec{Mode: "tcp-hold", Addr: "10.96.0.10:80"})
	cmd := exec.Command(os.Args[0], "-test.run=^$")
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
	if r := next(); r.Err != "" || r.Peer != "10.96.0.10:80" {
		t.Fatalf("held connection: %+v, want peer 10.96.0.10:80", r)
	}
	if err := d.Sync(t.Context(), services()); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	stdin.Write([]byte("\n"))
	if r := next(); r.Err != "" || r.Peer != "127.0.0.2:18090" {
		t.Errorf("held connection after its service went: %+v, want the backend 127.0.0.2:18090", r)
	}
}
