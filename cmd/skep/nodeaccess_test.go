package main

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/skep-io/skep/controlplane/api"
	"github.com/skep-io/skep/controlplane/client"
	"github.com/skep-io/skep/lab"
	"github.com/skep-io/skep/lab/labtest"
)

// nodeAccessPods runs on node1, where only skep image import put the
// toolbox image, and on node2, where it did not.
const nodeAccessPods = `apiVersion: v1
kind: Pod
metadata: {name: counter}
spec:
  nodeName: %[1]s-node1
  restartPolicy: Never
  containers:
  - {name: app, image: skep/toolbox, imagePullPolicy: Never, command: [sh, -c, 'for i in 1 2 3 4; do echo line$i; sleep 1; done']}
---
apiVersion: v1
kind: Pod
metadata: {name: two}
spec:
  nodeName: %[1]s-node1
  terminationGracePeriodSeconds: 1
  containers:
  - {name: a, image: skep/toolbox, imagePullPolicy: Never, command: [sleep, "3600"]}
  - {name: b, image: skep/toolbox, imagePullPolicy: Never, command: [sleep, "3600"]}
---
apiVersion: v1
kind: Pod
metadata: {name: stranded}
spec:
  nodeName: %[1]s-node2
  containers:
  - {name: app, image: skep/toolbox, imagePullPolicy: Never, command: [sleep, "3600"]}
`

