package runtime

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// streamBuffer is an attach client's output stream.
type streamBuffer struct {
	mu     sync.Mutex
	b      bytes.Buffer
	closed bool
}

func (s *streamBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *streamBuffer) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return nil
}

func (s *streamBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitFor waits until the stream holds want.
func (s *streamBuffer) waitFor(t *testing.T, what, want string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(s.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("%s is %q, want it to contain %q", what, s.String(), want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// attachSession is one Attach call running in the background.
type attachSession struct {
	stdin          *io.PipeWriter
	stdout, stderr *streamBuffer
	resize         chan TerminalSize
	cancel         context.CancelFunc
	done           chan error
}

func attach(t *testing.T, r *Runtime, pod *corev1.Pod, container string, withStdin, tty bool) *attachSession {
	ctx, cancel := context.WithCancel(t.Context())
	s := &attachSession{stdout: &streamBuffer{}, stderr: &streamBuffer{}, resize: make(chan TerminalSize, 1), cancel: cancel, done: make(chan error, 1)}
	var in io.Reader
	if withStdin {
		pr, pw := io.Pipe()
		in, s.stdin = pr, pw
	}
	go func() { s.done <- r.Attach(ctx, pod.UID, container, in, s.stdout, s.stderr, tty, s.resize) }()
	t.Cleanup(cancel)
	return s
}

func (s *attachSession) wait(t *testing.T, what string) error {
	t.Helper()
	select {
	case err := <-s.done:
		return err
	case <-time.After(20 * time.Second):
		t.Fatalf("attach did not return after %s", what)
		return nil
	}
}

// waitRunning syncs the pod until its container runs.
func waitRunning(t *testing.T, r *Runtime, pod *corev1.Pod, container string) {
	t.Helper()
	waitStatus(t, r, pod, 30*time.Second, container+" running", func(st corev1.PodStatus) bool {
		return containerStatusOf(st, container).State.Running != nil
	})
}

func TestAttachStdinNoTTY(t *testing.T) {
	env := newTestEnv(t)
	r, _ := env.start()
	app := toolbox("app", "while read l; do echo out:$l; echo err:$l >&2; done; echo stdin-closed")
	app.Stdin = true
	once := toolbox("once", "cat; echo cat-saw-eof")
	once.Stdin, once.StdinOnce = true, true
	pod := newPod("attach", app, once)
	pod.Spec.RestartPolicy = corev1.RestartPolicyNever
	waitRunning(t, r, pod, "app")
	waitRunning(t, r, pod, "once")

	// What the client writes reaches the container; its stdout and stderr
	// come back apart.
	s := attach(t, r, pod, "app", true, false)
	time.Sleep(500 * time.Millisecond) // attached: output from now on
	io.WriteString(s.stdin, "hello\n")
	s.stdout.waitFor(t, "stdout", "out:hello\n")
	s.stderr.waitFor(t, "stderr", "err:hello\n")
	if strings.Contains(s.stdout.String(), "err:") || strings.Contains(s.stderr.String(), "out:") {
		t.Errorf("streams mixed: stdout %q, stderr %q", s.stdout.String(), s.stderr.String())
	}
	// The client closes its stdin and goes: the container's stdin stays
	// open (no stdinOnce), and a second client is heard.
	s.stdin.Close()
	s.cancel()
	if err := s.wait(t, "the client went away"); err != nil {
		t.Errorf("attach: %v", err)
	}
	if !s.stdout.closed || !s.stderr.closed {
		t.Error("attach returned without closing stdout and stderr")
	}
	s2 := attach(t, r, pod, "app", true, false)
	time.Sleep(500 * time.Millisecond)
	io.WriteString(s2.stdin, "again\n")
	s2.stdout.waitFor(t, "second client's stdout", "out:again\n")
	if strings.Contains(s2.stdout.String(), "hello") {
		t.Errorf("second attach got output from before it attached: %q", s2.stdout.String())
	}
	if strings.Contains(logsOf(t, r, pod, "app", nil), "stdin-closed") {
		t.Error("the container's stdin was closed when the first client detached")
	}
	s2.cancel()
	s2.wait(t, "cancel")

	// stdinOnce: the first client's end of input is the container's.
	s3 := attach(t, r, pod, "once", true, false)
	time.Sleep(500 * time.Millisecond)
	io.WriteString(s3.stdin, "only\n")
	s3.stdout.waitFor(t, "stdout of once", "only\n")
	s3.stdin.Close()
	s3.stdout.waitFor(t, "stdout of once", "cat-saw-eof\n")
	// The container exited: attach returns by itself.
	go func() {
		for i := 0; i < 100; i++ {
			r.SyncPod(t.Context(), pod)
			time.Sleep(100 * time.Millisecond)
		}
	}()
	if err := s3.wait(t, "the container exited"); err != nil {
		t.Errorf("attach to an exiting container: %v", err)
	}
}

func TestAttachTTY(t *testing.T) {
	env := newTestEnv(t)
	r, _ := env.start()
	app := toolbox("app", "while read l; do echo got:$l; echo size:$(stty size); echo err:$l >&2; done")
	app.Stdin, app.TTY = true, true
	once := toolbox("once", "cat; echo cat-saw-eof")
	once.Stdin, once.StdinOnce, once.TTY = true, true, true
	pod := newPod("tty", app, once)
	waitRunning(t, r, pod, "app")
	waitRunning(t, r, pod, "once")

	s := attach(t, r, pod, "app", true, true)
	time.Sleep(500 * time.Millisecond)
	s.resize <- TerminalSize{Width: 123, Height: 45}
	time.Sleep(200 * time.Millisecond)
	io.WriteString(s.stdin, "ping\r")
	// The terminal echoes the input, and everything comes on stdout.
	s.stdout.waitFor(t, "stdout", "got:ping\r\n")
	s.stdout.waitFor(t, "stdout", "size:45 123\r\n")
	s.stdout.waitFor(t, "stdout", "err:ping\r\n")
	if !strings.Contains(s.stdout.String(), "ping\r\n") || s.stderr.String() != "" {
		t.Errorf("stdout %q, stderr %q: want the echo and all output on stdout", s.stdout.String(), s.stderr.String())
	}
	s.cancel()
	if err := s.wait(t, "cancel"); err != nil {
		t.Errorf("attach: %v", err)
	}

	// kubectl run -it: with stdinOnce the terminal's input ends when the
	// client goes, and the container with it.
	s = attach(t, r, pod, "once", true, true)
	time.Sleep(500 * time.Millisecond)
	io.WriteString(s.stdin, "only\r")
	s.stdout.waitFor(t, "stdout of once", "only\r\n")
	s.stdin.Close()
	waitStatus(t, r, pod, 20*time.Second, "once exited", func(st corev1.PodStatus) bool {
		return containerStatusOf(st, "once").RestartCount > 0 || containerStatusOf(st, "once").State.Terminated != nil
	})
	if err := s.wait(t, "the container exited"); err != nil {
		t.Errorf("attach to an exiting container: %v", err)
	}
}

func TestAttachWithoutStdin(t *testing.T) {
	env := newTestEnv(t)
	r, _ := env.start()
	pod := newPod("nostdin", toolbox("app", "i=0; while true; do i=$((i+1)); echo tick$i; sleep 0.2; done"))
	waitRunning(t, r, pod, "app")

	s := attach(t, r, pod, "app", true, false)
	err := s.wait(t, "a refused stdin")
	if err == nil || !strings.Contains(err.Error(), `Unable to use stdin: container "app"`) || !strings.Contains(err.Error(), "does not have stdin") {
		t.Errorf("attach with stdin to a container without one: %v", err)
	}
	// Output only is fine.
	s = attach(t, r, pod, "app", false, false)
	s.stdout.waitFor(t, "stdout", "tick")
	s.cancel()
	if err := s.wait(t, "cancel"); err != nil {
		t.Errorf("attach: %v", err)
	}
	if err := r.Attach(t.Context(), pod.UID, "nope", nil, nil, nil, false, nil); !errors.Is(err, ErrNotFound) {
		t.Errorf("attach to a container the pod lacks: %v, want ErrNotFound", err)
	}
}

// A container with a stdin and no terminal has FIFOs and a log driver the
// agent started: both outlive the agent, and a client of the next agent
// reaches the same stdin.
func TestAttachAcrossAgentRestart(t *testing.T) {
	env := newTestEnv(t)
	r1, stop1 := env.start()
	app := toolbox("app", "(while true; do echo tick; sleep 0.2; done) & while read l; do echo out:$l; done")
	app.Stdin = true
	pod := newPod("restart", app)
	waitRunning(t, r1, pod, "app")
	s := attach(t, r1, pod, "app", true, false)
	time.Sleep(500 * time.Millisecond)
	io.WriteString(s.stdin, "before\n")
	s.stdout.waitFor(t, "stdout", "out:before\n")
	s.cancel()
	s.wait(t, "cancel")
	stop1()
	down := time.Now()
	time.Sleep(2 * time.Second)
	up := time.Now()

	r2, _ := env.start()
	waitRunning(t, r2, pod, "app")
	s = attach(t, r2, pod, "app", true, false)
	time.Sleep(500 * time.Millisecond)
	io.WriteString(s.stdin, "after\n")
	s.stdout.waitFor(t, "stdout", "out:after\n")
	s.cancel()
	s.wait(t, "cancel")
	var whileDown int
	for _, line := range strings.Split(logsOf(t, r2, pod, "app", &corev1.PodLogOptions{Timestamps: true}), "\n") {
		ts, text, _ := strings.Cut(line, " ")
		if at, err := time.Parse(time.RFC3339Nano, ts); err == nil && text == "tick" && at.After(down) && at.Before(up) {
			whileDown++
		}
	}
	if whileDown < 6 {
		t.Errorf("%d ticks logged in the 2 s no agent ran, want about 10", whileDown)
	}
}
