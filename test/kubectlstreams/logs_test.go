package kubectlstreams

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The writer pod's lines, "line N", with N counting from 1.
var numbered = regexp.MustCompile(`^line (\d+)$`)

// lineNumbers checks that every line is "line N", N consecutive, and
// returns the numbers.
func lineNumbers(t *testing.T, what string, ls []string) []int {
	t.Helper()
	var ns []int
	for i, l := range ls {
		m := numbered.FindStringSubmatch(l)
		if m == nil {
			t.Fatalf("%s: line %d is %q, not the writer's \"line N\"", what, i+1, l)
		}
		n, _ := strconv.Atoi(m[1])
		if len(ns) > 0 && n != ns[len(ns)-1]+1 {
			t.Fatalf("%s: line %d is %q, after line %d: lines lost or repeated", what, i+1, l, ns[len(ns)-1])
		}
		ns = append(ns, n)
	}
	return ns
}

// testLogs: kubectl logs of a container that writes a line every 0.2 s:
// followed, with timestamps, the last lines only, the recent ones only.
func (s *suite) testLogs(t *testing.T) {
	t.Parallel()
	s.waitReady(t, "writer")

	t.Run("follow", func(t *testing.T) {
		t.Parallel()
		st := s.start(t, s.kubectl("logs", "-f", "writer"))
		var first int
		waitFor(t, 30*time.Second, "the first lines", func() string {
			if first = count(st.stdout); first < 3 {
				return st.String()
			}
			return ""
		})
		// Lines written since arrive while kubectl still runs.
		waitFor(t, 30*time.Second, "lines written while following", func() string {
			if count(st.stdout) < first+10 {
				return st.String()
			}
			return ""
		})
		select {
		case <-st.done:
			t.Fatalf("kubectl logs -f ended while the container runs: %s", st)
		default:
		}
		st.kill()
		<-st.done
		out := st.stdout.String()
		lineNumbers(t, "kubectl logs -f writer", lines(out[:strings.LastIndexByte(out, '\n')+1]))
	})

	t.Run("timestamps", func(t *testing.T) {
		t.Parallel()
		before := time.Now()
		out := s.must(t, "logs", "writer", "--timestamps", "--tail=5")
		ls := lines(out)
		var plain []string
		var last time.Time
		for _, l := range ls {
			ts, text, _ := strings.Cut(l, " ")
			at, err := time.Parse(time.RFC3339Nano, ts)
			if err != nil {
				t.Fatalf("kubectl logs --timestamps: line %q does not start with an RFC 3339 time: %v", l, err)
			}
			if at.Before(last) || at.After(time.Now()) || before.Sub(at) > 5*time.Minute {
				t.Errorf("kubectl logs --timestamps: time %s of %q is out of order or not recent (now %s)", at, l, time.Now())
			}
			last = at
			plain = append(plain, text)
		}
		if len(ls) != 5 {
			t.Errorf("kubectl logs --timestamps --tail=5 printed %d lines:\n%s", len(ls), out)
		}
		lineNumbers(t, "kubectl logs --timestamps", plain)
	})

	t.Run("tail", func(t *testing.T) {
		t.Parallel()
		out := s.must(t, "logs", "writer", "--tail=3")
		ns := lineNumbers(t, "kubectl logs --tail=3", lines(out))
		all := lineNumbers(t, "kubectl logs", lines(s.must(t, "logs", "writer")))
		if len(ns) != 3 || ns[0] < 2 || len(all) < ns[2] || all[0] != 1 {
			t.Errorf("kubectl logs --tail=3 printed lines %v; the whole log has %d lines from line %v", ns, len(all), all[:min(1, len(all))])
		}
		if out := s.must(t, "logs", "writer", "--tail=0"); out != "" {
			t.Errorf("kubectl logs --tail=0 printed %q, want nothing", out)
		}
	})

	t.Run("since", func(t *testing.T) {
		t.Parallel()
		// Wait until the container has written for well over 2 s.
		waitFor(t, 30*time.Second, "6 s of lines", func() string {
			if n := len(lines(s.must(t, "logs", "writer"))); n < 30 {
				return fmt.Sprintf("%d lines", n)
			}
			return ""
		})
		start := time.Now()
		out := s.must(t, "logs", "writer", "--since=2s", "--timestamps")
		all := lines(s.must(t, "logs", "writer"))
		ls := lines(out)
		if len(ls) == 0 || len(ls) >= len(all) || len(ls) > 20 {
			t.Errorf("kubectl logs --since=2s printed %d lines of %d (one every 0.2 s):\n%s", len(ls), len(all), short(out))
		}
		for _, l := range ls {
			ts, _, _ := strings.Cut(l, " ")
			at, err := time.Parse(time.RFC3339Nano, ts)
			// 1 s of slack for kubectl's start and the server's clock.
			if err != nil || at.Before(start.Add(-3*time.Second)) {
				t.Errorf("kubectl logs --since=2s (run at %s) printed %q: older than 2 s", start.Format(time.RFC3339Nano), l)
				break
			}
		}
	})
}

// testLogsPrevious: kubectl logs --previous of a container that exits and
// is restarted shows the run before the current one.
func (s *suite) testLogsPrevious(t *testing.T) {
	t.Parallel()
	waitFor(t, 60*time.Second, "restarter to restart", func() string {
		r := s.run(t, "", "get", "pod", "restarter", "-o", "jsonpath={.status.containerStatuses[0].restartCount}")
		if n, _ := strconv.Atoi(r.Stdout); r.Err != nil || n < 1 {
			return r.String()
		}
		return ""
	})
	run := regexp.MustCompile(`^run (\d+)\n$`)
	prev := s.must(t, "logs", "restarter", "--previous")
	cur := s.must(t, "logs", "restarter")
	p, c := run.FindStringSubmatch(prev), run.FindStringSubmatch(cur)
	if p == nil || c == nil {
		t.Fatalf("kubectl logs --previous printed %q and kubectl logs %q; want one \"run N\" each", prev, cur)
	}
	// A restart may come between the two reads: the current run is
	// later than the previous, by one unless it did.
	if pn, cn := atoi(p[1]), atoi(c[1]); cn <= pn {
		t.Errorf("kubectl logs --previous shows run %d, kubectl logs run %d: want the previous run before the current", pn, cn)
	}
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}
