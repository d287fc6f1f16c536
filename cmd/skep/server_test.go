package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skep-io/skep/controlplane/api"
	"github.com/skep-io/skep/controlplane/client"
	"github.com/skep-io/skep/lab/labtest"
)

// skepBinary is built once for the tests that run skep as a user does.
var skepBinary string

func TestMain(m *testing.M) {
	// Re-executed as a client inside a cgroup: fetch one URL and print it.
	if url := os.Getenv("SKEP_TEST_FETCH"); url != "" {
		os.Exit(fetchOnce(url))
	}
	dir, err := os.MkdirTemp("", "skep-bin-")
	if err != nil {
		panic(err)
	}
	skepBinary = filepath.Join(dir, "skep")
	out, err := exec.Command("go", "build", "-o", skepBinary, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build skep: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// serverProc is a `skep server` process started by a test.
type serverProc struct {
	cmd     *exec.Cmd
	dataDir string
	config  string
	log     *labtest.SyncBuffer
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startServer runs `skep server` on dataDir, with extra flags, and waits
// until it answers. It is stopped (by PID) when the test ends, unless the
// test killed it.
func startServer(t testing.TB, dataDir string, extra ...string) *serverProc {
	t.Helper()
	home := t.TempDir() // the server writes ~/.skep/config when missing
	port := freePort(t)
	p := &serverProc{dataDir: dataDir, config: filepath.Join(dataDir, "admin.conf"), log: &labtest.SyncBuffer{}}
	args := []string{"server", "--data-dir", dataDir, "--listen", fmt.Sprintf("127.0.0.1:%d", port),
		"--nats-listen", "127.0.0.1:-1", "--lb-pool", "198.18.200.0/28"}
	p.cmd = exec.Command(skepBinary, append(args, extra...)...)
	p.cmd.Env = append(os.Environ(), "HOME="+home)
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.stop() })
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if _, _, err := p.run("get", "ns"); err == nil {
			cfg, _ := client.LoadConfig(p.config)
			if strings.Contains(cfg.Server, fmt.Sprint(port)) {
				return p
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("skep server did not answer within 20s:\n%s", p.log)
	return nil
}

func (p *serverProc) stop() {
	if p.cmd.ProcessState != nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-done
	}
}

func (p *serverProc) kill9() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	_ = p.cmd.Wait()
}

// run runs a client verb against the server.
func (p *serverProc) run(args ...string) (string, string, error) {
	cmd := exec.Command(skepBinary, args...)
	cmd.Env = append(os.Environ(), "SKEPCONFIG="+p.config, "HOME=/nonexistent")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.String(), errb.String(), err
}

func (p *serverProc) client(t *testing.T) *client.HTTP {
	t.Helper()
	cfg, err := client.LoadConfig(p.config)
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// examples is the introduction's manifests: shared/ beside the repository
// where it is (CI, a developer's checkout), else the copy under test/e2e.
var examples = func() string {
	if _, err := os.Stat("../../../shared/examples/intro/pod.yaml"); err == nil {
		return "../../../shared/examples/intro"
	}
	return "../../test/e2e/testdata/intro"
}()

// TestIntroExamples applies the introduction's manifests as its README
// says skep must treat them.
func TestIntroExamples(t *testing.T) {
	p := startServer(t, t.TempDir())
	ex := func(name string) string { return filepath.Join(examples, name) }

	refused := []struct {
		file     string
		mentions []string
	}{
		{"pod.yaml", []string{"pod.yaml: document 1 (Pod/Pod1)", "spec.volumns", "unknown field", `metadata.name: Invalid value: "Pod1"`, "lowercase RFC 1123"}},
		{"service.yaml", []string{"service.yaml: document 1 (Service/service)", "spec.ports[0].nodePort", "may not be used when `type` is 'ClusterIP'"}},
	}
	for _, r := range refused {
		_, stderr, err := p.run("apply", "-f", ex(r.file))
		if err == nil {
			t.Fatalf("skep apply -f %s succeeded; want it refused", r.file)
		}
		for _, m := range r.mentions {
			if !strings.Contains(stderr, m) {
				t.Errorf("skep apply -f %s: error %q does not mention %q", r.file, stderr, m)
			}
		}
	}
	if out, _, _ := p.run("get", "pods,svc", "-A", "-o", "name"); strings.TrimSpace(out) != "" {
		t.Fatalf("refused documents were written: %q", out)
	}

	// Corrected, the pod applies.
	podYAML, _ := os.ReadFile(ex("pod.yaml"))
	fixed := strings.NewReplacer("name: Pod1", "name: pod1", "volumns:", "volumes:").Replace(string(podYAML))
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "pod.yaml"), []byte(fixed), 0o644)
	if _, stderr, err := p.run("apply", "-f", filepath.Join(dir, "pod.yaml")); err != nil {
		t.Fatalf("apply the corrected pod: %v\n%s", err, stderr)
	}
	out, _, _ := p.run("get", "pod", "pod1", "-o", "json")
	var pod corev1.Pod
	if err := json.Unmarshal([]byte(out), &pod); err != nil {
		t.Fatalf("skep get pod pod1 -o json: %v\n%s", err, out)
	}
	if len(pod.Spec.Containers) != 2 || pod.Spec.Volumes[0].EmptyDir == nil || pod.Spec.Containers[1].VolumeMounts[0].MountPath != "/data" {
		t.Errorf("pod1: want two containers sharing an emptyDir at /data, got %+v", pod.Spec)
	}

	// The service as a NodePort, once its namespace exists.
	svcYAML, _ := os.ReadFile(ex("service.yaml"))
	nodePort := strings.Replace(string(svcYAML), "  type: #", "  type: NodePort #", 1)
	os.WriteFile(filepath.Join(dir, "svc.yaml"), []byte(nodePort), 0o644)
	if _, stderr, err := p.run("apply", "-f", filepath.Join(dir, "svc.yaml")); err == nil || !strings.Contains(stderr, `namespaces "dev" not found`) {
		t.Errorf("apply into a missing namespace: got %v %q; want namespaces \"dev\" not found", err, stderr)
	}
	os.WriteFile(filepath.Join(dir, "ns.yaml"), []byte("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: dev\n"), 0o644)
	if _, stderr, err := p.run("apply", "-f", filepath.Join(dir, "ns.yaml"), "-f", filepath.Join(dir, "svc.yaml")); err != nil {
		t.Fatalf("apply namespace and service: %v\n%s", err, stderr)
	}
	out, _, _ = p.run("get", "svc", "service", "-n", "dev", "-o", "json")
	var svc corev1.Service
	json.Unmarshal([]byte(out), &svc)
	if svc.Spec.Ports[0].NodePort != 31122 || svc.Spec.SessionAffinity != corev1.ServiceAffinityNone || !inServiceCIDR(svc.Spec.ClusterIP) {
		t.Errorf("dev/service: nodePort %d, sessionAffinity %q, clusterIP %q; want 31122, None, an address in 10.96.0.0/12",
			svc.Spec.Ports[0].NodePort, svc.Spec.SessionAffinity, svc.Spec.ClusterIP)
	}

	// Four manifests of one Service: each apply changes its type.
	var clusterIP string
	var nodePortSeen int32
	for _, step := range []struct {
		file string
		typ  corev1.ServiceType
	}{{"service-clusterip.yaml", "ClusterIP"}, {"service-nodeport.yaml", "NodePort"}, {"service-loadbalancer.yaml", "LoadBalancer"}, {"service-externalname.yaml", "ExternalName"}} {
		if _, stderr, err := p.run("apply", "-f", ex(step.file)); err != nil {
			t.Fatalf("apply %s: %v\n%s", step.file, err, stderr)
		}
		out, _, _ := p.run("get", "svc", "my-service", "-o", "json")
		var s corev1.Service
		if err := json.Unmarshal([]byte(out), &s); err != nil {
			t.Fatal(err)
		}
		if s.Spec.Type != step.typ {
			t.Fatalf("after %s: type %s, want %s", step.file, s.Spec.Type, step.typ)
		}
		switch step.typ {
		case "ClusterIP":
			clusterIP = s.Spec.ClusterIP
			if !inServiceCIDR(clusterIP) {
				t.Errorf("ClusterIP %q not in 10.96.0.0/12", clusterIP)
			}
		case "NodePort", "LoadBalancer":
			if s.Spec.ClusterIP != clusterIP {
				t.Errorf("after %s the ClusterIP changed from %s to %s", step.file, clusterIP, s.Spec.ClusterIP)
			}
			np := s.Spec.Ports[0].NodePort
			if np < 30000 || np > 32767 || nodePortSeen != 0 && np != nodePortSeen {
				t.Errorf("after %s: nodePort %d; want one from 30000-32767, kept across the change", step.file, np)
			}
			nodePortSeen = np
			if step.typ == "LoadBalancer" && (len(s.Status.LoadBalancer.Ingress) != 1 || !strings.HasPrefix(s.Status.LoadBalancer.Ingress[0].IP, "198.18.200.")) {
				t.Errorf("LoadBalancer ingress %+v; want one address from the pool 198.18.200.0/28", s.Status.LoadBalancer.Ingress)
			}
		case "ExternalName":
			if s.Spec.ClusterIP != "" || s.Spec.ExternalName != "external-service.example.com" {
				t.Errorf("ExternalName: clusterIP %q externalName %q", s.Spec.ClusterIP, s.Spec.ExternalName)
			}
		}
	}
	// The ClusterIP and node port the ExternalName no longer needs are free.
	c := p.client(t)
	reuse := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "reuse", Namespace: "default"}, Spec: corev1.ServiceSpec{
		Type: corev1.ServiceTypeNodePort, ClusterIP: clusterIP, Ports: []corev1.ServicePort{{Port: 80, NodePort: nodePortSeen}}}}
	if _, err := c.Create(t.Context(), api.MustLookup("services"), reuse); err != nil {
		t.Errorf("the ClusterIP %s and node port %d were not released by the change to ExternalName: %v", clusterIP, nodePortSeen, err)
	}

	// A Deployment, read back with the defaults Kubernetes gives.
	os.WriteFile(filepath.Join(dir, "deploy.yaml"), []byte(`apiVersion: apps/v1
kind: Deployment
metadata:
  name: echo
spec:
  selector:
    matchLabels: {app: echo}
  template:
    metadata:
      labels: {app: echo}
    spec:
      containers:
      - name: echo
        image: skep/echo:latest
`), 0o644)
	if _, stderr, err := p.run("apply", "-f", filepath.Join(dir, "deploy.yaml")); err != nil {
		t.Fatalf("apply deployment: %v\n%s", err, stderr)
	}
	out, _, _ = p.run("get", "deploy", "echo", "-o", "json")
	var d appsv1.Deployment
	json.Unmarshal([]byte(out), &d)
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 1 || d.Spec.Strategy.RollingUpdate == nil || d.Spec.Strategy.RollingUpdate.MaxSurge.String() != "25%" {
		t.Errorf("deployment echo read back: %+v; want replicas 1 and RollingUpdate 25%%/25%%", d.Spec)
	}
	table, _, _ := p.run("get", "svc", "-A")
	for _, col := range []string{"NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE", "3017:31122/TCP"} {
		if !strings.Contains(table, col) {
			t.Errorf("skep get svc -A: %q missing from\n%s", col, table)
		}
	}
}

