package runtime

import (
	"bytes"
	"context"
	"errors"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/skep-io/skep/agent/containerlog"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// logsOf reads a container's log with opts.
func logsOf(t *testing.T, r *Runtime, pod *corev1.Pod, container string, opts *corev1.PodLogOptions) string {
	t.Helper()
	var b bytes.Buffer
	if err := r.Logs(t.Context(), pod.UID, container, opts, &b); err != nil {
		t.Fatalf("Logs %s %+v: %v", container, opts, err)
	}
	return b.String()
}

// waitLogs reads the container's log until it contains want.
func waitLogs(t *testing.T, r *Runtime, pod *corev1.Pod, container, want string, timeout time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		r.SyncPod(t.Context(), pod)
		out := logsOf(t, r, pod, container, nil)
		if strings.Contains(out, want) {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("log of %s is %q after %s, want it to contain %q", container, out, timeout, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

var criRecord = regexp.MustCompile(`^(\S+) (stdout|stderr) ([FP]) (.*)$`)

// logRecords reads the container's current log file as written.
func logRecords(t *testing.T, r *Runtime, pod *corev1.Pod, container string) [][]string {
	t.Helper()
	attempt, _, _, err := r.containerSnapshot(pod.UID, container)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(r.logPath(pod.UID, container, attempt))
	if err != nil {
		t.Fatal(err)
	}
	var recs [][]string
	for _, line := range strings.Split(strings.TrimSuffix(string(data), "\n"), "\n") {
		m := criRecord.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("log record %.200q is not in the CRI log format", line)
		}
		if _, err := time.Parse(time.RFC3339Nano, m[1]); err != nil {
			t.Fatalf("log record %.200q: timestamp: %v", line, err)
		}
		recs = append(recs, m)
	}
	return recs
}

func TestLogsOptions(t *testing.T) {
	env := newTestEnv(t)
	r, _ := env.start()
	begin := time.Now()
	pod := newPod("logs", toolbox("app", "echo one; sleep 3; echo two; sleep 0.2; echo err >&2; sleep 0.2; echo three; sleep 1000 & wait"))
	waitLogs(t, r, pod, "app", "three", 30*time.Second)
	// Read at once: "one" is 3 s old, the rest at most about a second.
	since := int64(2)
	if got := logsOf(t, r, pod, "app", &corev1.PodLogOptions{SinceSeconds: &since}); got != "two\nerr\nthree\n" {
		t.Errorf("--since=2s: %q, want the lines of the last two seconds", got)
	}
	if got := logsOf(t, r, pod, "app", nil); got != "one\ntwo\nerr\nthree\n" {
		t.Errorf("logs %q, want stdout and stderr interleaved", got)
	}

	// The file is in the CRI format, stderr marked as such.
	recs := logRecords(t, r, pod, "app")
	if len(recs) != 4 || recs[2][2] != "stderr" || recs[2][4] != "err" || recs[0][2] != "stdout" || recs[0][3] != "F" {
		t.Errorf("log records %q, want four whole lines, the third on stderr", recs)
	}

	stamped := logsOf(t, r, pod, "app", &corev1.PodLogOptions{Timestamps: true})
	lines := strings.Split(strings.TrimSuffix(stamped, "\n"), "\n")
	var stamps []time.Time
	for i, want := range []string{"one", "two", "err", "three"} {
		ts, text, _ := strings.Cut(lines[min(i, len(lines)-1)], " ")
		at, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil || text != want || at.Before(begin) || at.After(time.Now()) {
			t.Fatalf("--timestamps: line %d of %q: want a time since the test began and %q (%v)", i, stamped, want, err)
		}
		stamps = append(stamps, at)
	}
	if gap := stamps[1].Sub(stamps[0]); gap < 2900*time.Millisecond {
		t.Errorf("--timestamps: %s between one and two, want the 3 s the container slept", gap)
	}

	sinceTime := metav1.NewTime(stamps[1])
	if got := logsOf(t, r, pod, "app", &corev1.PodLogOptions{SinceTime: &sinceTime}); got != "two\nerr\nthree\n" {
		t.Errorf("--since-time=%s: %q, want from two on", stamps[1].Format(time.RFC3339Nano), got)
	}
	tail := int64(2)
	if got := logsOf(t, r, pod, "app", &corev1.PodLogOptions{TailLines: &tail}); got != "err\nthree\n" {
		t.Errorf("--tail=2: %q", got)
	}
	limit := int64(6)
	if got := logsOf(t, r, pod, "app", &corev1.PodLogOptions{LimitBytes: &limit}); got != "one\ntw" {
		t.Errorf("--limit-bytes=6: %q", got)
	}
	// --previous of a container that never restarted: kubelet's answer.
	err := r.Logs(t.Context(), pod.UID, "app", &corev1.PodLogOptions{Previous: true}, &bytes.Buffer{})
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), `previous terminated container "app" in pod "logs"`) {
		t.Errorf("--previous without a previous attempt: %v", err)
	}
}

func TestLogsPreviousAfterRestart(t *testing.T) {
	env := newTestEnv(t)
	r, _ := env.start()
	pod := newPod("prev", toolbox("app", "n=$(cat /data/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /data/n; echo run$n; sleep 0.2; echo warn$n >&2; [ $n -gt 1 ] || exit 3; sleep 1000 & wait"))
	pod.Spec.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
	pod.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}
	waitStatus(t, r, pod, 60*time.Second, "restarted", func(st corev1.PodStatus) bool {
		s := containerStatusOf(st, "app")
		return s.RestartCount == 1 && s.State.Running != nil
	})
	cur := waitLogs(t, r, pod, "app", "warn2", 10*time.Second)
	if cur != "run2\nwarn2\n" {
		t.Errorf("current logs %q, want the second run's", cur)
	}
	if prev := logsOf(t, r, pod, "app", &corev1.PodLogOptions{Previous: true}); prev != "run1\nwarn1\n" {
		t.Errorf("--previous: %q, want the first run's", prev)
	}
	// --previous never follows: it returns at once.
	done := make(chan string, 1)
	go func() { done <- logsOf(t, r, pod, "app", &corev1.PodLogOptions{Previous: true, Follow: true}) }()
	select {
	case prev := <-done:
		if prev != "run1\nwarn1\n" {
			t.Errorf("--previous -f: %q", prev)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("--previous -f did not return")
	}
}

// A line of 100 KB without a newline is stored as partial records and read
// back whole, with one timestamp.
func TestLogsLongPartialLine(t *testing.T) {
	env := newTestEnv(t)
	r, _ := env.start()
	pod := newPod("long", toolbox("app", "head -c 102400 /dev/zero | tr '\\000' x; sleep 1000 & wait"))
	want := strings.Repeat("x", 102400)
	deadline := time.Now().Add(30 * time.Second)
	var got string
	for time.Now().Before(deadline) {
		r.SyncPod(t.Context(), pod)
		if got = logsOf(t, r, pod, "app", nil); len(got) >= len(want) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got != want {
		t.Fatalf("logs: %d bytes (%.40q...), want 102400 x without a newline", len(got), got)
	}
	recs := logRecords(t, r, pod, "app")
	if len(recs) < 102400/containerlog.MaxLine {
		t.Errorf("%d records for 100 KB, want records of at most %d bytes", len(recs), containerlog.MaxLine)
	}
	for _, rec := range recs {
		if rec[3] != "P" || len(rec[4]) > containerlog.MaxLine {
			t.Fatalf("record %.80q: want partial records of at most %d bytes", rec[0], containerlog.MaxLine)
		}
	}
	stamped := logsOf(t, r, pod, "app", &corev1.PodLogOptions{Timestamps: true})
	ts, rest, _ := strings.Cut(stamped, " ")
	if _, err := time.Parse(time.RFC3339Nano, ts); err != nil || rest != want {
		t.Errorf("--timestamps: want one timestamp before the whole line, got %.60q... (%v)", stamped, err)
	}
}

// The log driver writes while no agent runs: the lines a container prints
// between two Runtimes are in its log, with the times they were printed.
func TestLogsWrittenWhileAgentIsDown(t *testing.T) {
	env := newTestEnv(t)
	r1, stop1 := env.start()
	pod := newPod("ticker", toolbox("app", "i=0; while true; do i=$((i+1)); echo tick$i; sleep 0.2; done"))
	waitLogs(t, r1, pod, "app", "tick1\n", 30*time.Second)
	stop1() // the agent and its containerd go away; the pod stays
	down := time.Now()
	time.Sleep(2 * time.Second)
	up := time.Now()

	r2, _ := env.start()
	waitStatus(t, r2, pod, 30*time.Second, "adopted", func(st corev1.PodStatus) bool {
		return containerStatusOf(st, "app").State.Running != nil
	})
	var whileDown int
	for _, line := range strings.Split(logsOf(t, r2, pod, "app", &corev1.PodLogOptions{Timestamps: true}), "\n") {
		ts, _, _ := strings.Cut(line, " ")
		if at, err := time.Parse(time.RFC3339Nano, ts); err == nil && at.After(down) && at.Before(up) {
			whileDown++
		}
	}
	// Five a second, less the shell's own time.
	if whileDown < 6 {
		t.Errorf("%d lines stamped in the 2 s no agent ran, want about 10", whileDown)
	}
	// Following works on the adopted container's log.
	tail := int64(0)
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	r2.Logs(ctx, pod.UID, "app", &corev1.PodLogOptions{Follow: true, TailLines: &tail}, &out)
	if n := strings.Count(out.String(), "tick"); n < 4 {
		t.Errorf("-f --tail=0 for 2 s: %q, want new ticks", out.String())
	}
}
