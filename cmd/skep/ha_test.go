package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/skep-io/skep/controlplane/api"
	"github.com/skep-io/skep/controlplane/client"
	"github.com/skep-io/skep/controlplane/leader"
	"github.com/skep-io/skep/controlplane/nodetest"
	"github.com/skep-io/skep/lab/labtest"
)

// startNATS runs Debian's nats-server with JetStream, as an operator would
// run the external datastore, and returns its URL and credentials.
func startNATS(t *testing.T) (url, creds string) {
	t.Helper()
	port := freePort(t)
	creds = "skep:ha-test-password"
	cmd := exec.Command("nats-server", "-js", "-sd", t.TempDir(), "-a", "127.0.0.1", "-p", fmt.Sprint(port),
		"--user", "skep", "--pass", "ha-test-password")
	log := &labtest.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatalf("start nats-server: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	})
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return "nats://" + addr, creds
		}
		if time.Now().After(deadline) {
			t.Fatalf("nats-server did not listen on %s within 10s:\n%s", addr, log)
		}
	}
}

// copyPKI gives a second server the first one's CA and tokens, as the
// operator does when adding a server (README, "High availability").
func copyPKI(t *testing.T, from, to string) {
	t.Helper()
	for _, f := range []string{"tls/ca.crt", "tls/ca.key", "tls/admin-token", "node-token"} {
		b, err := os.ReadFile(filepath.Join(from, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(filepath.Join(to, f)), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// TestTwoServersLeaderFailover: two `skep server` processes on one
// external NATS both serve the API; the one holding the controller lease
// is killed with SIGKILL; the other takes the scheduler and controllers
// over within 15 s, and no pod is bound twice or lost.
func TestTwoServersLeaderFailover(t *testing.T) {
	url, creds := startNATS(t)
	dirA, dirB := t.TempDir(), t.TempDir()
	ha := []string{"--nats-url", url, "--nats-creds", creds}
	a := startServer(t, dirA, ha...)

	// A server with its own, different CA must not join the cluster.
	stray := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	strayCmd := exec.CommandContext(ctx, skepBinary, append([]string{"server", "--data-dir", stray, "--listen", fmt.Sprintf("127.0.0.1:%d", freePort(t))}, ha...)...)
	strayCmd.Env = append(os.Environ(), "HOME="+t.TempDir())
	out, err := strayCmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "datastore belongs to a cluster with another CA") {
		t.Fatalf("a server with another CA on the same NATS: err %v, output:\n%s", err, out)
	}

	copyPKI(t, dirA, dirB)
	b := startServer(t, dirB, ha...)
	leaderProc, follower := a, b
	if strings.Contains(b.log.String(), "controller manager starting: leader") {
		leaderProc, follower = b, a
	}
	if !strings.Contains(leaderProc.log.String(), "controller manager starting: leader") {
		t.Fatalf("neither server says it leads:\nA:\n%s\nB:\n%s", a.log, b.log)
	}
	leaderClient, followerClient := leaderProc.client(t), follower.client(t)

	// The simulated nodes talk to the server that will survive, as real
	// agents would fail over to it; both serve the one cluster.
	nodetest.Start(t, followerClient, "node-1", "node-2", "node-3")
	if _, err := leaderClient.Get(context.Background(), api.MustLookup("nodes"), "", "node-3"); err != nil {
		t.Fatalf("the leader does not see the node written through the other server: %v", err)
	}

	// Record every binding: a pod's nodeName, once set, must never change.
	bindings := recordBindings(t, followerClient)

	mustRun(t, leaderProc, "apply", "-f", writeFile(t, t.TempDir(), "web.yaml", webDeployment("skep/echo:v1", "", "")))
	mustRun(t, follower, "rollout", "status", "deploy/web", "--timeout", "60s")
	before := webPods(t, followerClient)

	oldHolder := leaseHolderOf(t, followerClient)

	killed := time.Now()
	leaderProc.kill9()
	mustRun(t, follower, "scale", "deploy", "web", "--replicas", "6")
	var took time.Duration
	for deadline := killed.Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if h := leaseHolderOf(t, followerClient); h != oldHolder && h != "" {
			took = time.Since(killed)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("nobody took the controller lease over within 20s of the leader's death (holder %q):\n%s", oldHolder, follower.log)
		}
	}
	t.Logf("the surviving server took over %s after the leader was killed", took.Round(100*time.Millisecond))
	if took > 15*time.Second {
		t.Errorf("takeover took %s, want within 15s", took)
	}
	mustRun(t, follower, "rollout", "status", "deploy/web", "--timeout", "60s")

	after := webPods(t, followerClient)
	if len(after) != 6 {
		t.Errorf("%d web pods after scaling to 6 on the new leader", len(after))
	}
	kept := map[string]bool{}
	for _, p := range after {
		kept[string(p.UID)] = true
	}
	for _, p := range before {
		if !kept[string(p.UID)] {
			t.Errorf("pod %s of the old leader's time is gone", p.Name)
		}
	}
	for pod, nodes := range bindings.snapshot() {
		if len(nodes) != 1 {
			t.Errorf("pod %s was bound %d times: %v", pod, len(nodes), nodes)
		}
	}
}

func leaseHolderOf(t *testing.T, c client.Interface) string {
	t.Helper()
	o, err := c.Get(context.Background(), api.MustLookup("leases"), leader.DefaultNamespace, leader.DefaultName)
	if err != nil {
		return ""
	}
	if h := o.(*coordinationv1.Lease).Spec.HolderIdentity; h != nil {
		return *h
	}
	return ""
}

// bindingLog is every node each pod was seen bound to.
type bindingLog struct {
	mu    sync.Mutex
	nodes map[string][]string
}

func (b *bindingLog) snapshot() map[string][]string {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := map[string][]string{}
	for k, v := range b.nodes {
		out[k] = append([]string(nil), v...)
	}
	return out
}

// recordBindings watches pods (resuming a broken watch) until the test
// ends and notes each distinct nodeName a pod (by UID) was seen with.
func recordBindings(t *testing.T, c client.Interface) *bindingLog {
	log := &bindingLog{nodes: map[string][]string{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	pods := api.MustLookup("pods")
	note := func(o api.Object) {
		p, ok := o.(*corev1.Pod)
		if !ok || p.Spec.NodeName == "" {
			return
		}
		log.mu.Lock()
		defer log.mu.Unlock()
		key := p.Name + "/" + string(p.UID)
		seen := log.nodes[key]
		if len(seen) == 0 || seen[len(seen)-1] != p.Spec.NodeName {
			log.nodes[key] = append(seen, p.Spec.NodeName)
		}
	}
	objs, rv, err := c.List(ctx, pods, "", client.ListOptions{})
	if err != nil {
		t.Fatalf("list pods: %v", err)
	}
	for _, o := range objs {
		note(o)
	}
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			events, err := c.Watch(ctx, pods, "", client.ListOptions{ResourceVersion: rv})
			if err != nil {
				time.Sleep(200 * time.Millisecond)
				continue
			}
			for ev := range events {
				if ev.Object != nil {
					note(ev.Object)
					if v := ev.Object.GetResourceVersion(); v != "" {
						rv = v
					}
				}
			}
		}
	}()
	return log
}
