package kubectl

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/skep-io/skep/internal/testwait"
)

// TestScale: kubectl scale (the scale subresource) and the pods follow.
func TestScale(t *testing.T) {
	t.Parallel()
	ns := namespace(t, "scale")
	applyAvailable(t, ns, "sc", 1, "")
	wantOutput(t, "deployment.apps/sc scaled\n", "scale", "deployment/sc", "-n", ns, "--replicas=3")
	if out := mustKubectl(t, "rollout", "status", "deployment/sc", "-n", ns, "--timeout=40s"); !strings.HasSuffix(out, `deployment "sc" successfully rolled out`+"\n") {
		t.Errorf("kubectl rollout status after scale printed:\n%s", out)
	}
	wantOutput(t, "3/3", "get", "deployment", "sc", "-n", ns, "-o", "jsonpath={.status.readyReplicas}/{.spec.replicas}")
	// --current-replicas is a precondition the server's scale checks.
	wantFails(t, []string{"Expected replicas to be 5, was 3"}, "scale", "deployment/sc", "-n", ns, "--replicas=1", "--current-replicas=5")
	wantOutput(t, "deployment.apps/sc scaled\n", "scale", "deployment/sc", "-n", ns, "--replicas=1", "--current-replicas=3")
	testwait.For(t, 20*time.Second, 200*time.Millisecond, func() error {
		out := kubectl(t, "get", "pods", "-n", ns, "-l", "app=sc", "-o", "name").Stdout
		if strings.Count(out, "pod/") != 1 {
			return errors.New("after scaling to 1, the pods are:\n" + out)
		}
		return nil
	})
	out := mustKubectl(t, "get", "replicasets", "-n", ns, "-l", "app=sc")
	wantRow(t, "kubectl get replicasets", out, "sc-")
	rs := strings.Fields(tableLines(out)[1])[0]
	wantOutput(t, "replicaset.apps/"+rs+" scaled\n", "scale", "replicaset", rs, "-n", ns, "--replicas=1")
}

// TestRollout: rollout status, history, undo and restart, and set image.
func TestRollout(t *testing.T) {
	t.Parallel()
	ns := namespace(t, "rollout")
	applyAvailable(t, ns, "ro", 2, "")
	wantOutput(t, `deployment "ro" successfully rolled out`+"\n", "rollout", "status", "deployment/ro", "-n", ns, "--timeout=40s")

	wantOutput(t, "deployment.apps/ro image updated\n", "set", "image", "deployment/ro", "-n", ns, "main=skep/echo:v2")
	out := mustKubectl(t, "rollout", "status", "deployment/ro", "-n", ns, "--timeout=40s")
	if !strings.HasSuffix(out, `deployment "ro" successfully rolled out`+"\n") {
		t.Errorf("kubectl rollout status after set image printed:\n%s", out)
	}
	wantOutput(t, "skep/echo:v2", "get", "deployment", "ro", "-n", ns, "-o", "jsonpath={.spec.template.spec.containers[0].image}")
	wantFails(t, []string{`unable to find container named "nope"`}, "set", "image", "deployment/ro", "-n", ns, "nope=x")

	out = mustKubectl(t, "rollout", "history", "deployment/ro", "-n", ns)
	if l := tableLines(out); len(l) < 4 || l[0] != "deployment.apps/ro" || l[1] != "REVISION CHANGE-CAUSE" || l[2] != "1 <none>" || l[3] != "2 <none>" {
		t.Errorf("kubectl rollout history printed:\n%s\nwant revisions 1 and 2", out)
	}
	out = mustKubectl(t, "rollout", "history", "deployment/ro", "-n", ns, "--revision=1")
	wantContains(t, "kubectl rollout history --revision=1", out, "deployment.apps/ro with revision #1", "Image:\tskep/echo:v1")

	wantOutput(t, "deployment.apps/ro rolled back\n", "rollout", "undo", "deployment/ro", "-n", ns)
	mustKubectl(t, "rollout", "status", "deployment/ro", "-n", ns, "--timeout=40s")
	wantOutput(t, "skep/echo:v1", "get", "deployment", "ro", "-n", ns, "-o", "jsonpath={.spec.template.spec.containers[0].image}")
	out = mustKubectl(t, "rollout", "history", "deployment/ro", "-n", ns)
	if l := tableLines(out); len(l) != 4 || l[2] != "2 <none>" || l[3] != "3 <none>" {
		t.Errorf("after undo, revision 1 should come back as 3:\n%s", out)
	}

	wantOutput(t, "deployment.apps/ro restarted\n", "rollout", "restart", "deployment/ro", "-n", ns)
	if out := mustKubectl(t, "get", "deployment", "ro", "-n", ns, "-o", `jsonpath={.spec.template.metadata.annotations.kubectl\.kubernetes\.io/restartedAt}`); out == "" {
		t.Errorf("kubectl rollout restart set no restartedAt annotation on the template")
	}
	mustKubectl(t, "rollout", "status", "deployment/ro", "-n", ns, "--timeout=40s")

	wantOutput(t, "deployment.apps/ro paused\n", "rollout", "pause", "deployment/ro", "-n", ns)
	wantOutput(t, "deployment.apps/ro resumed\n", "rollout", "resume", "deployment/ro", "-n", ns)
}

