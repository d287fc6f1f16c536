package main

import (
	"strings"
	"testing"
	"time"
)

// TestDeleteNamespaceCommand deletes namespaces as a user does: the
// cluster's own are refused with Kubernetes' message; another is answered
// at once as Terminating, shows so in `skep get ns` while a pod on a node
// still has to stop, refuses new content, and goes once the pod is gone.
func TestDeleteNamespaceCommand(t *testing.T) {
	p := startServer(t, t.TempDir())
	dir := t.TempDir()

	_, stderr, err := p.run("delete", "ns", "kube-system")
	if err == nil || !strings.Contains(stderr, `namespaces "kube-system" is forbidden: this namespace may not be deleted`) {
		t.Errorf("skep delete ns kube-system: %v, stderr %q; want it refused as forbidden", err, stderr)
	}
	mustRun(t, p, "apply", "-f", writeFile(t, dir, "team.yaml", `apiVersion: v1
kind: Namespace
metadata:
  name: team
---
apiVersion: v1
kind: Pod
metadata:
  name: bound
  namespace: team
spec:
  nodeName: node-1
  containers:
  - name: c
    image: skep/echo:v1
`))
	if out := mustRun(t, p, "delete", "ns", "team"); !strings.Contains(out, `Namespace "team" deleted (Terminating`) {
		t.Errorf("skep delete ns team printed %q; want it to say the namespace is terminating", out)
	}
	// node-1 has no agent: the pod stays terminating, and so does the
	// namespace.
	if out := mustRun(t, p, "get", "ns", "team"); !strings.Contains(out, "Terminating") {
		t.Errorf("skep get ns team while its pod terminates:\n%s\nwant STATUS Terminating", out)
	}
	_, stderr, err = p.run("apply", "-f", writeFile(t, dir, "late.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: late\n  namespace: team\n"))
	if err == nil || !strings.Contains(stderr, "unable to create new content in namespace team because it is being terminated") {
		t.Errorf("skep apply into a terminating namespace: %v, stderr %q; want it refused", err, stderr)
	}
	// The node's part: the pod is stopped and removed.
	mustRun(t, p, "delete", "pod", "bound", "-n", "team", "--grace-period", "0")
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, stderr, err := p.run("get", "ns", "team")
		if err != nil {
			if !strings.Contains(stderr, "not found") {
				t.Fatalf("skep get ns team: %v %s", err, stderr)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("namespace team still there 20s after its last pod was removed:\n%s", out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
