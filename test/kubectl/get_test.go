package kubectl

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/skep-io/skep/internal/testwait"
	"github.com/skep-io/skep/lab/labtest"
)

// TestGet: kubectl get prints the server's tables (kubectl's columns) and
// every output format, filtered by labels, fields and namespaces.
func TestGet(t *testing.T) {
	t.Parallel()
	ns := namespace(t, "get")
	applyAvailable(t, ns, "web", 2, "")
	wantOutput(t, "service/web created\n", "create", "service", "clusterip", "web", "-n", ns, "--tcp=80:8080")

	t.Run("tables", func(t *testing.T) {
		out := mustKubectl(t, "get", "deployments", "-n", ns)
		if l := tableLines(out); l[0] != "NAME READY UP-TO-DATE AVAILABLE AGE" {
			t.Errorf("kubectl get deployments header: %q", l[0])
		}
		wantRow(t, "kubectl get deployments", out, "web 2/2 2 2 ")

		out = mustKubectl(t, "get", "pods", "-n", ns)
		if l := tableLines(out); l[0] != "NAME READY STATUS RESTARTS AGE" || len(l) != 3 {
			t.Errorf("kubectl get pods: want the header and 2 pods:\n%s", out)
		}
		wantRow(t, "kubectl get pods", out, "web-")
		for _, l := range tableLines(out)[1:] {
			if f := strings.Fields(l); len(f) < 4 || f[1] != "1/1" || f[2] != "Running" || f[3] != "0" {
				t.Errorf("kubectl get pods: row %q, want 1/1 Running 0", l)
			}
		}

		out = mustKubectl(t, "get", "services", "-n", ns)
		if l := tableLines(out); l[0] != "NAME TYPE CLUSTER-IP EXTERNAL-IP PORT(S) AGE" {
			t.Errorf("kubectl get services header: %q", l[0])
		}
		wantRow(t, "kubectl get services", out, "web ClusterIP ")
		wantContains(t, "kubectl get services", out, " <none>        80/TCP ")

		out = mustKubectl(t, "get", "nodes")
		if l := tableLines(out); l[0] != "NAME STATUS ROLES AGE VERSION" {
			t.Errorf("kubectl get nodes header: %q", l[0])
		}
		wantRow(t, "kubectl get nodes", out, "node-1 Ready <none> ")

		out = mustKubectl(t, "get", "namespaces")
		wantRow(t, "kubectl get namespaces", out, "get Active ")

		out = mustKubectl(t, "get", "replicasets", "-n", ns)
		if l := tableLines(out); l[0] != "NAME DESIRED CURRENT READY AGE" {
			t.Errorf("kubectl get replicasets header: %q", l[0])
		}
		wantRow(t, "kubectl get replicasets", out, "web-")
	})

	t.Run("wide", func(t *testing.T) {
		out := mustKubectl(t, "get", "deployments", "-n", ns, "-o", "wide")
		if l := tableLines(out); l[0] != "NAME READY UP-TO-DATE AVAILABLE AGE CONTAINERS IMAGES SELECTOR" {
			t.Errorf("kubectl get deployments -o wide header: %q", l[0])
		}
		wantContains(t, "kubectl get deployments -o wide", fields(out), " main skep/echo:v1 app=web")

		out = mustKubectl(t, "get", "pods", "-n", ns, "-o", "wide")
		if l := tableLines(out); l[0] != "NAME READY STATUS RESTARTS AGE IP NODE NOMINATED NODE READINESS GATES" {
			t.Errorf("kubectl get pods -o wide header: %q", l[0])
		}
		for _, l := range tableLines(out)[1:] {
			if f := strings.Fields(l); len(f) < 9 || !strings.HasPrefix(f[5], "10.244.") || !strings.HasPrefix(f[6], "node-") || f[7] != "<none>" || f[8] != "<none>" {
				t.Errorf("kubectl get pods -o wide: row %q, want the pod's IP, its node, <none> <none>", l)
			}
		}
	})

	t.Run("yaml", func(t *testing.T) {
		out := mustKubectl(t, "get", "deployment", "web", "-n", ns, "-o", "yaml")
		wantContains(t, "kubectl get deployment web -o yaml", out,
			"apiVersion: apps/v1\nkind: Deployment\n", "  name: web\n", "  namespace: get\n", "  replicas: 2\n", "  availableReplicas: 2\n")
		out = mustKubectl(t, "get", "deployments", "-n", ns, "-o", "yaml")
		wantContains(t, "kubectl get deployments -o yaml", out, "apiVersion: v1\nitems:\n- apiVersion: apps/v1\n  kind: Deployment\n", "kind: List\n")
	})

	t.Run("json", func(t *testing.T) {
		var d appsv1.Deployment
		out := mustKubectl(t, "get", "deployment", "web", "-n", ns, "-o", "json")
		if err := json.Unmarshal([]byte(out), &d); err != nil {
			t.Fatalf("kubectl get deployment web -o json: %v\n%s", err, out)
		}
		if d.Kind != "Deployment" || d.Name != "web" || d.Namespace != ns || d.Status.AvailableReplicas != 2 {
			t.Errorf("kubectl get deployment web -o json: kind %q name %q namespace %q available %d", d.Kind, d.Name, d.Namespace, d.Status.AvailableReplicas)
		}
		var list corev1.List
		out = mustKubectl(t, "get", "pods", "-n", ns, "-o", "json")
		if err := json.Unmarshal([]byte(out), &list); err != nil {
			t.Fatalf("kubectl get pods -o json: %v\n%s", err, out)
		}
		if list.Kind != "List" || len(list.Items) != 2 {
			t.Errorf("kubectl get pods -o json: kind %q with %d items, want a List of 2", list.Kind, len(list.Items))
		}
	})

	t.Run("jsonpath", func(t *testing.T) {
		wantOutput(t, "2", "get", "deployment", "web", "-n", ns, "-o", "jsonpath={.spec.replicas}")
		wantOutput(t, "main=skep/echo:v1\n", "get", "pods", "-n", ns, "-o", `jsonpath={range .items[0].spec.containers[*]}{.name}={.image}{"\n"}{end}`)
		wantOutput(t, "deployment.apps/web\n", "get", "deployments", "-n", ns, "-o", "name")
		out := mustKubectl(t, "get", "pods", "-n", ns, "-o", "custom-columns=NAME:.metadata.name,PHASE:.status.phase", "--no-headers")
		if l := tableLines(out); len(l) != 2 || !strings.HasSuffix(l[0], " Running") {
			t.Errorf("kubectl get pods -o custom-columns printed:\n%s", out)
		}
	})

	t.Run("labels", func(t *testing.T) {
		out := mustKubectl(t, "get", "pods", "-n", ns, "-l", "app=web", "-o", "name")
		if n := strings.Count(out, "pod/web-"); n != 2 {
			t.Errorf("kubectl get pods -l app=web: %d pods, want 2:\n%s", n, out)
		}
		r := kubectl(t, "get", "pods", "-n", ns, "-l", "app=nothing")
		if r.Err != nil || r.Stdout != "" || r.Stderr != "No resources found in get namespace.\n" {
			t.Errorf("kubectl get pods -l app=nothing: want \"No resources found in get namespace.\"\n%s", r)
		}
		out = mustKubectl(t, "get", "pods", "-n", ns, "-l", "app in (web,other),tier!=db", "-o", "name")
		if n := strings.Count(out, "pod/web-"); n != 2 {
			t.Errorf("kubectl get pods -l 'app in (web,other),tier!=db': %d pods, want 2:\n%s", n, out)
		}
		out = mustKubectl(t, "get", "pods", "-n", ns, "-L", "app")
		if l := tableLines(out); l[0] != "NAME READY STATUS RESTARTS AGE APP" || !strings.HasSuffix(l[1], " web") {
			t.Errorf("kubectl get pods -L app printed:\n%s", out)
		}
	})

	// Each field selector kubectl users reach for is a subtest of its own:
	// one the server does not support must not hide the others.
	t.Run("field-selector", func(t *testing.T) {
		t.Run("status.phase", func(t *testing.T) {
			out := mustKubectl(t, "get", "pods", "-n", ns, "--field-selector", "status.phase=Running", "-o", "name")
			if n := strings.Count(out, "pod/web-"); n != 2 {
				t.Errorf("kubectl get pods --field-selector status.phase=Running: %d pods, want 2:\n%s", n, out)
			}
			r := kubectl(t, "get", "pods", "-n", ns, "--field-selector", "status.phase=Pending")
			if r.Err != nil || r.Stdout != "" || r.Stderr != "No resources found in get namespace.\n" {
				t.Errorf("kubectl get pods --field-selector status.phase=Pending:\n%s", r)
			}
		})
		t.Run("metadata", func(t *testing.T) {
			wantOutput(t, "deployment.apps/web\n", "get", "deployments", "-A", "--field-selector", "metadata.name=web,metadata.namespace=get", "-o", "name")
		})
		t.Run("spec.nodeName", func(t *testing.T) {
			node := mustKubectl(t, "get", "pods", "-n", ns, "-o", "jsonpath={.items[0].spec.nodeName}")
			out := mustKubectl(t, "get", "pods", "-A", "--field-selector", "spec.nodeName="+node, "-o", "name")
			if !strings.Contains(out, "pod/web-") {
				t.Errorf("kubectl get pods -A --field-selector spec.nodeName=%s does not list web's pod there:\n%s", node, out)
			}
		})
		t.Run("spec.unschedulable", func(t *testing.T) {
			wantOutput(t, "node/node-1\nnode/node-2\nnode/node-3\n", "get", "nodes", "--field-selector", "spec.unschedulable=false", "-o", "name")
		})
		t.Run("unknown", func(t *testing.T) {
			wantFails(t, []string{`field label not supported: spec.nosuch`}, "get", "pods", "-n", ns, "--field-selector", "spec.nosuch=x")
		})
	})

	// kubectl lists in pages (limit and continue) of --chunk-size.
	t.Run("chunks", func(t *testing.T) {
		for _, n := range []string{"c1", "c2", "c3"} {
			wantOutput(t, "configmap/"+n+" created\n", "create", "configmap", n, "-n", ns, "--from-literal=a=1")
		}
		r := kubectl(t, "get", "configmaps", "-n", ns, "-l", "!watched", "--chunk-size=1", "-o", "name", "-v=6")
		if r.Err != nil {
			t.Fatalf("%s", r)
		}
		if r.Stdout != "configmap/c1\nconfigmap/c2\nconfigmap/c3\n" {
			t.Errorf("kubectl get configmaps --chunk-size=1 printed:\n%s", r.Stdout)
		}
		if !strings.Contains(r.Stderr, "continue=") {
			t.Errorf("kubectl get --chunk-size=1 did not page (no continue token in its requests):\n%s", r.Stderr)
		}
	})

	t.Run("all-namespaces", func(t *testing.T) {
		out := mustKubectl(t, "get", "deployments", "-A")
		if l := tableLines(out); l[0] != "NAMESPACE NAME READY UP-TO-DATE AVAILABLE AGE" {
			t.Errorf("kubectl get deployments -A header: %q", l[0])
		}
		wantRow(t, "kubectl get deployments -A", out, "get web 2/2 2 2 ")
		out = mustKubectl(t, "get", "namespaces", "-o", "name")
		wantContains(t, "kubectl get namespaces -o name", out, "namespace/default\n", "namespace/get\n", "namespace/kube-system\n")
	})

	t.Run("watch", func(t *testing.T) {
		wantOutput(t, "configmap/w1 created\n", "create", "configmap", "w1", "-n", ns, "--from-literal=a=1")
		w := startWatch(t, "get", "configmaps", "-n", ns, "-w")
		w.waitFor(t, "w1 ")
		wantOutput(t, "configmap/w2 created\n", "create", "configmap", "w2", "-n", ns, "--from-literal=a=1", "--from-literal=b=2")
		w.waitFor(t, "w2 2 ")
		out := w.stop()
		if l := tableLines(out); l[0] != "NAME DATA AGE" || !strings.HasPrefix(l[len(l)-1], "w2 2 ") {
			t.Errorf("kubectl get configmaps -w printed:\n%s\nwant the table of w1, then w2 as it came", out)
		}

		w = startWatch(t, "get", "configmaps", "-n", ns, "-w", "--output-watch-events")
		w.waitFor(t, "ADDED w2 2 ")
		wantOutput(t, `configmap "w2" deleted`+"\n", "delete", "configmap", "w2", "-n", ns)
		w.waitFor(t, "DELETED w2 2 ")
		out = w.stop()
		if l := tableLines(out); l[0] != "EVENT NAME DATA AGE" {
			t.Errorf("kubectl get configmaps -w --output-watch-events printed:\n%s", out)
		}

		// A label-selected watch: an object whose labels leave the
		// selection is DELETED from it, one entering it ADDED.
		w = startWatch(t, "get", "configmaps", "-n", ns, "-l", "watched=yes", "-w", "--output-watch-events")
		time.Sleep(time.Second) // kubectl has listed and started watching
		wantOutput(t, "configmap/w1 labeled\n", "label", "configmap", "w1", "-n", ns, "watched=yes")
		w.waitFor(t, "ADDED w1 1 ")
		wantOutput(t, "configmap/w1 labeled\n", "label", "configmap", "w1", "-n", ns, "watched=no", "--overwrite")
		w.waitFor(t, "DELETED w1 1 ")
	})
}