// TestWait: kubectl wait on a Deployment's condition and a pod's.
func TestWait(t *testing.T) {
	t.Parallel()
	ns := namespace(t, "wait")
	wantOutput(t, "deployment.apps/wa created\n", "apply", "-f", writeFile(t, "wa.yaml", deployment(ns, "wa", "skep/echo:v1", 2, "")))
	wantOutput(t, "deployment.apps/wa condition met\n", "wait", "-n", ns, "--for=condition=Available", "deployment/wa", "--timeout=40s")
	out := mustKubectl(t, "wait", "-n", ns, "--for=condition=Ready", "pods", "-l", "app=wa", "--timeout=20s")
	if strings.Count(out, " condition met\n") != 2 || !strings.HasPrefix(out, "pod/wa-") {
		t.Errorf("kubectl wait --for=condition=Ready pods -l app=wa printed:\n%s", out)
	}
	wantOutput(t, "deployment.apps/wa condition met\n", "wait", "-n", ns, "--for=jsonpath={.status.readyReplicas}=2", "deployment/wa", "--timeout=20s")
	r := kubectl(t, "wait", "-n", ns, "--for=condition=Nonexistent", "deployment/wa", "--timeout=1s")
	if r.Err == nil || !strings.Contains(r.Stderr, "timed out waiting for the condition on deployments/wa") {
		t.Errorf("kubectl wait for a condition that never comes:\n%s", r)
	}
}