// TestLogsExecImportThroughAgents runs the verbs that go through the API
// server to a node's agent on a two-node lab whose nodes start with no
// images: `skep image import` loads them (pause on every Ready node, the
// toolbox on node1 only), pods run from them, `skep logs` reads and
// follows a container's output, `skep exec` runs commands with stdin and
// exit codes, a node's own credential is refused, the agent refuses
// anyone but the API server, and a node whose containerd stops answering
// is not Ready until it answers again.
func TestLogsExecImportThroughAgents(t *testing.T) {
	if err := labtest.BecomeSubreaper(); err != nil {
		t.Fatal(err)
	}
	// Registered first, so it runs after the lab is down.
	t.Cleanup(func() {
		if !labtest.WaitShimsGone(15 * time.Second) {
			t.Errorf("containerd shims still running 15s after lab down")
		}
	})
	images := t.TempDir()
	if err := labtest.BuildImages(images); err != nil {
		t.Fatal(err)
	}
	name := labtest.Name("nx")
	l := labtest.Start(t, lab.Config{Name: name, Nodes: 2, Binary: skepBinary})
	node1, node2 := name+"-node1", name+"-node2"
	c, err := l.Client()
	if err != nil {
		t.Fatal(err)
	}
	skep := func(stdin string, args ...string) (stdout, stderr string, code int) {
		t.Helper()
		cmd := exec.Command(skepBinary, args...)
		cmd.Env = append(os.Environ(), "SKEPCONFIG="+l.AdminConfigPath(), "HOME=/nonexistent")
		var out, errb bytes.Buffer
		cmd.Stdin, cmd.Stdout, cmd.Stderr = strings.NewReader(stdin), &out, &errb
		err := cmd.Run()
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatalf("skep %s: %v", strings.Join(args, " "), err)
		}
		return out.String(), errb.String(), cmd.ProcessState.ExitCode()
	}
	must := func(args ...string) string {
		t.Helper()
		out, errOut, code := skep("", args...)
		if code != 0 {
			t.Fatalf("skep %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
		}
		return out
	}

	// Images, through the API server to each agent's containerd.
	out := must("image", "import", filepath.Join(images, "skep-pause.tar"))
	for _, n := range []string{node1, node2} {
		if !strings.Contains(out, n+": imported docker.io/skep/pause:latest") {
			t.Errorf("skep image import (every Ready node) said:\n%s\nwant the pause image imported on %s", out, n)
		}
	}
	out = must("image", "import", filepath.Join(images, "skep-toolbox.tar"), "--node", node1)
	if strings.TrimSpace(out) != node1+": imported docker.io/skep/toolbox:latest" {
		t.Errorf("skep image import --node %s said:\n%s", node1, out)
	}
	if _, errOut, code := skep("", "image", "import", filepath.Join(images, "skep-toolbox.tar"), "--node", "nowhere"); code == 0 || !strings.Contains(errOut, `nodes "nowhere" not found`) {
		t.Errorf("skep image import --node nowhere: exit %d, %q; want nodes \"nowhere\" not found", code, errOut)
	}

	cmd := exec.Command(skepBinary, "apply", "-f", "-")
	cmd.Env = append(os.Environ(), "SKEPCONFIG="+l.AdminConfigPath())
	cmd.Stdin = strings.NewReader(fmt.Sprintf(nodeAccessPods, name))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("skep apply: %v\n%s", err, out)
	}
	pod := func(name string) *corev1.Pod {
		obj, err := c.Get(t.Context(), api.MustLookup("pods"), "default", name)
		if err != nil {
			return nil
		}
		return obj.(*corev1.Pod)
	}
	waitPod := func(name, what string, ok func(*corev1.Pod) bool) {
		t.Helper()
		var last *corev1.Pod
		deadline := time.Now().Add(60 * time.Second)
		for time.Now().Before(deadline) {
			if last = pod(name); last != nil && ok(last) {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Fatalf("pod %s: waited 60s for %s; status %+v", name, what, last)
	}
	running := func(p *corev1.Pod) bool {
		for _, s := range p.Status.ContainerStatuses {
			if s.State.Running == nil {
				return false
			}
		}
		return len(p.Status.ContainerStatuses) == len(p.Spec.Containers)
	}

	// Logs followed from while the container runs until it exits.
	waitPod("counter", "its container to run", running)
	start := time.Now()
	out = must("logs", "-f", "counter")
	if out != "line1\nline2\nline3\nline4\n" {
		t.Errorf("skep logs -f counter (started at its first line) printed %q after %v; want line1..line4, to its exit", out, time.Since(start))
	}
	waitPod("counter", "Succeeded", func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodSucceeded })
	if out = must("logs", "counter"); out != "line1\nline2\nline3\nline4\n" {
		t.Errorf("skep logs counter: %q", out)
	}
	if out = must("logs", "counter", "--tail", "1"); out != "line4\n" {
		t.Errorf("skep logs counter --tail 1: %q; want line4", out)
	}
	if _, errOut, code := skep("", "logs", "counter", "--previous"); code != 1 || !strings.Contains(errOut, `previous terminated container "app" in pod "counter" not found`) {
		t.Errorf("skep logs --previous of a first run: exit %d, %q", code, errOut)
	}

	// Commands in a running container: output, exit code, stdin.
	waitPod("two", "both containers to run", running)
	stdout, stderr, code := skep("", "exec", "two", "-c", "a", "--", "sh", "-c", "echo hi; echo oops >&2; exit 3")
	if stdout != "hi\n" || stderr != "oops\n" || code != 3 {
		t.Errorf("skep exec two -c a -- sh -c 'echo hi; echo oops >&2; exit 3': stdout %q, stderr %q, exit %d; want hi, oops, 3", stdout, stderr, code)
	}
	stdout, stderr, code = skep("from stdin\nsecond line\n", "exec", "-i", "two", "-c", "b", "--", "sh", "-c", "cat; echo done >&2")
	if stdout != "from stdin\nsecond line\n" || stderr != "done\n" || code != 0 {
		t.Errorf("skep exec -i two -c b -- sh -c 'cat; echo done >&2': stdout %q, stderr %q, exit %d; want the stdin back, done, 0", stdout, stderr, code)
	}
	if stdout, _, code = skep("", "exec", "two", "-c", "a", "--", "hostname"); code != 0 || strings.TrimSpace(stdout) != "two" {
		t.Errorf("skep exec two -c a -- hostname: %q, exit %d; want two", stdout, code)
	}

	// What is wrong says what there is to choose from.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"logs", "two"}, "a container name must be specified for pod two, choose one of: [a b]"},
		{[]string{"exec", "two", "--", "true"}, "a container name must be specified for pod two, choose one of: [a b]"},
		{[]string{"logs", "two", "-c", "nope"}, "container nope is not valid for pod two: choose one of: [a b]"},
		{[]string{"exec", "two", "-c", "nope", "--", "true"}, "container nope is not valid for pod two: choose one of: [a b]"},
		{[]string{"logs", "nope"}, `pods "nope" not found`},
		{[]string{"exec", "counter", "--", "true"}, `container "app" in pod "counter" is not running`},
	} {
		if _, errOut, code := skep("", tc.args...); code != 1 || !strings.Contains(errOut, tc.want) {
			t.Errorf("skep %s: exit %d, %q; want exit 1 and %q", strings.Join(tc.args, " "), code, errOut, tc.want)
		}
	}

	// node2 got no toolbox image: its pod waits for one, and never pulls.
	waitPod("stranded", "a container waiting for its image", func(p *corev1.Pod) bool {
		return len(p.Status.ContainerStatuses) == 1 && p.Status.ContainerStatuses[0].State.Waiting != nil &&
			strings.Contains(p.Status.ContainerStatuses[0].State.Waiting.Message, "image is not present")
	})

	// A node's own credential may not read logs or run commands.
	creds, err := client.LoadConfig(filepath.Join(l.Dir(), "nodes", "node1", "credentials.conf"))
	if err != nil {
		t.Fatal(err)
	}
	nodeClient, err := client.New(creds)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := nodeClient.Logs(t.Context(), "default", "counter", &corev1.PodLogOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("logs with node1's credential: %v; want 403", err)
	}
	// client-go reports a refused upgrade as kubectl prints it.
	if _, err := nodeClient.Exec(t.Context(), "default", "two", client.ExecOptions{Container: "a", Command: []string{"true"}}); err == nil || !strings.Contains(err.Error(), `pods "two" is forbidden`) {
		t.Errorf("exec with node1's credential: %v; want it forbidden", err)
	}
	if _, err := nodeClient.ImportImage(t.Context(), node1, strings.NewReader("")); !apierrors.IsForbidden(err) {
		t.Errorf("image import with node1's credential: %v; want 403", err)
	}

	// The agent itself answers no one but the API server.
	insecure := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	resp, err := insecure.Get("https://" + l.NodeIP(node1).String() + ":10250/containerLogs/default/counter/app")
	if err != nil {
		t.Fatalf("reach node1's agent at %s:10250: %v", l.NodeIP(node1), err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("node1's agent answered a caller with no certificate with %d; want 401", resp.StatusCode)
	}

	// containerd of node2 stops answering (stopped, not dead, so that no
	// supervisor restarts it): the node is not Ready, then Ready again.
	ctrd := processIn(t, l.Cgroup(node2), "containerd")
	if err := syscall.Kill(ctrd, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(ctrd, syscall.SIGCONT) })
	waitReady := func(want corev1.ConditionStatus, reason string) {
		t.Helper()
		var last corev1.NodeCondition
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) {
			if obj, err := c.Get(t.Context(), api.MustLookup("nodes"), "", node2); err == nil {
				for _, cond := range obj.(*corev1.Node).Status.Conditions {
					if cond.Type == corev1.NodeReady {
						last = cond
					}
				}
				if last.Status == want && (reason == "" || last.Reason == reason) {
					return
				}
			}
			time.Sleep(200 * time.Millisecond)
		}
		t.Fatalf("node %s: waited 30s for Ready=%s %s; last %+v", node2, want, reason, last)
	}
	stopped := time.Now()
	waitReady(corev1.ConditionFalse, "ContainerRuntimeDown")
	t.Logf("node2 not Ready %v after its containerd stopped answering", time.Since(stopped).Round(100*time.Millisecond))
	if err := syscall.Kill(ctrd, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	waitReady(corev1.ConditionTrue, "")
}

// processIn finds the one process named comm directly in a cgroup.
func processIn(t *testing.T, cgroup, comm string) int {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(cgroup, "cgroup.procs"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range strings.Fields(string(data)) {
		pid, _ := strconv.Atoi(f)
		if name, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); strings.TrimSpace(string(name)) == comm {
			return pid
		}
	}
	t.Fatalf("no %s in cgroup %s (%s)", comm, cgroup, strings.Join(strings.Fields(string(data)), " "))
	return 0
}
