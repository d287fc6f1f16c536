package kubectl

import (
	"strings"
	"testing"
)

// TestCordonDrain: cordon marks a node unschedulable, drain evicts its
// pods (their Deployment makes them again elsewhere, or Pending when they
// fit nowhere else), uncordon undoes both. It is the one test that does
// not run in parallel: Go runs it before the parallel ones start, so that
// draining drainNode disturbs no other test's pods.
func TestCordonDrain(t *testing.T) {
	ns := namespace(t, "drain")
	t.Cleanup(func() { kubectl(t, "uncordon", drainNode) })

	wantOutput(t, "node/"+drainNode+" cordoned\n", "cordon", drainNode)
	wantOutput(t, "node/"+drainNode+" already cordoned\n", "cordon", drainNode)
	wantRow(t, "kubectl get node", mustKubectl(t, "get", "node", drainNode), drainNode+" Ready,SchedulingDisabled ")
	checkOutput(t, "node/"+drainNode+"\n", "get", "nodes", "--field-selector", "spec.unschedulable=true", "-o", "name")
	wantOutput(t, "node/"+drainNode+" uncordoned\n", "uncordon", drainNode)
	wantRow(t, "kubectl get node", mustKubectl(t, "get", "node", drainNode), drainNode+" Ready <none> ")

	applyAvailable(t, ns, "dr", 1, "kubernetes.io/hostname: "+drainNode)
	pod := strings.TrimSpace(mustKubectl(t, "get", "pods", "-n", ns, "-l", "app=dr", "-o", "name"))
	// kubectl drain says what it evicts on stderr, what it did on stdout.
	r := kubectl(t, "drain", drainNode, "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=40s")
	if r.Err != nil {
		t.Fatalf("%s", r)
	}
	wantContains(t, "kubectl drain", r.Stdout+r.Stderr, "node/"+drainNode+" cordoned\n", "evicting pod "+ns+"/"+strings.TrimPrefix(pod, "pod/")+"\n",
		pod+" evicted\n", "node/"+drainNode+" drained\n")
	// The Deployment's new pod fits only the drained node: Pending.
	out := mustKubectl(t, "get", "pods", "-n", ns, "-l", "app=dr", "-o", "jsonpath={range .items[*]}{.metadata.name} {.status.phase}{end}")
	if strings.HasPrefix(out, strings.TrimPrefix(pod, "pod/")+" ") || !strings.HasSuffix(out, " Pending") {
		t.Errorf("after the drain, app=dr's pod should be a new one, Pending: %q", out)
	}

	// A pod no controller owns is not drained without --force.
	wantOutput(t, "pod/bare created\n", "run", "bare", "-n", ns, "--image=skep/echo:v1", "--overrides", `{"spec":{"nodeName":"`+drainNode+`"}}`)
	r = kubectl(t, "drain", drainNode, "--ignore-daemonsets", "--timeout=20s")
	if r.Err == nil || !strings.Contains(r.Stderr, "cannot delete Pods that declare no controller (use --force to override): "+ns+"/bare") {
		t.Errorf("kubectl drain of a node with a bare pod, without --force:\n%s", r)
	}
	r = kubectl(t, "drain", drainNode, "--ignore-daemonsets", "--force", "--timeout=40s")
	if r.Err != nil {
		t.Fatalf("%s", r)
	}
	wantContains(t, "kubectl drain --force", r.Stdout+r.Stderr, "Warning: deleting Pods that declare no controller: "+ns+"/bare\n", "pod/bare evicted\n", "node/"+drainNode+" drained\n")
	wantOutput(t, "node/"+drainNode+" uncordoned\n", "uncordon", drainNode)
}