// TestDescribe: describe of a pod, a deployment, a service and a node,
// with their events once the server records Events.
func TestDescribe(t *testing.T) {
	t.Parallel()
	ns := namespace(t, "describe")
	applyAvailable(t, ns, "de", 1, "")
	wantOutput(t, "service/de exposed\n", "expose", "deployment", "de", "-n", ns, "--port=80", "--target-port=8080")
	events := served(t, "events")
	if !events {
		t.Log("the server serves no Events yet: describe's events are not checked")
	}

	pod := strings.TrimPrefix(mustKubectl(t, "get", "pods", "-n", ns, "-l", "app=de", "-o", "name"), "pod/")
	pod = strings.TrimSpace(pod)
	out := squeeze(mustKubectl(t, "describe", "pod", pod, "-n", ns))
	wantContains(t, "kubectl describe pod", out, "Name: "+pod+"\n", "Namespace: "+ns+"\n", "Node: node-",
		"Labels: app=de\n", "Status: Running\n", "IP: 10.244.", "Controlled By: ReplicaSet/de-",
		"Containers:\n main:\n", " Image: skep/echo:v1\n", " Ready True \n")
	if events {
		wantContains(t, "kubectl describe pod", out, "Events:\n Type Reason Age", "Normal Scheduled", "Successfully assigned "+ns+"/"+pod+" to node-")
	}

	out = squeeze(mustKubectl(t, "describe", "deployment", "de", "-n", ns))
	wantContains(t, "kubectl describe deployment", out, "Name: de\n", "Namespace: "+ns+"\n", "Selector: app=de\n",
		"Replicas: 1 desired | 1 updated | 1 total | 1 available | 0 unavailable\n", "StrategyType: RollingUpdate\n",
		" Image: skep/echo:v1\n", " Available True MinimumReplicasAvailable\n", "NewReplicaSet: de-")
	if events {
		wantContains(t, "kubectl describe deployment", out, "Normal ScalingReplicaSet", "Scaled up replica set de-")
		out = mustKubectl(t, "events", "-n", ns, "--for", "deployment/de")
		if l := tableLines(out); l[0] != "LAST SEEN TYPE REASON OBJECT MESSAGE" {
			t.Errorf("kubectl events header: %q", l[0])
		}
		wantContains(t, "kubectl events --for deployment/de", squeeze(out), " Normal ScalingReplicaSet Deployment/de Scaled up replica set de-")
	}

	out = squeeze(mustKubectl(t, "describe", "service", "de", "-n", ns))
	wantContains(t, "kubectl describe service", out, "Name: de\n", "Selector: app=de\n", "Type: ClusterIP\n",
		"Port: <unset> 80/TCP\n", "TargetPort: 8080/TCP\n", "Endpoints: 10.244.")

	wantFails(t, []string{`Error from server (NotFound): pods "nope" not found`}, "describe", "pod", "nope", "-n", ns)

	// Last: describe node lists the node's pods with a field selector on
	// status.phase, and fails where the server has none.
	out = squeeze(mustKubectl(t, "describe", "node", "node-1"))
	wantContains(t, "kubectl describe node", out, "Name: node-1\n", "Labels: kubernetes.io/hostname=node-1\n",
		"Unschedulable: false\n", " Ready True ", "Capacity:\n cpu: 4\n", "Non-terminated Pods:", "Allocated resources:")
	if events {
		wantContains(t, "kubectl describe node", out, "Events:")
	}

}

// TestDeleteCascade: deleting a Deployment orphans its ReplicaSet with
// --cascade=orphan, and takes it and its pods with background cascade.
func TestDeleteCascade(t *testing.T) {
	t.Parallel()
	ns := namespace(t, "cascade")
	applyAvailable(t, ns, "orph", 1, "")
	applyAvailable(t, ns, "bg", 1, "")

	wantOutput(t, `deployment.apps "orph" deleted`+"\n", "delete", "deployment", "orph", "-n", ns, "--cascade=orphan")
	// The ReplicaSet and its pod stay, without an owner.
	time.Sleep(time.Second)
	out := mustKubectl(t, "get", "replicasets", "-n", ns, "-l", "app=orph", "-o", "jsonpath={range .items[*]}{.metadata.name} owners={.metadata.ownerReferences}{end}")
	if !strings.HasPrefix(out, "orph-") || !strings.HasSuffix(out, " owners=") {
		t.Errorf("after delete --cascade=orphan, the ReplicaSet should stay without an owner: %q", out)
	}
	wantRow(t, "pods after delete --cascade=orphan", mustKubectl(t, "get", "pods", "-n", ns, "-l", "app=orph"), "orph-")

	wantOutput(t, `deployment.apps "bg" deleted`+"\n", "delete", "deployment", "bg", "-n", ns, "--cascade=background")
	testwait.For(t, 20*time.Second, 200*time.Millisecond, func() error {
		r := kubectl(t, "get", "replicasets,pods", "-n", ns, "-l", "app=bg", "-o", "name")
		if r.Stdout != "" {
			return errors.New("after delete --cascade=background, still there:\n" + r.Stdout)
		}
		return nil
	})

	applyAvailable(t, ns, "fg", 1, "")
	wantOutput(t, `deployment.apps "fg" deleted`+"\n", "delete", "deployment", "fg", "-n", ns, "--cascade=foreground")
	testwait.For(t, 20*time.Second, 200*time.Millisecond, func() error {
		if out := kubectl(t, "get", "deployments,replicasets,pods", "-n", ns, "-l", "app=fg", "-o", "name").Stdout; out != "" {
			return errors.New("after delete --cascade=foreground, still there:\n" + out)
		}
		return nil
	})
}
