package kubectlstreams

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/skep-io/skep/lab"
	"github.com/skep-io/skep/lab/labtest"
)

var (
	skepBinary string
	imagesDir  string
)

func TestMain(m *testing.M) {
	// The tests wait on kubectl, the lab and sleeping containers, hardly
	// on the CPU: run them all at once unless the command line says how
	// many.
	flag.Parse()
	parallelSet := false
	flag.Visit(func(f *flag.Flag) { parallelSet = parallelSet || f.Name == "test.parallel" })
	if !parallelSet {
		_ = flag.Set("test.parallel", "16")
	}
	// containerd's shims daemonize; as their subreaper the test binary
	// reaps them, so that none is left when the lab is down.
	if err := labtest.BecomeSubreaper(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	labtest.Main(m, "skep-kubectlstreams-", func(bin, images string) { skepBinary, imagesDir = bin, images })
}

// suite is the lab every test of the package runs on, and kubectl for it.
type suite struct {
	lab  *lab.Lab
	k    *labtest.Kubectl
	node string // the lab's one node
}

// The pods the tests use, applied at once when the lab is up. They run
// only images the agent imported at start (imagePullPolicy: Never).
//
//   - tools: two busybox httpd (ports 8080 and 8081, each its own page)
//     and a 50 MiB file to serve, /www/big; Ready once all is written.
//   - writer: one numbered line every 0.2 s, for logs.
//   - restarter: exits 1 after a second, and counts its runs in an
//     emptyDir, so that the logs of two runs differ.
//   - attach-stdin: echoes each line of its stdin (stdinOnce: the client
//     closing stdin ends it).
//   - attach-tty: an interactive shell on a terminal.
const pods = `
apiVersion: v1
kind: Pod
metadata: {name: tools}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: skep/toolbox:latest
    imagePullPolicy: Never
    command: [sh, -c]
    args:
    - |
      mkdir -p /www /www2
      echo port-8080 > /www/index.html
      echo port-8081 > /www2/index.html
      head -c 52428800 /dev/urandom > /www/big
      httpd -p 8080 -h /www
      httpd -p 8081 -h /www2
      touch /tmp/ready
      exec sleep 100000
    readinessProbe:
      exec: {command: [test, -f, /tmp/ready]}
      periodSeconds: 1
---
apiVersion: v1
kind: Pod
metadata: {name: writer}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: skep/toolbox:latest
    imagePullPolicy: Never
    command: [sh, -c, 'i=0; while true; do i=$((i+1)); echo "line $i"; sleep 0.2; done']
---
apiVersion: v1
kind: Pod
metadata: {name: restarter}
spec:
  terminationGracePeriodSeconds: 1
  restartPolicy: Always
  volumes: [{name: state, emptyDir: {}}]
  containers:
  - name: main
    image: skep/toolbox:latest
    imagePullPolicy: Never
    volumeMounts: [{name: state, mountPath: /state}]
    command: [sh, -c, 'n=$(cat /state/runs 2>/dev/null || echo 0); n=$((n+1)); echo $n > /state/runs; echo "run $n"; sleep 1; exit 1']
---
apiVersion: v1
kind: Pod
metadata: {name: attach-stdin}
spec:
  terminationGracePeriodSeconds: 1
  restartPolicy: Never
  containers:
  - name: main
    image: skep/toolbox:latest
    imagePullPolicy: Never
    stdin: true
    stdinOnce: true
    command: [sh, -c, 'while read l; do echo "got $l"; done; echo "stdin closed"']
---
apiVersion: v1
kind: Pod
metadata: {name: attach-tty}
spec:
  terminationGracePeriodSeconds: 1
  restartPolicy: Never
  containers:
  - name: main
    image: skep/toolbox:latest
    imagePullPolicy: Never
    stdin: true
    tty: true
    command: [sh]
`

// TestStreams brings up a one-node lab and runs every stream kubectl
// opens through the API server to the node's agent: exec, attach, cp,
// port-forward, logs and run. The throughput measurement runs first,
// alone, so that the others do not slow it; the rest run in parallel.
func TestStreams(t *testing.T) {
	// Registered before Start's teardown, so it runs after the lab is down.
	t.Cleanup(func() {
		if !labtest.WaitShimsGone(15 * time.Second) {
			t.Errorf("containerd shims still running 15s after lab down")
		}
	})
	l := labtest.Start(t, lab.Config{Name: labtest.Name("ks"), Nodes: 1, Binary: skepBinary, ImagesDir: imagesDir})
	s := &suite{lab: l, k: labtest.NewKubectl(t, l), node: l.Nodes()[0]}
	s.apply(t, pods)

	t.Run("throughput", s.testThroughput)

	t.Run("exec", s.testExec)
	t.Run("exec-silence", s.testExecSilence)
	t.Run("exec-client-gone", s.testExecClientGone)
	t.Run("attach", s.testAttach)
	t.Run("cp", s.testCp)
	t.Run("port-forward", s.testPortForward)
	t.Run("logs", s.testLogs)
	t.Run("logs-previous", s.testLogsPrevious)
	t.Run("run", s.testRun)
	t.Run("forbidden", s.testForbidden)
}

// commandTimeout bounds a kubectl run that is not meant to last: a stream
// that hangs fails its test, not the package.
const commandTimeout = 90 * time.Second

// run runs kubectl to its end, with stdin.
func (s *suite) run(t *testing.T, stdin string, args ...string) labtest.KubectlResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	return s.k.Run(ctx, strings.NewReader(stdin), args...)
}

