package runtime

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"

	containerd "github.com/containerd/containerd"
	"k8s.io/apimachinery/pkg/types"
)

// ErrNotFound is returned by Logs and Exec for a pod or container the
// runtime does not run.
var ErrNotFound = errors.New("not found")

// logPath is the file a container attempt's stdout and stderr go to.
func (r *Runtime) logPath(uid types.UID, container string, attempt int) string {
	return filepath.Join(r.podDir(uid), "logs", container, strconv.Itoa(attempt)+".log")
}

// removeOldLogs keeps the logs of attempt and the one before it, for
// --previous, and creates the container's log directory.
func (r *Runtime) removeOldLogs(uid types.UID, container string, attempt int) {
	dir := filepath.Dir(r.logPath(uid, container, attempt))
	os.MkdirAll(dir, 0o755)
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		n, err := strconv.Atoi(e.Name()[:len(e.Name())-len(filepath.Ext(e.Name()))])
		if err == nil && n < attempt-1 {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}

// containerSnapshot is what Logs and Exec need of a container, read under
// the pod's lock.
func (r *Runtime) containerSnapshot(uid types.UID, name string) (attempt int, running bool, task containerd.Task, err error) {
	r.mu.Lock()
	pw := r.pods[uid]
	r.mu.Unlock()
	if pw == nil {
		return 0, false, nil, fmt.Errorf("pod %s: %w", uid, ErrNotFound)
	}
	pw.mu.Lock()
	defer pw.mu.Unlock()
	c, ok := pw.containers[name]
	if !ok || (c.id == "" && c.exited == nil && c.last == nil) {
		return 0, false, nil, fmt.Errorf("container %s of pod %s: %w", name, uid, ErrNotFound)
	}
	return c.attempt, c.running, c.task, nil
}

// Logs writes a container's output (stdout and stderr interleaved) to w:
// the current attempt's, or with previous the one before it. With follow it
// keeps writing until the attempt exits or ctx ends.
func (r *Runtime) Logs(ctx context.Context, uid types.UID, container string, follow, previous bool, w io.Writer) error {
	attempt, _, _, err := r.containerSnapshot(uid, container)
	if err != nil {
		return err
	}
	if previous {
		if attempt == 0 {
			return fmt.Errorf("previous logs of container %s: %w", container, ErrNotFound)
		}
		attempt--
		follow = false
	}
	f, err := os.Open(r.logPath(uid, container, attempt))
	if errors.Is(err, os.ErrNotExist) {
		if !follow {
			return nil
		}
	} else if err != nil {
		return fmt.Errorf("open log: %w", err)
	} else {
		defer f.Close()
	}
	for {
		if f != nil {
			if _, err := io.Copy(w, f); err != nil {
				return fmt.Errorf("copy log: %w", err)
			}
		}
		if !follow {
			return nil
		}
		cur, running, _, err := r.containerSnapshot(uid, container)
		if err != nil || cur != attempt || !running {
			// One last read: the exit may have raced the copy.
			if f != nil {
				io.Copy(w, f)
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(200 * time.Millisecond):
		}
		if f == nil {
			if f, err = os.Open(r.logPath(uid, container, attempt)); err != nil {
				f = nil
			} else {
				defer f.Close()
			}
		}
	}
}