// watch is a `kubectl get -w` running in the background.
type watch struct {
	cmd    *exec.Cmd
	cancel context.CancelFunc
	out    *labtest.SyncBuffer
}

// startWatch runs kubectl with a bound on its time; the test stops it.
func startWatch(t *testing.T, args ...string) *watch {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	w := &watch{cancel: cancel, out: &labtest.SyncBuffer{}}
	w.cmd = exec.CommandContext(ctx, "kubectl", append([]string{"--kubeconfig", kubeconfig}, args...)...)
	w.cmd.Env = append(os.Environ(), "HOME="+kubectlHome, "KUBECONFIG=")
	w.cmd.Stdout, w.cmd.Stderr = w.out, w.out
	if err := w.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.stop() })
	return w
}

// waitFor waits until the watch printed a line with s (columns joined by
// one space), at most 10 seconds.
func (w *watch) waitFor(t *testing.T, s string) {
	t.Helper()
	testwait.For(t, 10*time.Second, 200*time.Millisecond, func() error {
		for _, l := range tableLines(w.out.String()) {
			if strings.Contains(l+" ", s) {
				return nil
			}
		}
		return errors.New("kubectl " + strings.Join(w.cmd.Args[3:], " ") + " did not print " + s + ":\n" + w.out.String())
	})
}

// stop ends kubectl (by its context, which kills its process) and returns
// what it printed.
func (w *watch) stop() string {
	w.cancel()
	_ = w.cmd.Wait()
	return w.out.String()
}
