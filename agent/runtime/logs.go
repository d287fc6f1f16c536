package runtime

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	containerd "github.com/containerd/containerd"
	"github.com/containerd/containerd/cio"
	"github.com/google/uuid"
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

// Exec runs cmd in a running container of the pod, with the container's
// environment and working directory, and returns its exit code.
func (r *Runtime) Exec(ctx context.Context, uid types.UID, container string, cmd []string, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	_, running, task, err := r.containerSnapshot(uid, container)
	if err != nil {
		return -1, err
	}
	if !running || task == nil {
		return -1, fmt.Errorf("exec in container %s of pod %s: container is not running", container, uid)
	}
	return r.execTask(ctx, task.ID(), cmd, stdin, stdout, stderr)
}

// execTask runs cmd as an extra process of the task of containerID.
func (r *Runtime) execTask(ctx context.Context, containerID string, cmd []string, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	if len(cmd) == 0 {
		return -1, errors.New("exec: no command")
	}
	ctx = r.nsCtx(ctx)
	ctr, err := r.client.LoadContainer(ctx, containerID)
	if err != nil {
		return -1, fmt.Errorf("exec: load container %s: %w", containerID, err)
	}
	task, err := ctr.Task(ctx, nil)
	if err != nil {
		return -1, fmt.Errorf("exec: task of %s: %w", containerID, err)
	}
	spec, err := ctr.Spec(ctx)
	if err != nil {
		return -1, fmt.Errorf("exec: spec of %s: %w", containerID, err)
	}
	pspec := *spec.Process
	pspec.Args = cmd
	pspec.Terminal = false
	if stdout == nil {
		stdout = io.Discard
	}
	if stderr == nil {
		stderr = io.Discard
	}
	execID := "exec-" + uuid.NewString()[:12]
	// The process sees the end of its stdin only when the shim is told to
	// close it; closing our end of the FIFO is not enough.
	stdinEOF := make(chan struct{})
	if stdin != nil {
		stdin = &eofNotifier{r: stdin, eof: sync.OnceFunc(func() { close(stdinEOF) })}
	}
	proc, err := task.Exec(ctx, execID, &pspec, cio.NewCreator(
		cio.WithStreams(stdin, stdout, stderr),
		cio.WithFIFODir(filepath.Join(r.cfg.DataDir, "fifo")),
	))
	if err != nil {
		return -1, fmt.Errorf("exec in %s: %w", containerID, err)
	}
	// The process is deleted even when ctx ends (a probe's timeout).
	cleanupCtx := context.WithoutCancel(ctx)
	defer proc.Delete(cleanupCtx, containerd.WithProcessKill)
	exited, err := proc.Wait(cleanupCtx)
	if err != nil {
		return -1, fmt.Errorf("exec in %s: wait: %w", containerID, err)
	}
	if err := proc.Start(ctx); err != nil {
		return -1, fmt.Errorf("exec in %s: start: %w", containerID, err)
	}
	if stdin != nil {
		finished := make(chan struct{})
		defer close(finished)
		go func() {
			select {
			case <-stdinEOF:
				proc.CloseIO(cleanupCtx, containerd.WithStdinCloser)
			case <-finished:
			}
		}()
	}
	select {
	case st := <-exited:
		code, _, err := st.Result()
		if err != nil {
			return -1, fmt.Errorf("exec in %s: %w", containerID, err)
		}
		proc.IO().Wait()
		return int(code), nil
	case <-ctx.Done():
		proc.Kill(cleanupCtx, 9)
		<-exited
		return -1, fmt.Errorf("exec in %s: %w", containerID, ctx.Err())
	}
}

// eofNotifier calls eof once its reader is exhausted.
type eofNotifier struct {
	r   io.Reader
	eof func()
}

func (e *eofNotifier) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err == io.EOF {
		e.eof()
	}
	return n, err
}
