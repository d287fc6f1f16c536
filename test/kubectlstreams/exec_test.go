package kubectlstreams

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"
	"testing"
	"time"
)

// testExec: kubectl exec with stdin, with a terminal, with the command's
// exit code, and with a large output that must arrive byte for byte.
func (s *suite) testExec(t *testing.T) {
	t.Parallel()
	s.waitReady(t, "tools")

	t.Run("stdin", func(t *testing.T) {
		t.Parallel()
		in := "hello\nworld\n" + strings.Repeat("0123456789", 10000) + "\n"
		r := s.run(t, in, "exec", "-i", "tools", "--", "cat")
		if r.Err != nil || r.Stdout != in {
			t.Errorf("kubectl exec -i tools -- cat: want stdin (%d bytes) back, got %d bytes\n%s", len(in), len(r.Stdout), short(r.String()))
		}
	})

	t.Run("tty", func(t *testing.T) {
		t.Parallel()
		// A user's `kubectl exec -it tools -- sh`: the shell runs on a
		// terminal (tty names it), reads what is typed and exits with
		// the code typed last, which kubectl passes on.
		st := s.start(t, s.onTerminal("exec", "-it", "tools", "--", "sh"))
		st.stdin.Write([]byte("echo sum-$((40+2)); tty; stty size\n"))
		waitFor(t, 30*time.Second, "the shell's answer", func() string {
			if out := st.stdout.String(); !strings.Contains(out, "sum-42") || !strings.Contains(out, "/dev/pts/") {
				return "not yet: " + st.String()
			}
			return ""
		})
		st.stdin.Write([]byte("exit 5\n"))
		if !st.wait(30 * time.Second) {
			t.Fatalf("kubectl exec -it did not end after the shell's exit: %s", st)
		}
		if code := st.cmd.ProcessState.ExitCode(); code != 5 {
			t.Errorf("kubectl exec -it: exit %d, want the shell's 5: %s", code, st)
		}
	})

	t.Run("exit-code", func(t *testing.T) {
		t.Parallel()
		for _, code := range []int{3, 0, 42} {
			r := s.run(t, "", "exec", "tools", "--", "sh", "-c", "echo out; echo err >&2; exit "+strconv.Itoa(code))
			if got := r.ExitCode(); got != code || r.Stdout != "out\n" || !strings.Contains(r.Stderr, "err\n") {
				t.Errorf("kubectl exec tools -- sh -c 'exit %d': exit %d, want %d, with out on stdout and err on stderr\n%s", code, got, code, r)
			}
		}
		if r := s.run(t, "", "exec", "tools", "--", "no-such-command"); r.ExitCode() == 0 {
			t.Errorf("kubectl exec of a missing command exited 0\n%s", r)
		}
	})

	t.Run("50MiB", func(t *testing.T) {
		t.Parallel()
		sum := strings.Fields(s.must(t, "exec", "tools", "--", "sh", "-c", "head -c 52428800 /dev/urandom > /tmp/f50 && sha256sum /tmp/f50"))
		if len(sum) != 2 {
			t.Fatalf("sha256sum in the pod printed %q", sum)
		}
		r := s.run(t, "", "exec", "tools", "--", "cat", "/tmp/f50")
		got := sha256.Sum256([]byte(r.Stdout))
		if r.Err != nil || len(r.Stdout) != 52428800 || hex.EncodeToString(got[:]) != sum[0] {
			t.Errorf("kubectl exec tools -- cat /tmp/f50: %v, %d bytes with sha256 %x; want 52428800 bytes with sha256 %s\nstderr: %s",
				r.Err, len(r.Stdout), got, sum[0], r.Stderr)
		}
	})
}

// testExecSilence: a stream with nothing on it for more than a minute
// stays open (no idle timeout of the API server, its proxy or the agent
// cuts it).
func (s *suite) testExecSilence(t *testing.T) {
	t.Parallel()
	s.waitReady(t, "tools")
	// stdin stays open and silent too, as a user's idle terminal's.
	st := s.start(t, s.kubectl("exec", "-i", "tools", "--", "sh", "-c", "sleep 65; echo done"))
	if !st.wait(commandTimeout) {
		t.Fatalf("kubectl exec of sleep 65 still running after %s: %s", commandTimeout, st)
	}
	st.stdin.Close()
	if st.err != nil || st.stdout.String() != "done\n" {
		t.Errorf("kubectl exec -i tools -- sh -c 'sleep 65; echo done': want done, exit 0: %s", st)
	}
}

// testExecClientGone: when kubectl dies mid-stream, the process it
// started in the container ends too.
func (s *suite) testExecClientGone(t *testing.T) {
	t.Parallel()
	s.waitReady(t, "tools")
	st := s.start(t, s.kubectl("exec", "-i", "tools", "--", "sleep", "1000"))
	waitFor(t, 30*time.Second, "sleep 1000 in the pod", func() string {
		if ps := s.ps(t); !strings.Contains(ps, "sleep 1000\n") {
			return "ps in the pod:\n" + ps + "\n" + st.String()
		}
		return ""
	})
	st.kill()
	<-st.done
	waitFor(t, 20*time.Second, "sleep 1000 to end once kubectl was killed", func() string {
		if ps := s.ps(t); strings.Contains(ps, "sleep 1000\n") {
			return "still in the pod:\n" + ps
		}
		return ""
	})
}

// ps is busybox ps in the tools pod, each line trimmed of trailing spaces.
func (s *suite) ps(t *testing.T) string {
	t.Helper()
	out := s.must(t, "exec", "tools", "--", "ps", "-o", "pid,args")
	var b strings.Builder
	for _, l := range lines(out) {
		b.WriteString(strings.TrimRight(l, " ") + "\n")
	}
	return b.String()
}

// short keeps a failure's message readable when a stream was large.
func short(s string) string {
	if len(s) > 4000 {
		return s[:2000] + "\n[...]\n" + s[len(s)-2000:]
	}
	return s
}
