package runtime

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"

	containerd "github.com/containerd/containerd"
	"k8s.io/apimachinery/pkg/types"
	crilogs "k8s.io/cri-client/pkg/logs"
)

// Attach connects a client to a running container's streams, as kubectl
// attach and kubectl run -it do: stdin (when not nil) goes to the
// container's stdin, which its spec must have asked for (stdin: true); the
// container's output from now on goes to stdout and stderr (with a
// terminal, all of it to stdout); resize events go to its terminal. It
// returns when the container exits or ctx ends, and closes stdout and
// stderr. With stdinOnce in the spec the container's stdin is closed when
// this client's stdin ends or the client goes away.
//
// The output is read from the container's log, which the log driver
// writes as the output arrives (containerio.go).
func (r *Runtime) Attach(ctx context.Context, uid types.UID, container string, stdin io.Reader, stdout, stderr io.WriteCloser, tty bool, resize <-chan TerminalSize) error {
	defer func() {
		if stdout != nil {
			stdout.Close()
		}
		if stderr != nil {
			stderr.Close()
		}
	}()
	v, err := r.snapshot(uid, container)
	if err != nil {
		return err
	}
	if !v.running || v.task == nil || v.spec == nil {
		return fmt.Errorf("attach to container %s of pod %s: container is not running", container, v.podName)
	}
	if stdin != nil && !v.spec.Stdin {
		//lint:ignore ST1005 kubelet's wording, which users search for
		return fmt.Errorf("Unable to use stdin: container %q in pod %q does not have stdin (stdin: true in its spec)", container, v.podName)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	p := r.ioPaths(uid, container, v.attempt)

	if stdin != nil {
		// Non-blocking: no reader (the shim) means the stdin is gone.
		f, err := os.OpenFile(p.stdin, os.O_WRONLY|syscall.O_NONBLOCK, 0)
		if err != nil {
			return fmt.Errorf("attach to the stdin of container %s: %w", container, err)
		}
		closeStdin := sync.OnceFunc(func() {
			if v.spec.StdinOnce {
				v.task.CloseIO(context.WithoutCancel(ctx), containerd.WithStdinCloser)
			}
		})
		go func() {
			io.Copy(f, stdin)
			// Ours must be closed too for the container to see the end.
			f.Close()
			closeStdin()
		}()
		defer func() {
			// Ends a copy blocked on a full pipe; one blocked reading the
			// client ends when the caller closes its stream.
			f.Close()
			closeStdin()
		}()
	}
	if resize != nil {
		go func() {
			for {
				select {
				case sz, ok := <-resize:
					if !ok {
						return
					}
					if v.spec.TTY {
						v.task.Resize(ctx, uint32(sz.Width), uint32(sz.Height))
					}
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	var out, errOut io.Writer
	if stdout != nil {
		out = stdout
	}
	if stderr != nil {
		errOut = stderr
	}
	if v.spec.TTY {
		// A terminal has one output stream.
		errOut = out
	}
	fromNow := int64(0)
	return r.readLog(ctx, uid, container, v.attempt, p.log, &crilogs.LogOptions{TailLines: &fromNow, Follow: true}, out, errOut)
}
