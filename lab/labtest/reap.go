package labtest

import (
	"fmt"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// BecomeSubreaper makes the test binary the subreaper of what it starts.
// containerd's shims daemonize: orphaned, they would become zombies of
// PID 1, which on some machines reaps them only seconds later, so a test
// would end with shims still listed. As subreaper, the test binary gets
// them and reaps them itself (ReapShims).
func BecomeSubreaper() error {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("become child subreaper: %w", err)
	}
	return nil
}

// ReapShims reaps the exited shims the test binary inherited as their
// subreaper, and returns how many shims it still has as children. Only
// processes named containerd-shim are waited for: the other children
// (containerd among them, in tests that run it themselves) are os/exec's
// to wait for.
func ReapShims() int { return reap("containerd-shim") }

// reap waits for the exited children whose name starts with one of
// prefixes and counts those still running.
func reap(prefixes ...string) int {
	entries, _ := os.ReadDir("/proc")
	left := 0
	for _, e := range entries {
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...
		s := string(stat)
		open, close := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || close < 0 || !hasAnyPrefix(s[open+1:close], prefixes) {
			continue
		}
		var state string
		var pid, ppid int
		fmt.Sscan(s[:open], &pid)
		fmt.Sscan(s[close+1:], &state, &ppid)
		if ppid != os.Getpid() {
			continue
		}
		if state == "Z" {
			var ws unix.WaitStatus
			unix.Wait4(pid, &ws, unix.WNOHANG, nil)
			continue
		}
		left++
	}
	return left
}

// WaitShimsGone reaps shims, and the containerd and runc processes of
// agents the test binary inherited (an agent's cleanup may exit while its
// containerd, or a runc a shim started, is still stopping), until none is
// left, for at most d. Only for tests that start no containerd themselves.
func WaitShimsGone(d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if reap("containerd", "runc") == 0 {
			return true
		}
		time.Sleep(100 * time.Millisecond)
	}
	return reap("containerd", "runc") == 0
}

func hasAnyPrefix(s string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}
