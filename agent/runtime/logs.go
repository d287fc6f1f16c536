package runtime

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	containerd "github.com/containerd/containerd"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	internalapi "k8s.io/cri-api/pkg/apis"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	crilogs "k8s.io/cri-client/pkg/logs"
)

// ErrNotFound is returned by Logs, Exec and Attach for a pod or container
// the runtime does not run.
var ErrNotFound = errors.New("not found")

// logPath is the file a container attempt's stdout and stderr go to, in the
// CRI log format (written by agent/containerlog's driver).
func (r *Runtime) logPath(uid types.UID, container string, attempt int) string {
	return filepath.Join(r.podDir(uid), "logs", container, strconv.Itoa(attempt)+".log")
}

// removeOldLogs keeps the files of attempt and the one before it, for
// --previous, and creates the container's log directory. An attempt's
// files are its log and, for a container with a stdin, its FIFOs
// (<attempt>.stdin and so on).
func (r *Runtime) removeOldLogs(uid types.UID, container string, attempt int) {
	dir := filepath.Dir(r.logPath(uid, container, attempt))
	os.MkdirAll(dir, 0o755)
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		prefix, _, _ := strings.Cut(e.Name(), ".")
		n, err := strconv.Atoi(prefix)
		if err == nil && n < attempt-1 {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}

// containerSnapshot is what Logs, Exec and Attach need of a container,
// read under the pod's lock.
func (r *Runtime) containerSnapshot(uid types.UID, name string) (attempt int, running bool, task containerd.Task, err error) {
	snap, err := r.snapshot(uid, name)
	return snap.attempt, snap.running, snap.task, err
}

// containerView is a container as Logs and Attach see it.
type containerView struct {
	attempt int
	running bool
	task    containerd.Task
	podName string
	spec    *corev1.Container // nil when the pod spec no longer names it
	hasLast bool              // an attempt before this one ended
}

func (r *Runtime) snapshot(uid types.UID, name string) (containerView, error) {
	r.mu.Lock()
	pw := r.pods[uid]
	r.mu.Unlock()
	if pw == nil {
		return containerView{}, fmt.Errorf("pod %s: %w", uid, ErrNotFound)
	}
	pw.mu.Lock()
	defer pw.mu.Unlock()
	c, ok := pw.containers[name]
	if !ok || (c.id == "" && c.exited == nil && c.last == nil) {
		return containerView{}, fmt.Errorf("container %s of pod %s: %w", name, uid, ErrNotFound)
	}
	v := containerView{attempt: c.attempt, running: c.running, task: c.task, hasLast: c.last != nil || c.attempt > 0}
	if pw.pod != nil {
		v.podName = pw.pod.Name
		if s := findContainer(pw.pod, name); s != nil {
			v.spec = s.DeepCopy()
		}
	}
	return v, nil
}

// Logs writes a container's output to w as kubelet does: stdout and stderr
// interleaved, of the current attempt or with opts.Previous the one before
// it, filtered by SinceSeconds, SinceTime, TailLines and LimitBytes, each
// line prefixed with its time with Timestamps. With Follow it keeps
// writing until the attempt exits or ctx ends. opts.Container is not read:
// the caller chose the container.
func (r *Runtime) Logs(ctx context.Context, uid types.UID, container string, opts *corev1.PodLogOptions, w io.Writer) error {
	if opts == nil {
		opts = &corev1.PodLogOptions{}
	}
	v, err := r.snapshot(uid, container)
	if err != nil {
		return err
	}
	attempt, follow := v.attempt, opts.Follow
	pod := v.podName
	if pod == "" {
		pod = string(uid)
	}
	noPrevious := fmt.Errorf("previous terminated container %q in pod %q: %w", container, pod, ErrNotFound)
	if opts.Previous {
		if !v.hasLast {
			return noPrevious
		}
		attempt--
		follow = false
	}
	path := r.logPath(uid, container, attempt)
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		if opts.Previous {
			return noPrevious
		}
		// Created but never started (a failed start): no output yet.
		return nil
	}
	lo := &crilogs.LogOptions{
		TailLines:  opts.TailLines,
		LimitBytes: opts.LimitBytes,
		Follow:     follow,
		Timestamp:  opts.Timestamps,
	}
	switch {
	case opts.SinceTime != nil:
		lo.Since = opts.SinceTime.Time
	case opts.SinceSeconds != nil:
		lo.Since = time.Now().Add(-time.Duration(*opts.SinceSeconds) * time.Second)
	}
	return r.readLog(ctx, uid, container, attempt, path, lo, w, w)
}

// readLog reads an attempt's log with kubelet's reader. The reader asks a
// CRI runtime service whether the container still runs when it follows a
// log that stopped growing; attemptStatus answers for this runtime.
func (r *Runtime) readLog(ctx context.Context, uid types.UID, container string, attempt int, path string, opts *crilogs.LogOptions, stdout, stderr io.Writer) error {
	status := &attemptStatus{r: r, uid: uid, container: container, attempt: attempt}
	err := crilogs.ReadLogs(ctx, path, "", opts, status, stdout, stderr)
	if err != nil && ctx.Err() != nil {
		// The client went away while following: not a failure.
		return nil
	}
	if err != nil {
		return fmt.Errorf("read log of container %s: %w", container, err)
	}
	return nil
}

// attemptStatus is the one call of a CRI runtime service that kubelet's log
// reader makes (ContainerStatus, while following): running while the
// runtime runs the attempt read. The rest of the interface is left nil:
// the reader calls nothing else.
type attemptStatus struct {
	internalapi.RuntimeService
	r         *Runtime
	uid       types.UID
	container string
	attempt   int
}

func (s *attemptStatus) ContainerStatus(ctx context.Context, _ string, _ bool) (*runtimeapi.ContainerStatusResponse, error) {
	state := runtimeapi.ContainerState_CONTAINER_EXITED
	if attempt, running, _, err := s.r.containerSnapshot(s.uid, s.container); err == nil && running && attempt == s.attempt {
		state = runtimeapi.ContainerState_CONTAINER_RUNNING
	}
	return &runtimeapi.ContainerStatusResponse{Status: &runtimeapi.ContainerStatus{State: state}}, nil
}