// must runs kubectl and fails the test unless it exits 0; it returns
// kubectl's stdout.
func (s *suite) must(t *testing.T, args ...string) string {
	t.Helper()
	r := s.run(t, "", args...)
	if r.Err != nil {
		t.Fatalf("%s", r)
	}
	return r.Stdout
}

func (s *suite) apply(t *testing.T, manifest string) {
	t.Helper()
	if r := s.run(t, manifest, "apply", "-f", "-"); r.Err != nil {
		t.Fatalf("%s", r)
	}
}

// waitReady waits until the pod is Ready.
func (s *suite) waitReady(t *testing.T, pod string) {
	t.Helper()
	if r := s.run(t, "", "wait", "--for=condition=Ready", "pod/"+pod, "--timeout=80s"); r.Err != nil {
		t.Fatalf("pod %s did not become Ready: %s\n%s", pod, r, s.run(t, "", "get", "pod", pod, "-o", "yaml").Stdout)
	}
}

// stream is a kubectl run the test drives while it lasts.
type stream struct {
	cmd            *exec.Cmd
	stdin          io.WriteCloser
	stdout, stderr *labtest.SyncBuffer
	done           chan struct{} // closed once kubectl has exited
	err            error         // how it exited, once done is closed
}

// start starts kubectl (argv[0] is "kubectl") or a wrapper of it
// (script, for a terminal) with a stdin pipe. The test's cleanup kills it,
// by its PID, if it still runs.
func (s *suite) start(t *testing.T, cmd *exec.Cmd) *stream {
	t.Helper()
	st := &stream{cmd: cmd, stdout: &labtest.SyncBuffer{}, stderr: &labtest.SyncBuffer{}, done: make(chan struct{})}
	var err error
	if st.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = st.stdout, st.stderr
	// Its own process group: script's child (kubectl) goes with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", strings.Join(cmd.Args, " "), err)
	}
	go func() { st.err = cmd.Wait(); close(st.done) }()
	t.Cleanup(func() {
		st.kill()
		<-st.done
	})
	return st
}

// kill kills the stream's process group (SIGKILL), as a closed terminal
// or an OOM kill ends a client, if it still runs.
func (st *stream) kill() {
	select {
	case <-st.done:
	default:
		_ = syscall.Kill(-st.cmd.Process.Pid, syscall.SIGKILL)
	}
}

// wait waits for the stream to end by itself, at most d.
func (st *stream) wait(d time.Duration) bool {
	select {
	case <-st.done:
		return true
	case <-time.After(d):
		return false
	}
}

func (st *stream) String() string {
	return fmt.Sprintf("%s (%v)\nstdout:\n%s\nstderr:\n%s", strings.Join(st.cmd.Args, " "), st.err, st.stdout, st.stderr)
}

// kubectl is a kubectl command line for start.
func (s *suite) kubectl(args ...string) *exec.Cmd {
	return s.k.Command(context.Background(), args...)
}

// onTerminal is kubectl run by script(1) on a new pseudo-terminal, so that
// kubectl sees a terminal on stdin and stdout, as in a user's shell
// (kubectl -t refuses a TTY otherwise). script -e exits with kubectl's
// code.
func (s *suite) onTerminal(args ...string) *exec.Cmd {
	line := "kubectl --kubeconfig " + s.k.Config + " " + strings.Join(args, " ")
	cmd := exec.Command("script", "-q", "-e", "-c", line, "/dev/null")
	cmd.Env = append(os.Environ(), "HOME="+s.k.Home, "KUBECONFIG=", "SHELL=/bin/sh", "TERM=dumb")
	return cmd
}

// waitFor polls cond until it holds or d passes; it fails the test with
// what, and cond's last complaint, if it never held.
func waitFor(t *testing.T, d time.Duration, what string, cond func() string) {
	t.Helper()
	var why string
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if why = cond(); why == "" {
			return
		}
	}
	t.Fatalf("waited %s for %s: %s", d, what, why)
}

// lines is s split into lines, without the last newline.
func lines(s string) []string {
	s = strings.TrimSuffix(s, "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// count is the number of lines a buffer holds.
func count(b fmt.Stringer) int { return bytes.Count([]byte(b.String()), []byte("\n")) }
