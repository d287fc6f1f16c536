package runtime

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"sync"
	"time"

	containerd "github.com/containerd/containerd"
	"github.com/containerd/containerd/cio"
	"github.com/google/uuid"
	"k8s.io/apimachinery/pkg/types"
)

// TerminalSize is a terminal's size, for exec and attach with a TTY: the
// width and height the client's terminal has, each time it changes.
type TerminalSize struct {
	Width, Height uint16
}

// ExecIO is where an exec'd process's streams go. With TTY the process
// gets a terminal: its stdout and stderr both go to Stdout, and each size
// on Resize (nil: none) resizes the terminal.
type ExecIO struct {
	Stdin          io.Reader // nil: none
	Stdout, Stderr io.Writer // nil: discarded
	TTY            bool
	Resize         <-chan TerminalSize
}

// Exec runs cmd in a running container of the pod, with the container's
// environment and working directory, and returns its exit code. The
// process is killed and removed when ctx ends: no exec outlives its client.
func (r *Runtime) Exec(ctx context.Context, uid types.UID, container string, cmd []string, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	return r.ExecWithIO(ctx, uid, container, cmd, ExecIO{Stdin: stdin, Stdout: stdout, Stderr: stderr})
}

// ExecWithIO is Exec with a terminal when sio asks for one.
func (r *Runtime) ExecWithIO(ctx context.Context, uid types.UID, container string, cmd []string, sio ExecIO) (int, error) {
	_, running, task, err := r.containerSnapshot(uid, container)
	if err != nil {
		return -1, err
	}
	if !running || task == nil {
		return -1, fmt.Errorf("exec in container %s of pod %s: container is not running", container, uid)
	}
	return r.execTask(ctx, task.ID(), cmd, sio)
}

// execSetupTimeout bounds creating and starting an exec'd process.
const execSetupTimeout = 30 * time.Second

// execTask runs cmd as an extra process of the task of containerID.
func (r *Runtime) execTask(ctx context.Context, containerID string, cmd []string, sio ExecIO) (int, error) {
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
	pspec.Terminal = sio.TTY
	stdin, stdout, stderr := sio.Stdin, sio.Stdout, sio.Stderr
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
	opts := []cio.Opt{cio.WithStreams(stdin, stdout, stderr), cio.WithFIFODir(filepath.Join(r.cfg.DataDir, "fifo"))}
	if sio.TTY {
		// One stream: the terminal's output, stdout and stderr merged.
		opts = append(opts, cio.WithTerminal)
	}
	// Creating, waiting on and starting the process ignore ctx: a call
	// cut short by ctx can leave a process behind in the shim that the
	// caller no longer knows of (a Start canceled after runc started it
	// runs on). Once started, ctx's end kills the process below; it is
	// deleted in every case, also when ctx ends (a probe's timeout). A
	// containerd that does not answer still fails the exec, in time.
	if err := ctx.Err(); err != nil {
		return -1, fmt.Errorf("exec in %s: %w", containerID, err)
	}
	cleanupCtx := context.WithoutCancel(ctx)
	setupCtx, cancelSetup := context.WithTimeout(cleanupCtx, execSetupTimeout)
	defer cancelSetup()
	proc, err := task.Exec(setupCtx, execID, &pspec, cio.NewCreator(opts...))
	if err != nil {
		return -1, fmt.Errorf("exec in %s: %w", containerID, err)
	}
	defer proc.Delete(cleanupCtx, containerd.WithProcessKill)
	exited, err := proc.Wait(cleanupCtx)
	if err != nil {
		return -1, fmt.Errorf("exec in %s: wait: %w", containerID, err)
	}
	if err := proc.Start(setupCtx); err != nil {
		return -1, fmt.Errorf("exec in %s: start: %w", containerID, err)
	}
	finished := make(chan struct{})
	defer close(finished)
	if sio.Resize != nil {
		go func() {
			for {
				select {
				case size, ok := <-sio.Resize:
					if !ok {
						return
					}
					// A resize racing the exit fails harmlessly.
					proc.Resize(cleanupCtx, uint32(size.Width), uint32(size.Height))
				case <-finished:
					return
				}
			}
		}()
	}
	if stdin != nil {
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
