package kubectlstreams

import (
	"strings"
	"testing"
	"time"
)

// testAttach: kubectl attach to a running container's stdin, then to one
// on a terminal.
func (s *suite) testAttach(t *testing.T) {
	t.Parallel()
	t.Run("stdin", func(t *testing.T) {
		t.Parallel()
		s.waitReady(t, "attach-stdin")
		st := s.start(t, s.kubectl("attach", "-i", "attach-stdin"))
		for _, l := range []string{"one", "two"} {
			st.stdin.Write([]byte(l + "\n"))
			waitFor(t, 30*time.Second, "the container's answer to "+l, func() string {
				if !strings.Contains(st.stdout.String(), "got "+l+"\n") {
					return "not yet: " + st.String()
				}
				return ""
			})
		}
		// stdinOnce: closing kubectl's stdin closes the container's,
		// which ends it, and the attach with it.
		st.stdin.Close()
		if !st.wait(30 * time.Second) {
			t.Fatalf("kubectl attach -i did not end after its stdin closed: %s", st)
		}
		if out := st.stdout.String(); out != "got one\ngot two\nstdin closed\n" {
			t.Errorf("kubectl attach -i attach-stdin printed %q; want got one, got two, stdin closed: %s", out, st)
		}
	})
	t.Run("tty", func(t *testing.T) {
		t.Parallel()
		s.waitReady(t, "attach-tty")
		st := s.start(t, s.onTerminal("attach", "-it", "attach-tty"))
		st.stdin.Write([]byte("echo sum-$((3+4)); tty\n"))
		waitFor(t, 30*time.Second, "the attached shell's answer", func() string {
			if out := st.stdout.String(); !strings.Contains(out, "sum-7") || !strings.Contains(out, "/dev/pts/") {
				return "not yet: " + st.String()
			}
			return ""
		})
		st.stdin.Write([]byte("exit\n"))
		if !st.wait(30 * time.Second) {
			t.Fatalf("kubectl attach -it did not end when the container's shell exited: %s", st)
		}
	})
}

// testRun: kubectl run -i --rm, with a script on stdin and then on a
// terminal: the pod runs it, kubectl prints its output, and the pod is
// deleted once it ends.
func (s *suite) testRun(t *testing.T) {
	t.Parallel()
	// The toolbox's entrypoint is sh: --command makes "sh" the command,
	// not an argument to the entrypoint's sh.
	run := []string{"--rm", "--image=skep/toolbox:latest", "--image-pull-policy=Never", "--restart=Never", "--command", "--", "sh"}
	t.Run("heredoc", func(t *testing.T) {
		t.Parallel()
		r := s.run(t, "echo hi-$((40+2))\nexit\n", append([]string{"run", "run-heredoc", "-i"}, run...)...)
		if r.Err != nil || !strings.Contains(r.Stdout, "hi-42\n") {
			t.Errorf("kubectl run -i --rm with a script on stdin: want hi-42 printed and exit 0\n%s", r)
		}
		s.waitPodGone(t, "run-heredoc")
	})
	t.Run("tty", func(t *testing.T) {
		t.Parallel()
		st := s.start(t, s.onTerminal(append([]string{"run", "run-tty", "-it"}, run...)...))
		st.stdin.Write([]byte("echo sum-$((1+1)); exit\n"))
		if !st.wait(60 * time.Second) {
			t.Fatalf("kubectl run -it --rm did not end after the shell's exit: %s", st)
		}
		if st.err != nil || !strings.Contains(st.stdout.String(), "sum-2") {
			t.Errorf("kubectl run -it --rm: want sum-2 printed and exit 0: %s", st)
		}
		s.waitPodGone(t, "run-tty")
	})
}

// waitPodGone waits until the pod is not found.
func (s *suite) waitPodGone(t *testing.T, pod string) {
	t.Helper()
	waitFor(t, 30*time.Second, "pod "+pod+" to be deleted", func() string {
		r := s.run(t, "", "get", "pod", pod)
		if r.Err == nil || !strings.Contains(r.Stderr, `pods "`+pod+`" not found`) {
			return r.String()
		}
		return ""
	})
}
