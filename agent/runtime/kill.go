package runtime

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"

	containerd "github.com/containerd/containerd"
	"github.com/containerd/containerd/errdefs"
	"k8s.io/apimachinery/pkg/types"
)

// killWait bounds the wait for a task to exit after SIGKILL.
const killWait = 10 * time.Second

// stopTask sends SIGTERM, waits up to grace for the task to exit, then
// sends SIGKILL and waits for the exit.
func stopTask(ctx context.Context, task containerd.Task, grace time.Duration) error {
	ctx = context.WithoutCancel(ctx) // a stop that began is finished
	exited, err := task.Wait(ctx)
	if errdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("wait for task %s: %w", task.ID(), err)
	}
	if st, err := task.Status(ctx); err == nil && st.Status == containerd.Stopped {
		return nil
	}
	if grace > 0 {
		if err := task.Kill(ctx, syscall.SIGTERM); err != nil && !errdefs.IsNotFound(err) {
			return fmt.Errorf("signal task %s: %w", task.ID(), err)
		}
		select {
		case <-exited:
			return nil
		case <-time.After(grace):
		}
	}
	if err := task.Kill(ctx, syscall.SIGKILL); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("kill task %s: %w", task.ID(), err)
	}
	select {
	case <-exited:
		return nil
	case <-time.After(killWait):
		return fmt.Errorf("task %s did not exit after SIGKILL", task.ID())
	}
}

// KillPod stops the pod — SIGTERM to its containers, grace, SIGKILL — and
// removes everything it had on the node: tasks, containers, snapshots, the
// pod network (Network.Teardown), its directory (emptyDir volumes, logs) and
// its cgroups. It works from what containerd holds, so it also removes a pod
// this Runtime never synced (left by an earlier agent), and it succeeds when
// there is nothing left to remove.
func (r *Runtime) KillPod(ctx context.Context, uid types.UID, grace time.Duration) error {
	ctx = r.nsCtx(ctx)
	r.mu.Lock()
	pw := r.pods[uid]
	r.mu.Unlock()
	if pw != nil {
		// The worker and its probes stop first, so that nothing restarts
		// what is being stopped.
		pw.cancel()
		<-pw.done
	}

	found, err := r.podContainers(ctx, uid)
	if err != nil {
		return fmt.Errorf("kill pod %s: %w", uid, err)
	}
	var (
		errs     []error
		errMu    sync.Mutex
		wg       sync.WaitGroup
		sandbox  []foundContainer
		addError = func(err error) {
			errMu.Lock()
			errs = append(errs, err)
			errMu.Unlock()
		}
	)
	for _, fc := range found {
		if fc.kind == kindSandbox {
			sandbox = append(sandbox, fc)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if task, status := r.loadTask(ctx, fc.container); task != nil && status != containerd.Stopped {
				if err := stopTask(ctx, task, grace); err != nil {
					addError(err)
				}
			}
			if err := r.removeContainer(ctx, fc.container); err != nil {
				addError(err)
			}
			r.untrackContainer(fc.container.ID())
		}()
	}
	wg.Wait()

	// The network goes while the pause process still holds the namespace.
	if err := r.cfg.Network.Teardown(ctx, string(uid)); err != nil {
		errs = append(errs, fmt.Errorf("tear down pod network: %w", err))
	}
	for _, fc := range sandbox {
		if task, status := r.loadTask(ctx, fc.container); task != nil && status != containerd.Stopped {
			if err := stopTask(ctx, task, 0); err != nil {
				errs = append(errs, err)
			}
		}
		if err := r.removeContainer(ctx, fc.container); err != nil {
			errs = append(errs, err)
		}
		r.untrackContainer(fc.container.ID())
	}
	if err := os.RemoveAll(r.podDir(uid)); err != nil {
		errs = append(errs, fmt.Errorf("remove pod dir: %w", err))
	}
	if err := r.cgroups.remove(r.podCgroup(uid)); err != nil {
		errs = append(errs, err)
	}

	r.mu.Lock()
	if r.pods[uid] == pw {
		delete(r.pods, uid)
	}
	r.mu.Unlock()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("kill pod %s: %w", uid, err)
	}
	r.log.Info("pod removed", "uid", uid, "containers", len(found))
	return nil
}
