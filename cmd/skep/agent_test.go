package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skep-io/skep/controlplane/api"
	"github.com/skep-io/skep/internal/testwait"
	"github.com/skep-io/skep/lab/labtest"
)

// TestServiceAnsweredThroughAgent is the thin slice end to end: a real
// `skep server`, a real `skep agent --dataplane=ebpf` joined with the
// node token, a Service and its Endpoints applied through the API, and a
// client process in the agent's cgroup whose connect to the ClusterIP the
// eBPF socket programs send to the backends.
func TestServiceAnsweredThroughAgent(t *testing.T) {
	// The agent's --node-ip is loopback.
	p := startServer(t, t.TempDir(), "--allow-loopback-node-addresses")
	c := p.client(t)
	node := fmt.Sprintf("slice-%d", os.Getpid())

	cgroup := filepath.Join("/sys/fs/cgroup/unified", "skep-test-"+node)
	if err := os.Mkdir(cgroup, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(cgroup) })

	// Two backends on loopback addresses, each saying who it is.
	var backends []string
	for _, ip := range []string{"127.0.0.21", "127.0.0.22"} {
		ln, err := net.Listen("tcp", ip+":0")
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, ip) })}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
		backends = append(backends, ln.Addr().String())
	}
	port := backends[0][strings.LastIndex(backends[0], ":")+1:]
	if port2 := backends[1][strings.LastIndex(backends[1], ":")+1:]; port2 != port {
		// Endpoints carry one port per subset: make the second backend
		// listen on the first one's port.
		ln, err := net.Listen("tcp", "127.0.0.22:"+port)
		if err != nil {
			t.Fatalf("listen on 127.0.0.22:%s: %v", port, err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "127.0.0.22") })}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
	}

	token, err := os.ReadFile(filepath.Join(p.dataDir, "node-token"))
	if err != nil {
		t.Fatal(err)
	}
	cfg, _ := loadServerURL(p)
	agentDir := t.TempDir()
	agentLog := &labtest.SyncBuffer{}
	metricsAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	agent := exec.Command(skepBinary, "agent", "--server", cfg, "--token", strings.TrimSpace(string(token)),
		"--node-name", node, "--node-ip", "127.0.0.1", "--data-dir", agentDir, "--cgroup-root", cgroup, "--dataplane", "ebpf", "--agent-port", "0",
		"--metrics-bind-address", metricsAddr)
	agent.Stdout, agent.Stderr = agentLog, agentLog
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		agent.Process.Signal(syscall.SIGTERM)
		agent.Wait()
		out, err := exec.Command(skepBinary, "agent", "--cleanup", "--node-name", node, "--cgroup-root", cgroup, "--data-dir", agentDir).CombinedOutput()
		if err != nil {
			t.Errorf("skep agent --cleanup: %v\n%s", err, out)
		}
		if _, err := os.Stat("/sys/fs/bpf/skep/" + node); !os.IsNotExist(err) {
			t.Errorf("pins of node %s left after --cleanup: %v", node, err)
		}
	})

	// The node registers itself.
	testwait.For(t, 20*time.Second, 100*time.Millisecond, func() error {
		out, _, _ := p.run("get", "nodes")
		if strings.Contains(out, node) && strings.Contains(out, "Ready") {
			return nil
		}
		return fmt.Errorf("node %s not registered and Ready; skep get nodes:\n%s\nagent log:\n%s", node, out, agentLog)
	})

	// The controller manager in the server gives it a pod CIDR.
	// (kubectl's tables do not show it, even with -o wide.)
	testwait.For(t, 20*time.Second, 100*time.Millisecond, func() error {
		out, _, _ := p.run("get", "node", node, "-o", "json")
		if strings.Contains(out, `"podCIDR": "10.244.`) {
			return nil
		}
		return fmt.Errorf("node %s has no pod CIDR from 10.244.0.0/16:\n%s\nagent log:\n%s", node, out, agentLog)
	})

	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "slice", Namespace: "default"},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}}}
	obj, err := c.Create(t.Context(), api.MustLookup("services"), svc)
	if err != nil {
		t.Fatal(err)
	}
	clusterIP := obj.(*corev1.Service).Spec.ClusterIP
	var portNum int32
	fmt.Sscan(port, &portNum)
	//lint:ignore SA1019 a selectorless Service's Endpoints, which users still write and skep mirrors into EndpointSlices
	ep := &corev1.Endpoints{ObjectMeta: metav1.ObjectMeta{Name: "slice", Namespace: "default"}, Subsets: []corev1.EndpointSubset{{
		Addresses: []corev1.EndpointAddress{{IP: "127.0.0.21"}, {IP: "127.0.0.22"}},
		Ports:     []corev1.EndpointPort{{Port: portNum, Protocol: corev1.ProtocolTCP}},
	}}}
	applied := time.Now()
	if _, err := c.Create(t.Context(), api.MustLookup("endpoints"), ep); err != nil {
		t.Fatal(err)
	}

	// Connect only once the dataplane holds the Service: before that a
	// connect to the ClusterIP would leave the machine by the default route.
	testwait.For(t, 20*time.Second, 100*time.Millisecond, func() error {
		if strings.Contains(agentLog.String(), "services=1") {
			return nil
		}
		return fmt.Errorf("the dataplane does not hold the Service; agent log:\n%s", agentLog)
	})
	cgfd, err := os.Open(cgroup)
	if err != nil {
		t.Fatal(err)
	}
	defer cgfd.Close()
	fetch := func() (string, error) {
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), "SKEP_TEST_FETCH=http://"+clusterIP+":80/")
		cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cgfd.Fd())}
		out, err := cmd.CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	testwait.For(t, 20*time.Second, 100*time.Millisecond, func() error {
		out, err := fetch()
		if err == nil && strings.HasPrefix(out, "127.0.0.2") {
			return nil
		}
		return fmt.Errorf("a connect to %s:80 was not answered by a backend; last: %s (%v)\nagent log:\n%s", clusterIP, out, err, agentLog)
	})
	t.Logf("first answer through ClusterIP %s %v after the Endpoints were applied", clusterIP, time.Since(applied).Round(time.Millisecond))

	seen := map[string]int{}
	for range 40 {
		out, err := fetch()
		if err != nil {
			t.Fatalf("connect to ClusterIP %s:80 from the node's cgroup: %v %s\nagent log:\n%s", clusterIP, err, out, agentLog)
		}
		seen[out]++
	}
	if seen["127.0.0.21"] == 0 || seen["127.0.0.22"] == 0 {
		t.Fatalf("40 connects reached %v; want both backends", seen)
	}

	// What the node's maps hold, as an operator reads it.
	out, err := exec.Command(skepBinary, "dataplane", "services", "--node-name", node).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "default/slice:TCP") || !strings.Contains(string(out), clusterIP+":80/tcp") ||
		!strings.Contains(string(out), "127.0.0.21:"+port) || !strings.Contains(string(out), "127.0.0.22:"+port) {
		t.Errorf("skep dataplane services: %v\n%s\nwant default/slice at %s:80 with both backends", err, out, clusterIP)
	}

	// What Prometheus scrapes from the agent, as from kube-proxy.
	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatalf("scrape the agent's metrics: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`skep_agent_services_sync_duration_seconds_count{dataplane="ebpf"}`,
		`skep_dataplane_sync_duration_seconds_count{dataplane="ebpf",sync="full"} 1`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("the agent's /metrics has no %s", want)
		}
	}
	var inMaps float64
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, `skep_dataplane_map_entries{dataplane="ebpf",map="backends"} `); ok {
			fmt.Sscan(v, &inMaps)
		}
	}
	if inMaps < 2 {
		t.Errorf("the agent's /metrics says %v backends in the maps; the slice Service alone has 2", inMaps)
	}

}

func loadServerURL(p *serverProc) (string, error) {
	data, err := os.ReadFile(p.config)
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if s, ok := strings.CutPrefix(strings.TrimSpace(line), "server: "); ok {
			return s, nil
		}
	}
	return "", fmt.Errorf("no server in %s", p.config)
}
