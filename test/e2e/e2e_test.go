// Package e2e runs skep as a user does: a lab cluster of nodes in network
// namespaces, each with its own agent, containerd and cgroup, and the test
// images; manifests applied through the API; answers checked from pods and
// from a client outside the cluster. Every test runs in both dataplane
// modes on the same lab, switched between them as an operator would, and
// the lab is taken down even when a test fails.
package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/miekg/dns"

	"github.com/skep-io/skep/agent/dataplane"
	"github.com/skep-io/skep/controlplane/api"
	"github.com/skep-io/skep/controlplane/client"
	"github.com/skep-io/skep/lab"
	"github.com/skep-io/skep/lab/labtest"
	"github.com/skep-io/skep/test/images"
)

var (
	skepBinary string
	imagesDir  string
)

func TestMain(m *testing.M) {
	// Re-executed inside a node's network namespace: ask a DNS server.
	if len(os.Args) == 4 && os.Args[1] == "dns-query" {
		os.Exit(dnsQuery(os.Args[2], os.Args[3]))
	}
	// Re-executed inside a node's network namespace: what either
	// dataplane has installed there.
	// Re-executed on a node: a UDP client (udp_test.go).
	if len(os.Args) == 5 && os.Args[1] == "udp-client" {
		os.Exit(udpClientMain(os.Args[2:]))
	}
	if len(os.Args) == 4 && os.Args[1] == "dataplane-state" {
		os.Exit(dataplaneState(os.Args[2], os.Args[3]))
	}
	if err := labtest.BecomeSubreaper(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	dir, err := os.MkdirTemp("", "skep-e2e-")
	if err != nil {
		panic(err)
	}
	skepBinary = filepath.Join(dir, "skep")
	if out, err := exec.Command("go", "build", "-o", skepBinary, "../../cmd/skep").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build skep: %v\n%s", err, out)
		os.Exit(1)
	}
	imagesDir = filepath.Join(dir, "images")
	if _, err := images.Build(context.Background(), imagesDir); err != nil {
		fmt.Fprintf(os.Stderr, "build test images: %v\n", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// cluster is a running lab and an admin client for it.
type cluster struct {
	lab *lab.Lab
	c   *client.HTTP
}

func upLab(t *testing.T, mode string) *cluster {
	t.Helper()
	name := fmt.Sprintf("e2e%s%d", mode[:1], os.Getpid()%1000)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	var progress bytes.Buffer
	l, err := lab.Up(ctx, lab.Config{Name: name, Nodes: 3, Dataplane: mode, Binary: skepBinary, ImagesDir: imagesDir,
		Dir: filepath.Join(os.TempDir(), "skep-lab-"+name), Progress: &progress,
		// A lost node is noticed in seconds, not the default minute.
		ServerArgs: []string{"--node-monitor-grace-period", "6s", "--pod-eviction-timeout", "8s"},
		AgentArgs:  []string{"--node-lease-duration", "4s"}})
	if l != nil {
		t.Cleanup(func() {
			if t.Failed() {
				keepLogs(t, l)
			}
			dctx, dcancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer dcancel()
			if err := l.Down(dctx); err != nil {
				t.Errorf("lab down: %v", err)
			}
			if !labtest.WaitShimsGone(15 * time.Second) {
				t.Errorf("containerd shims still running 15s after lab down")
			}
		})
	}
	if err != nil {
		t.Fatalf("lab up (%s): %v\n%s", mode, err, progress.String())
	}
	c, err := l.Client()
	if err != nil {
		t.Fatal(err)
	}
	return &cluster{lab: l, c: c}
}

// keepLogs copies the server's and agents' logs out of the lab before it
// goes down, so a failure can be read after the fact.
func keepLogs(t *testing.T, l *lab.Lab) {
	dir, err := os.MkdirTemp("", "skep-e2e-logs-")
	if err != nil {
		t.Log(err)
		return
	}
	for _, n := range append([]string{"server"}, l.Nodes()...) {
		if data, err := os.ReadFile(l.LogPath(n)); err == nil {
			_ = os.WriteFile(filepath.Join(dir, n+".log"), data, 0o644)
		}
	}
	t.Logf("the lab's logs are kept in %s", dir)
}

// apply applies a manifest as `skep apply -f -` would.
func (cl *cluster) apply(t *testing.T, manifest string) {
	t.Helper()
	cmd := exec.Command(skepBinary, "apply", "-f", "-")
	cmd.Env = append(os.Environ(), "SKEPCONFIG="+cl.lab.AdminConfigPath())
	cmd.Stdin = strings.NewReader(manifest)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("skep apply: %v\n%s", err, out)
	}
}

func (cl *cluster) pod(ns, name string) *corev1.Pod {
	obj, err := cl.c.Get(context.Background(), api.MustLookup("pods"), ns, name)
	if err != nil {
		return nil
	}
	return obj.(*corev1.Pod)
}

// waitPod polls until ok holds for the pod, or fails the test showing it.
func (cl *cluster) waitPod(t *testing.T, name string, timeout time.Duration, what string, ok func(*corev1.Pod) bool) *corev1.Pod {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var p *corev1.Pod
	for time.Now().Before(deadline) {
		if p = cl.pod("default", name); p != nil && ok(p) {
			return p
		}
		time.Sleep(250 * time.Millisecond)
	}
	if p != nil && p.Spec.NodeName != "" {
		cl.keepState(t, p.Spec.NodeName, name)
	}
	t.Fatalf("pod %s: waited %v for %s; last status: %+v", name, timeout, what, podSummary(p))
	return nil
}

func podSummary(p *corev1.Pod) string {
	if p == nil {
		return "<none>"
	}
	var cs []string
	for _, c := range p.Status.ContainerStatuses {
		cs = append(cs, fmt.Sprintf("%s ready=%v restarts=%d state=%+v", c.Name, c.Ready, c.RestartCount, c.State))
	}
	return fmt.Sprintf("node=%s phase=%s ip=%s containers=[%s]", p.Spec.NodeName, p.Status.Phase, p.Status.PodIP, strings.Join(cs, "; "))
}

func ready(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// TestCluster runs the suite on one lab in eBPF mode, switches every
// agent to iptables mode (checking that no eBPF state is left), runs the
// suite again, then in nftables mode (checking that no chain is left), and
// switches back (checking that no table is left).
func TestCluster(t *testing.T) {
	cl := upLab(t, "ebpf")
	for _, mode := range dataplane.Modes {
		t.Run(mode, func(t *testing.T) {
			if cl.lab.Dataplane() != mode {
				if !t.Run("SwitchDataplane", func(t *testing.T) { testSwitchDataplane(t, cl, mode) }) {
					t.FailNow()
				}
			}
			t.Run("IntroPodSharesVolumeAndNetwork", func(t *testing.T) { testIntroPod(t, cl) })
			t.Run("ServiceFromPodsAndOutside", func(t *testing.T) { testService(t, cl) })
			t.Run("LocalTrafficPolicy", func(t *testing.T) { testLocalTrafficPolicy(t, cl) })
			t.Run("ClientIPAffinity", func(t *testing.T) { testAffinity(t, cl) })
			t.Run("ClientIPAffinityTimeout", func(t *testing.T) { testAffinityTimeout(t, cl) })
			t.Run("UDP", func(t *testing.T) { testUDP(t, cl) })
			t.Run("HairpinAndExternalName", func(t *testing.T) { testHairpinAndExternalName(t, cl) })
			t.Run("UnknownClusterIPRefused", func(t *testing.T) { testUnknownClusterIP(t, cl) })
			t.Run("ScaleAndRollOutUnderTraffic", func(t *testing.T) { testScaleUnderTraffic(t, cl) })
			t.Run("AgentRestartUnderTraffic", func(t *testing.T) { testAgentRestart(t, cl) })
			t.Run("ControlPlaneDown", func(t *testing.T) { testControlPlaneDown(t, cl) })
			t.Run("PodDeletedWhileAgentAway", func(t *testing.T) { testPodDeletedWhileAgentAway(t, cl) })
			t.Run("NodeKilled", func(t *testing.T) { testNodeKilled(t, cl) })
			// The next mode starts from an empty namespace on three nodes.
			cl.reset(t)
		})
		if cl.lab.Dataplane() != mode {
			return // the switch failed: what follows would test the wrong mode
		}
	}
	t.Run("SwitchBackToEBPF", func(t *testing.T) { testSwitchDataplane(t, cl, "ebpf") })
	t.Run("CredentialsRotated", func(t *testing.T) { testCredentialsRotated(t, cl) })
}

// testCredentialsRotated: the lab's node credentials live 90 s, so every
// agent renewed its credential while the suite ran through it (its log
// says so), and every node is still Ready with the credential it has now.
func testCredentialsRotated(t *testing.T, cl *cluster) {
	for _, node := range cl.lab.Nodes() {
		data, err := os.ReadFile(cl.lab.LogPath(node))
		if err != nil {
			t.Fatal(err)
		}
		if n := strings.Count(string(data), "node credential renewed"); n == 0 {
			t.Errorf("%s: its agent never renewed its credential during the run; want at least one renewal of a 90 s credential", node)
		} else {
			t.Logf("%s: %d renewals", node, n)
		}
	}
	if err := cl.lab.WaitReady(t.Context(), time.Minute); err != nil {
		t.Fatalf("after the renewals: %v", err)
	}
}

// reset deletes what the suite made in the default namespace, at once
// (grace period 0), and brings back any node a test killed, so the next
// pass finds a clean cluster of Ready nodes.
func (cl *cluster) reset(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, node := range cl.lab.Nodes() {
		if !cl.lab.AgentRunning(node) {
			if err := cl.lab.ReviveNode(ctx, node); err != nil {
				t.Fatalf("revive %s: %v", node, err)
			}
		}
	}
	if err := cl.lab.WaitReady(ctx, time.Minute); err != nil {
		t.Fatalf("nodes Ready again: %v", err)
	}
	zero := int64(0)
	for _, kind := range []string{"deployments", "services", "pods"} {
		r := api.MustLookup(kind)
		objs, _, err := cl.c.List(ctx, r, "default", client.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range objs {
			if err := cl.c.Delete(ctx, r, "default", o.GetName(), client.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
				t.Errorf("delete %s %s: %v", kind, o.GetName(), err)
			}
		}
	}
	for {
		objs, _, err := cl.c.List(ctx, api.MustLookup("pods"), "default", client.ListOptions{})
		if err == nil && len(objs) == 0 {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("pods left in default 2 minutes into the reset: %d", len(objs))
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// testIntroPod runs the introduction's two-container pod, corrected, with
// the toolbox image: one container writes a file to the shared emptyDir and
// serves it on localhost; the other is ready only once it fetched it.
func testIntroPod(t *testing.T, cl *cluster) {
	cl.apply(t, `apiVersion: v1
kind: Pod
metadata:
  name: pod1
spec:
  containers:
    - name: app1
      image: skep/toolbox:latest
      command: ["sh", "-c", "echo hello-from-app1 > /data/msg && exec httpd -f -p 8080 -h /data"]
      volumeMounts:
        - name: data
          mountPath: /data
    - name: app2
      image: skep/toolbox:latest
      command: ["sh", "-c", "until wget -q -O /tmp/got http://localhost:8080/msg; do sleep 0.5; done; exec sleep 3600"]
      readinessProbe:
        exec: {command: ["sh", "-c", "grep -q hello-from-app1 /tmp/got && grep -q hello-from-app1 /data/msg"]}
        periodSeconds: 1
      volumeMounts:
        - name: data
          mountPath: /data
  volumes:
    - name: data
      emptyDir: {}
`)
	p := cl.waitPod(t, "pod1", 90*time.Second, "Ready with a pod IP", func(p *corev1.Pod) bool { return ready(p) && p.Status.PodIP != "" })
	t.Logf("pod1 Ready on %s with IP %s: app2 read app1's file from the shared volume and fetched it over localhost", p.Spec.NodeName, p.Status.PodIP)
}

// echoDeployment is the echo server, 3 replicas, ready once it answers;
// a new version is a new pod template, so applying it rolls the pods out.
func echoDeployment(version string) string {
	return `apiVersion: apps/v1
kind: Deployment
metadata:
  name: echo
spec:
  replicas: 3
  selector:
    matchLabels: {app: echo}
  template:
    metadata:
      labels: {app: echo}
    spec:
      containers:
      - name: echo
        image: skep/echo:latest
        env:
        - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
        - {name: NODE_NAME, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}
        - {name: VERSION, value: "` + version + `"}
        readinessProbe:
          httpGet: {path: /, port: 8080}
          periodSeconds: 1
`
}

// testService deploys the echo server on three nodes behind a NodePort
// Service and reaches it by ClusterIP and DNS name from a pod on every
// node, and by node port from the client outside the cluster.
func testService(t *testing.T, cl *cluster) {
	cl.apply(t, echoDeployment("1")+`---
apiVersion: v1
kind: Service
metadata:
  name: echo
spec:
  type: NodePort
  selector: {app: echo}
  ports:
  - port: 80
    targetPort: 8080
    nodePort: 31122
`)
	// Three ready replicas, one per node.
	deadline := time.Now().Add(2 * time.Minute)
	nodes := map[string]bool{}
	for time.Now().Before(deadline) {
		objs, _, err := cl.c.List(context.Background(), api.MustLookup("pods"), "default", client.ListOptions{LabelSelector: "app=echo"})
		nodes = map[string]bool{}
		for _, o := range objs {
			if p := o.(*corev1.Pod); err == nil && ready(p) {
				nodes[p.Spec.NodeName] = true
			}
		}
		if len(nodes) == 3 {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if len(nodes) != 3 {
		t.Fatalf("echo replicas ready on nodes %v; want 3 ready, one per node", nodes)
	}

	// From a pod on every node: 30 requests by the short name reach all
	// three backends, and the namespaced and full names answer too.
	// The first request waits (10 s at most) for this node's dataplane to
	// carry the Service, as a client waits for a rollout. After that every
	// request must succeed, and within 60 requests all three backends
	// answer (the dataplane may still be taking in the last endpoint).
	check := `for i in $(seq 20); do wget -q -O /dev/null http://echo/ && break; sleep 0.5; done
set -e
n=0
for i in $(seq 60); do
  wget -q -O - http://echo/ >> /tmp/out; echo >> /tmp/out
  n=$(grep -o '"pod":"[^"]*"' /tmp/out | sort -u | wc -l)
  [ "$n" -eq 3 ] && break
  sleep 0.1
done
[ "$n" -eq 3 ] || { echo "reached $n backends"; exit 2; }
wget -q -O - http://echo.default/ >/dev/null
wget -q -O - http://echo.default.svc.cluster.local/ >/dev/null
`
	for _, node := range cl.lab.Nodes() {
		name := "probe-" + node
		cl.apply(t, fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: %s
spec:
  nodeName: %s
  restartPolicy: Never
  containers:
  - name: probe
    image: skep/toolbox:latest
    command: ["sh", "-c", %q]
`, name, node, check))
	}
	for _, node := range cl.lab.Nodes() {
		p := cl.waitPod(t, "probe-"+node, 90*time.Second, "phase Succeeded (every backend reached by name from the pod)", func(p *corev1.Pod) bool {
			if p.Status.Phase == corev1.PodFailed {
				cl.keepState(t, node, p.Name)
				t.Fatalf("probe pod on %s failed: %s", node, podSummary(p))
			}
			return p.Status.Phase == corev1.PodSucceeded
		})
		t.Logf("from a pod on %s: ClusterIP by short, namespaced and full DNS name reached all 3 backends", p.Spec.NodeName)
	}

	// From outside: the node port answers on every node.
	for _, node := range cl.lab.Nodes() {
		url := fmt.Sprintf("http://%s:31122/", cl.lab.NodeIP(node))
		var out bytes.Buffer
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		code, err := cl.lab.Exec(ctx, "client", []string{"curl", "-sS", "--max-time", "3", "--retry", "5", "--retry-all-errors", url}, nil, &out, &out)
		cancel()
		if err != nil || code != 0 || !strings.Contains(out.String(), `"pod":"echo-`) {
			t.Fatalf("curl %s from the client: exit %d %v\n%s", url, code, err, out.String())
		}
		t.Logf("NodePort %s from outside answered: %s", url, strings.TrimSpace(out.String()))
	}

	// A LoadBalancer address: one node answers ARP for it on the node
	// network, and the client outside reaches the Service through it.
	cl.apply(t, `apiVersion: v1
kind: Service
metadata:
  name: echo-lb
spec:
  type: LoadBalancer
  selector: {app: echo}
  ports:
  - port: 80
    targetPort: 8080
`)
	obj, err := cl.c.Get(context.Background(), api.MustLookup("services"), "default", "echo-lb")
	if err != nil {
		t.Fatal(err)
	}
	ing := obj.(*corev1.Service).Status.LoadBalancer.Ingress
	if len(ing) != 1 {
		t.Fatalf("echo-lb: ingress %+v; want one address from the lab's pool", ing)
	}
	url := "http://" + ing[0].IP + "/"
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	code, err := cl.lab.Exec(ctx, "client", []string{"curl", "-sS", "--max-time", "3", "--retry", "8", "--retry-all-errors", url}, nil, &out, &out)
	if err != nil || code != 0 || !strings.Contains(out.String(), `"pod":"echo-`) {
		t.Fatalf("curl %s (LoadBalancer) from the client: exit %d %v\n%s", url, code, err, out.String())
	}
	t.Logf("LoadBalancer %s from outside answered: %s", url, strings.TrimSpace(out.String()))
}

// steadyResult is what a steady client saw: requests that succeeded,
// those of them that took over a second (a lost SYN is sent again after
// 1 s), and a line per failure (its time and curl's exit code) or slow
// request.
type steadyResult struct {
	ok, slow, failed   int
	failures, slowOnes string
}

// steadyClient makes requests to url from a node, one after another, for
// d, and reports how many succeeded, how many of them slowly, and how many
// failed. A request may take 5 s, a client's usual connect budget: one
// that answers after a retransmitted SYN is slow, not failed; one sent to
// an endpoint that is gone still fails (refused, or unreachable after 3 s
// of ARP).
func (cl *cluster) steadyClient(node, url string, d time.Duration) <-chan steadyResult {
	out := make(chan steadyResult, 1)
	script := fmt.Sprintf(`ok=0; slow=0; fail=0; end=$(( $(date +%%s) + %d ))
while [ $(date +%%s) -lt $end ]; do
  if t=$(curl -s --max-time 5 -o /dev/null -w '%%{time_total}' %s); then
    ok=$((ok+1))
    case "$t" in 0.*) ;; *) slow=$((slow+1)); echo "slow at $(date +%%T.%%N): ${t}s" >&2;; esac
  else rc=$?; fail=$((fail+1)); echo "failed at $(date +%%T.%%N) with curl exit $rc" >&2; fi
done
echo $ok $slow $fail`, int(d.Seconds()), url)
	go func() {
		var stdout, stderr bytes.Buffer
		ctx, cancel := context.WithTimeout(context.Background(), d+30*time.Second)
		defer cancel()
		cl.lab.Exec(ctx, node, []string{"sh", "-c", script}, nil, &stdout, &stderr)
		r := steadyResult{}
		for _, line := range strings.Split(strings.TrimSpace(stderr.String()), "\n") {
			switch {
			case strings.HasPrefix(line, "slow"):
				r.slowOnes += line + "\n"
			case line != "":
				r.failures += line + "\n"
			}
		}
		if _, err := fmt.Sscan(stdout.String(), &r.ok, &r.slow, &r.failed); err != nil {
			r.failed = -1
		}
		out <- r
	}()
	return out
}

// logSlow reports the requests that succeeded only after a retransmission.
func (r steadyResult) logSlow(t *testing.T) {
	t.Helper()
	if r.slow > 0 {
		t.Logf("%d of %d requests took over a second:\n%s", r.slow, r.ok, r.slowOnes)
	}
}

func (cl *cluster) clusterIP(t *testing.T, name string) string {
	t.Helper()
	obj, err := cl.c.Get(context.Background(), api.MustLookup("services"), "default", name)
	if err != nil {
		t.Fatal(err)
	}
	return obj.(*corev1.Service).Spec.ClusterIP
}

// waitReadyReplicas waits until the echo Deployment has n ready pods and
// no others.
func (cl *cluster) waitReadyReplicas(t *testing.T, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var nReady, all int
	for time.Now().Before(deadline) {
		objs, _, err := cl.c.List(context.Background(), api.MustLookup("pods"), "default", client.ListOptions{LabelSelector: "app=echo"})
		if err == nil {
			nReady, all = 0, len(objs)
			for _, o := range objs {
				if p := o.(*corev1.Pod); ready(p) && p.DeletionTimestamp == nil {
					nReady++
				}
			}
			if nReady == n && all == n {
				return
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("echo: %d ready of %d pods after %v; want %d", nReady, all, timeout, n)
}

func (cl *cluster) skep(t *testing.T, args ...string) {
	t.Helper()
	cmd := exec.Command(skepBinary, args...)
	cmd.Env = append(os.Environ(), "SKEPCONFIG="+cl.lab.AdminConfigPath())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("skep %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// testScaleUnderTraffic scales the echo Deployment up and down and rolls it
// out with a new template while a client on a node keeps connecting to
// its ClusterIP: not one request may fail.
func testScaleUnderTraffic(t *testing.T, cl *cluster) {
	url := "http://" + cl.clusterIP(t, "echo") + "/"
	node := cl.lab.Nodes()[0]
	const d = 25 * time.Second
	start := time.Now()
	result := cl.steadyClient(node, url, d)
	cl.skep(t, "scale", "deploy", "echo", "--replicas", "5")
	cl.waitReadyReplicas(t, 5, d)
	cl.skep(t, "scale", "deploy", "echo", "--replicas", "2")
	cl.waitReadyReplicas(t, 2, d)
	cl.apply(t, echoDeployment("2"))
	cl.waitReadyReplicas(t, 3, d)
	t.Logf("scaled 3→5→2 and rolled out a new template to 3 in %v", time.Since(start).Round(time.Millisecond))
	r := <-result
	if r.failed != 0 || r.ok < 20 {
		t.Fatalf("steady client on %s to %s during scaling and rollout: %d succeeded, %d failed; want none failed\n%s", node, url, r.ok, r.failed, r.failures)
	}
	r.logSlow(t)
	t.Logf("steady client on %s: %d requests, none failed", node, r.ok)
}

// testAgentRestart stops a node's agent and starts it again while a client
// on that node keeps connecting through the ClusterIP: the programs and
// rules stay in place, so no request fails, and the restarted agent adopts
// the running pods.
func testAgentRestart(t *testing.T, cl *cluster) {
	url := "http://" + cl.clusterIP(t, "echo") + "/"
	node := cl.lab.Nodes()[0]
	before := podUIDsOn(t, cl, node)
	result := cl.steadyClient(node, url, 10*time.Second)
	time.Sleep(2 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := cl.lab.StopAgent(ctx, node); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	if err := cl.lab.StartAgent(ctx, node); err != nil {
		t.Fatal(err)
	}
	r := <-result
	if r.failed != 0 || r.ok < 10 {
		t.Fatalf("steady client on %s while its agent restarted: %d succeeded, %d failed; want none failed\n%s", node, r.ok, r.failed, r.failures)
	}
	cl.waitReadyReplicas(t, 3, 30*time.Second)
	after := podUIDsOn(t, cl, node)
	for uid := range before {
		if !after[uid] {
			t.Errorf("pod %s on %s was replaced across the agent restart; want it adopted", uid, node)
		}
	}
	r.logSlow(t)
	t.Logf("agent of %s restarted: %d requests through the ClusterIP, none failed; its %d pods adopted", node, r.ok, len(before))
}

func podUIDsOn(t *testing.T, cl *cluster, node string) map[string]bool {
	t.Helper()
	objs, _, err := cl.c.List(context.Background(), api.MustLookup("pods"), "default", client.ListOptions{FieldSelector: "spec.nodeName=" + node})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, o := range objs {
		if p := o.(*corev1.Pod); p.Status.Phase == corev1.PodRunning {
			out[string(p.UID)] = true
		}
	}
	return out
}

// dnsQuery asks server for name and prints every answer record.
func dnsQuery(server, name string) int {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeA)
	r, err := dns.Exchange(m, server)
	if err != nil {
		fmt.Println(err)
		return 1
	}
	fmt.Println(dns.RcodeToString[r.Rcode])
	for _, rr := range r.Answer {
		fmt.Println(rr.String())
	}
	return 0
}

// testUnknownClusterIP connects from a node to an address of the service
// range that no Service has: it fails at once (iptables: refused by the
// rule for the range; eBPF: unreachable by its route) instead of leaving
// the node and hanging until the client gives up.
func testUnknownClusterIP(t *testing.T, cl *cluster) {
	objs, _, err := cl.c.List(context.Background(), api.MustLookup("services"), "", client.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	used := map[string]bool{}
	for _, o := range objs {
		used[o.(*corev1.Service).Spec.ClusterIP] = true
	}
	ip := "10.111.255.254"
	for n := 253; used[ip]; n-- {
		ip = fmt.Sprintf("10.111.255.%d", n)
	}
	node := cl.lab.Nodes()[0]
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	code, err := cl.lab.Exec(ctx, node, []string{"curl", "-sS", "--max-time", "5", "http://" + ip + "/"}, nil, &out, &out)
	took := time.Since(start)
	if err != nil || code != 7 || took > 2*time.Second {
		t.Fatalf("curl http://%s/ from %s: exit %d (%v) after %v: %s; want exit 7 (could not connect) within 2s",
			ip, node, code, err, took.Round(time.Millisecond), strings.TrimSpace(out.String()))
	}
	t.Logf("curl to unused cluster IP %s from %s failed at once (%v): %s", ip, node, took.Round(time.Millisecond), strings.TrimSpace(out.String()))
}

// testHairpinAndExternalName: a pod reaches itself through its own
// Service, and an ExternalName Service resolves to a CNAME of its target
// at the node's cluster DNS.
func testHairpinAndExternalName(t *testing.T, cl *cluster) {
	cl.apply(t, `apiVersion: v1
kind: Service
metadata:
  name: hairpin
spec:
  selector: {app: hairpin}
  ports:
  - {port: 80, targetPort: 8080}
---
apiVersion: v1
kind: Pod
metadata:
  # Not named like its Service: /etc/hosts maps the pod's own name to its
  # address, which would bypass the Service.
  name: hairpin-pod
  labels: {app: hairpin}
spec:
  restartPolicy: Never
  containers:
  - name: sh
    image: skep/toolbox:latest
    command: ["sh", "-c", "echo me > /tmp/me && httpd -p 8080 -h /tmp && for i in $(seq 40); do wget -q -O - http://hairpin/me | grep -q me && exit 0; sleep 0.5; done; exit 1"]
---
apiVersion: v1
kind: Service
metadata:
  name: my-service
spec:
  type: ExternalName
  externalName: external-service.example.com
`)
	p := cl.waitPod(t, "hairpin-pod", 60*time.Second, "phase Succeeded (the pod reached itself through its Service)", func(p *corev1.Pod) bool {
		if p.Status.Phase == corev1.PodFailed {
			t.Fatalf("hairpin pod failed: %s", podSummary(p))
		}
		return p.Status.Phase == corev1.PodSucceeded
	})
	t.Logf("pod %s on %s reached itself through Service hairpin", p.Name, p.Spec.NodeName)

	node := cl.lab.Nodes()[0]
	obj, err := cl.c.Get(context.Background(), api.MustLookup("nodes"), "", node)
	if err != nil {
		t.Fatal(err)
	}
	cidr := obj.(*corev1.Node).Spec.PodCIDR
	dnsIP := strings.TrimSuffix(cidr, ".0/24") + ".1"
	deadline := time.Now().Add(20 * time.Second)
	var out bytes.Buffer
	for time.Now().Before(deadline) {
		out.Reset()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		cl.lab.Exec(ctx, node, []string{os.Args[0], "dns-query", dnsIP + ":53", "my-service.default.svc.cluster.local"}, nil, &out, &out)
		cancel()
		if strings.Contains(out.String(), "CNAME\texternal-service.example.com.") {
			t.Logf("my-service.default.svc.cluster.local at %s: %s", dnsIP, strings.ReplaceAll(strings.TrimSpace(out.String()), "\n", " | "))
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Fatalf("ExternalName my-service at the cluster DNS %s: got %q; want a CNAME to external-service.example.com.", dnsIP, out.String())
}

// testAffinity: with sessionAffinity ClientIP, every request from one
// client reaches the same backend.
func testAffinity(t *testing.T, cl *cluster) {
	cl.apply(t, `apiVersion: v1
kind: Service
metadata:
  name: echo-aff
spec:
  selector: {app: echo}
  sessionAffinity: ClientIP
  sessionAffinityConfig:
    clientIP: {timeoutSeconds: 60}
  ports:
  - {port: 80, targetPort: 8080}
`)
	url := "http://" + cl.clusterIP(t, "echo-aff") + "/"
	node := cl.lab.Nodes()[1]
	script := fmt.Sprintf(`for i in $(seq 100); do curl -s --max-time 2 %s >/dev/null && break; sleep 0.1; done
for i in $(seq 20); do curl -s --max-time 2 %s; echo; done | grep -o '"pod":"[^"]*"' | sort | uniq -c`, url, url)
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := cl.lab.Exec(ctx, node, []string{"sh", "-c", script}, nil, &out, &out); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 1 || !strings.Contains(lines[0], "20 ") {
		t.Fatalf("20 requests from %s to %s (ClientIP affinity): %q; want all 20 at one backend", node, url, out.String())
	}
	t.Logf("ClientIP affinity: 20 requests from %s all reached %s", node, strings.TrimSpace(lines[0]))
}

// testNodeKilled kills a node (its agent, containerd and pods stopped, its
// cable cut): its endpoints leave the Service, the Service keeps answering
// from the other nodes, and its pods come back on the other nodes.
func testNodeKilled(t *testing.T, cl *cluster) {
	nodes := cl.lab.Nodes()
	victim, from := nodes[len(nodes)-1], nodes[0]
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	killed := time.Now()
	if err := cl.lab.KillNode(ctx, victim); err != nil {
		t.Fatal(err)
	}
	// Its addresses leave the Endpoints.
	deadline := time.Now().Add(45 * time.Second)
	for {
		obj, err := cl.c.Get(ctx, api.MustLookup("endpoints"), "default", "echo")
		on := 0
		if err == nil {
			//lint:ignore SA1019 waits on the v1 Endpoints the controller writes
			for _, ss := range obj.(*corev1.Endpoints).Subsets {
				for _, a := range ss.Addresses {
					if a.NodeName != nil && *a.NodeName == victim {
						on++
					}
				}
			}
		}
		if err == nil && on == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("45s after %s was killed the echo Endpoints still list %d ready addresses on it", victim, on)
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Logf("%s killed: its endpoints left the Service after %v", victim, time.Since(killed).Round(time.Millisecond))
	// The Service keeps answering, from the nodes still alive.
	url := "http://" + cl.clusterIP(t, "echo") + "/"
	var out bytes.Buffer
	script := fmt.Sprintf(`sleep 1; fail=0; for i in $(seq 30); do curl -s --max-time 2 -o /dev/null %s || fail=$((fail+1)); done; echo $fail`, url)
	if _, err := cl.lab.Exec(ctx, from, []string{"sh", "-c", script}, nil, &out, &out); err != nil || strings.TrimSpace(out.String()) != "0" {
		t.Fatalf("30 requests from %s to %s after %s was lost: %v, failures %q; want 0", from, url, victim, err, out.String())
	}
	// Its pods come back elsewhere.
	deadline = time.Now().Add(60 * time.Second)
	for {
		objs, _, err := cl.c.List(ctx, api.MustLookup("pods"), "default", client.ListOptions{LabelSelector: "app=echo"})
		nReady := 0
		if err == nil {
			for _, o := range objs {
				p := o.(*corev1.Pod)
				if p.Spec.NodeName != victim && ready(p) && p.DeletionTimestamp == nil {
					nReady++
				}
			}
		}
		if nReady == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("60s after the endpoints left, %d echo pods ready on the remaining nodes; want 3", nReady)
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Logf("%s killed: 30 requests from %s all answered, 3 echo pods ready on the other nodes %v after the kill", victim, from, time.Since(killed).Round(time.Millisecond))
}
