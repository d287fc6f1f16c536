package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/skep-io/skep/controlplane/api"
	"github.com/skep-io/skep/controlplane/client"
	"github.com/skep-io/skep/controlplane/nodetest"
)

// webDeployment is a Deployment of 3 that rolls one pod at a time.
func webDeployment(image, cause, nodeSelector string) string {
	sel := ""
	if nodeSelector != "" {
		sel = "\n      nodeSelector: {" + nodeSelector + "}"
	}
	return fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  annotations: {kubernetes.io/change-cause: %q}
spec:
  replicas: 3
  strategy: {type: RollingUpdate, rollingUpdate: {maxSurge: 1, maxUnavailable: 1}}
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:%s
      containers: [{name: web, image: %q}]
`, cause, sel, image)
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func mustRun(t *testing.T, p *serverProc, args ...string) string {
	t.Helper()
	out, stderr, err := p.run(args...)
	if err != nil {
		t.Fatalf("skep %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr)
	}
	return out
}

// podImages is the image of each active pod of app=web, by node.
func webPods(t *testing.T, c client.Interface) []*corev1.Pod {
	t.Helper()
	objs, _, err := c.List(context.Background(), api.MustLookup("pods"), "default", client.ListOptions{LabelSelector: "app=web"})
	if err != nil {
		t.Fatal(err)
	}
	var out []*corev1.Pod
	for _, o := range objs {
		if p := o.(*corev1.Pod); p.DeletionTimestamp == nil {
			out = append(out, p)
		}
	}
	return out
}

// TestRolloutCommands drives a rollout as a user does: status waits and
// shows progress, history lists the revisions, undo goes back, and a
// rollout that cannot finish times out with a non-zero exit.
func TestRolloutCommands(t *testing.T) {
	p := startServer(t, t.TempDir())
	c := p.client(t)
	nodetest.Start(t, c, "node-1", "node-2", "node-3").SetReadyDelay(300 * time.Millisecond)
	dir := t.TempDir()

	mustRun(t, p, "apply", "-f", writeFile(t, dir, "v1.yaml", webDeployment("skep/echo:v1", "first", "")))
	out := mustRun(t, p, "rollout", "status", "deploy/web", "--timeout", "60s")
	if !strings.HasSuffix(out, "deployment \"web\" successfully rolled out\n") {
		t.Fatalf("rollout status of v1 printed:\n%s", out)
	}

	mustRun(t, p, "apply", "-f", writeFile(t, dir, "v2.yaml", webDeployment("skep/echo:v2", "second", "")))
	out = mustRun(t, p, "rollout", "status", "deployment", "web", "--timeout", "60s")
	t.Logf("skep rollout status deployment web:\n%s", out)
	if !strings.Contains(out, "Waiting for deployment \"web\" rollout to finish") || !strings.HasSuffix(out, "successfully rolled out\n") {
		t.Errorf("rollout status of v2 does not show progress then success:\n%s", out)
	}
	for _, pod := range webPods(t, c) {
		if img := pod.Spec.Containers[0].Image; img != "skep/echo:v2" {
			t.Errorf("after the v2 rollout, pod %s runs %s", pod.Name, img)
		}
	}

	out = mustRun(t, p, "rollout", "history", "deploy/web")
	if !strings.Contains(out, "1         first") || !strings.Contains(out, "2         second") {
		t.Errorf("rollout history does not list revisions 1 and 2 with their causes:\n%s", out)
	}

	if out = mustRun(t, p, "rollout", "undo", "deploy/web"); out != "deployment.apps/web rolled back\n" {
		t.Errorf("rollout undo printed %q", out)
	}
	mustRun(t, p, "rollout", "status", "deploy/web", "--timeout", "60s")
	pods := webPods(t, c)
	if len(pods) != 3 {
		t.Errorf("after undo, %d pods, want 3", len(pods))
	}
	for _, pod := range pods {
		if img := pod.Spec.Containers[0].Image; img != "skep/echo:v1" {
			t.Errorf("after undo, pod %s runs %s, want skep/echo:v1", pod.Name, img)
		}
	}
	if out = mustRun(t, p, "rollout", "history", "deploy/web"); !strings.Contains(out, "3         first") {
		t.Errorf("after undo, revision 1's template should come back as revision 3:\n%s", out)
	}

	// Pods that fit no node: the rollout cannot finish.
	mustRun(t, p, "apply", "-f", writeFile(t, dir, "v3.yaml", webDeployment("skep/echo:v3", "third", "disk: ssd")))
	start := time.Now()
	out, stderr, err := p.run("rollout", "status", "deploy/web", "--timeout", "2s")
	if err == nil || !strings.Contains(stderr, `timed out waiting for deployment "web" to roll out`) {
		t.Errorf("rollout status of a stuck rollout: err %v, stderr %q, want a non-zero exit naming the timeout", err, stderr)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("rollout status --timeout 2s took %s", d)
	}
	if !strings.Contains(out, "Waiting for deployment") {
		t.Errorf("a stuck rollout's status shows no progress line:\n%s", out)
	}

	for _, bad := range [][]string{{"rollout", "status", "svc/web"}, {"rollout", "undo", "deploy/nope"}, {"rollout", "status"}} {
		if _, stderr, err := p.run(bad...); err == nil || stderr == "" {
			t.Errorf("skep %s: err %v, stderr %q; want a clear error", strings.Join(bad, " "), err, stderr)
		} else {
			t.Logf("skep %s: %s", strings.Join(bad, " "), strings.TrimSpace(stderr))
		}
	}
}

// TestCordonAndDrain: a cordoned node gets no new pods; draining it moves
// its controller-owned pods elsewhere, and refuses (deleting nothing) when
// it would lose a pod no controller would bring back.
func TestCordonAndDrain(t *testing.T) {
	p := startServer(t, t.TempDir())
	c := p.client(t)
	nodetest.Start(t, c, "node-1", "node-2", "node-3")
	dir := t.TempDir()

	mustRun(t, p, "apply", "-f", writeFile(t, dir, "web.yaml", webDeployment("skep/echo:v1", "", "")))
	mustRun(t, p, "rollout", "status", "deploy/web", "--timeout", "60s")

	if out := mustRun(t, p, "cordon", "node-1"); out != "node/node-1 cordoned\n" {
		t.Errorf("cordon printed %q", out)
	}
	if out := mustRun(t, p, "cordon", "node-1"); out != "node/node-1 already cordoned\n" {
		t.Errorf("a second cordon printed %q", out)
	}
	if out := mustRun(t, p, "get", "nodes", "node-1"); !strings.Contains(out, "Ready,SchedulingDisabled") {
		t.Errorf("get nodes does not show the cordon:\n%s", out)
	}
	mustRun(t, p, "scale", "deploy", "web", "--replicas", "6")
	mustRun(t, p, "rollout", "status", "deploy/web", "--timeout", "60s")
	onNode := func(node string) (n int) {
		for _, pod := range webPods(t, c) {
			if pod.Spec.NodeName == node {
				n++
			}
		}
		return n
	}
	before := onNode("node-1")
	if before > 1 {
		t.Errorf("%d web pods on cordoned node-1 after scaling 3 to 6; at most the 1 from before the cordon may be there", before)
	}

	// A bare pod on node-2: drain refuses without --force and deletes nothing.
	mustRun(t, p, "apply", "-f", writeFile(t, dir, "bare.yaml", `apiVersion: v1
kind: Pod
metadata: {name: bare}
spec:
  nodeName: node-2
  containers: [{name: c, image: skep/echo:v1}]
`))
	webOn2 := onNode("node-2")
	_, stderr, err := p.run("drain", "node-2")
	if err == nil || !strings.Contains(stderr, "cannot delete pods that declare no controller (use --force to override): default/bare") {
		t.Fatalf("drain with a bare pod: err %v, stderr %q", err, stderr)
	}
	if n := onNode("node-2"); n != webOn2 {
		t.Errorf("a refused drain deleted pods: %d web pods on node-2, were %d", n, webOn2)
	}
	if _, err := c.Get(context.Background(), api.MustLookup("pods"), "default", "bare"); err != nil {
		t.Errorf("a refused drain deleted the bare pod: %v", err)
	}

	out := mustRun(t, p, "drain", "node-2", "--force", "--timeout", "60s")
	t.Logf("skep drain node-2 --force:\n%s", out)
	if !strings.HasSuffix(out, "node/node-2 drained\n") || !strings.Contains(out, "evicting pod default/bare") {
		t.Errorf("drain printed:\n%s", out)
	}
	mustRun(t, p, "rollout", "status", "deploy/web", "--timeout", "60s")
	if n := onNode("node-2"); n != 0 {
		t.Errorf("%d web pods on drained node-2", n)
	}
	if n := onNode("node-3"); n != len(webPods(t, c))-onNode("node-1") {
		t.Errorf("the drained pods are not all on node-3 (node-1 is cordoned): %d of %d", n, len(webPods(t, c)))
	}
	if len(webPods(t, c)) != 6 {
		t.Errorf("%d web pods after drain, want 6", len(webPods(t, c)))
	}

	mustRun(t, p, "uncordon", "node-1")
	mustRun(t, p, "uncordon", "node-2")
	if out := mustRun(t, p, "get", "nodes"); strings.Contains(out, "SchedulingDisabled") {
		t.Errorf("uncordoned nodes still show SchedulingDisabled:\n%s", out)
	}
	if _, stderr, err := p.run("cordon", "node-9"); err == nil || !strings.Contains(stderr, `"node-9" not found`) {
		t.Errorf("cordon of a missing node: err %v, stderr %q", err, stderr)
	}
}