func inServiceCIDR(ip string) bool {
	return strings.HasPrefix(ip, "10.") && func() bool {
		var a, b int
		fmt.Sscanf(ip, "10.%d.%d", &a, &b)
		return a >= 96 && a <= 111
	}()
}

// TestKill9LosesNothing kills the server with SIGKILL while clients are
// writing, starts it again on the same data dir, and finds every write it
// had acknowledged, with the same resourceVersion.
func TestKill9LosesNothing(t *testing.T) {
	dir := t.TempDir()
	p := startServer(t, dir)
	c := p.client(t)
	services := api.MustLookup("services")
	var mu sync.Mutex
	acked := map[string]string{} // name → resourceVersion
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				name := fmt.Sprintf("w%d-%d", w, i)
				obj, err := c.Create(ctx, services, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
					Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}}})
				if err != nil {
					return
				}
				mu.Lock()
				acked[name] = obj.GetResourceVersion()
				mu.Unlock()
			}
		}()
	}
	time.Sleep(700 * time.Millisecond)
	p.kill9()
	cancel()
	wg.Wait()
	if len(acked) == 0 {
		t.Fatalf("no write was acknowledged before the kill:\n%s", p.log)
	}

	p = startServer(t, dir)
	c = p.client(t)
	for name, rv := range acked {
		obj, err := c.Get(t.Context(), services, "default", name)
		if err != nil {
			t.Errorf("acknowledged service %s (resourceVersion %s) lost after kill -9: %v", name, rv, err)
			continue
		}
		if obj.GetResourceVersion() != rv {
			t.Errorf("service %s: resourceVersion %s after restart, %s when acknowledged", name, obj.GetResourceVersion(), rv)
		}
	}
	t.Logf("%d acknowledged creates, all present after kill -9 and restart", len(acked))
}

func fetchOnce(url string) int {
	hc := &http.Client{Timeout: 2 * time.Second}
	resp, err := hc.Get(url)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	os.Stdout.Write(body)
	return 0
}
