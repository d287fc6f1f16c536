package runtime

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/containerd/containerd/cio"
	"github.com/skep-io/skep/agent/containerlog"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
)

// A container attempt's output goes to its log through agent/containerlog's
// driver, run from this binary, never through the agent: the output keeps
// reaching the log while the agent is down or restarting.
//
//   - Without a stdin (with or without a terminal), containerd's shim runs
//     the driver as the task's logging binary (a binary:// URI) and hands it
//     the output pipes, or the terminal's output.
//   - With a stdin and a terminal, the same, and the shim copies the stdin
//     FIFO to the terminal.
//   - With a stdin and no terminal, the shim gives a binary:// logged
//     process no stdin (it handles stdin only for FIFO IO), so all three
//     streams are FIFOs and the agent starts the driver on the output ones,
//     in a session of its own so that it outlives the agent.
//
// The shim holds a stdin FIFO open for writing until the task's stdin is
// closed (CloseIO), so the container sees the end of its input only then,
// not each time an attached client, or the agent, goes away.

// ioPaths are the files of a container attempt's streams, beside its log.
type ioPaths struct {
	log, stdin, stdout, stderr string
}

func (r *Runtime) ioPaths(uid types.UID, container string, attempt int) ioPaths {
	log := r.logPath(uid, container, attempt)
	base := strings.TrimSuffix(log, ".log")
	return ioPaths{log: log, stdin: base + ".stdin", stdout: base + ".stdout", stderr: base + ".stderr"}
}

// logDriver is the path containerd runs the log driver from: a link named
// containerlog.DriverName to this executable (or to Config.LogDriver).
func (r *Runtime) logDriver() (string, error) {
	target := r.cfg.LogDriver
	if target == "" {
		exe, err := os.Executable()
		if err != nil {
			return "", fmt.Errorf("log driver: %w", err)
		}
		target = exe
	}
	link := filepath.Join(r.cfg.DataDir, "bin", containerlog.DriverName)
	if cur, err := os.Readlink(link); err == nil && cur == target {
		return link, nil
	}
	if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
		return "", fmt.Errorf("log driver: %w", err)
	}
	// Replaced atomically: a shim may be starting the driver right now.
	tmp := link + ".new"
	os.Remove(tmp)
	if err := os.Symlink(target, tmp); err != nil {
		return "", fmt.Errorf("log driver: %w", err)
	}
	if err := os.Rename(tmp, link); err != nil {
		return "", fmt.Errorf("log driver: %w", err)
	}
	return link, nil
}

// taskIO returns the IO of a container attempt's task, and a function to
// call when the task could not be created or started.
func (r *Runtime) taskIO(uid types.UID, spec *corev1.Container, attempt int) (cio.Creator, func(), error) {
	driver, err := r.logDriver()
	if err != nil {
		return nil, nil, err
	}
	p := r.ioPaths(uid, spec.Name, attempt)
	// Made here, so that a reader finds it before the driver opened it.
	if f, err := os.OpenFile(p.log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640); err != nil {
		return nil, nil, fmt.Errorf("create log: %w", err)
	} else {
		f.Close()
	}
	cfg := cio.Config{Terminal: spec.TTY}
	undo := func() {}
	if spec.Stdin {
		if err := makeFIFO(p.stdin); err != nil {
			return nil, nil, err
		}
		cfg.Stdin = p.stdin
	}
	if spec.Stdin && !spec.TTY {
		for _, f := range []string{p.stdout, p.stderr} {
			if err := makeFIFO(f); err != nil {
				return nil, nil, err
			}
		}
		cmd := exec.Command(driver,
			containerlog.ArgLog, p.log, containerlog.ArgStdout, p.stdout, containerlog.ArgStderr, p.stderr)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := cmd.Start(); err != nil {
			return nil, nil, fmt.Errorf("start log driver: %w", err)
		}
		go cmd.Wait()
		// Until the shim opened the FIFOs the driver waits for them.
		undo = func() { cmd.Process.Kill() }
		cfg.Stdout, cfg.Stderr = p.stdout, p.stderr
	} else {
		uri, err := cio.LogURIGenerator("binary", driver, map[string]string{containerlog.ArgLog: p.log})
		if err != nil {
			return nil, nil, fmt.Errorf("log driver: %w", err)
		}
		cfg.Stdout, cfg.Stderr = uri.String(), uri.String()
	}
	return func(string) (cio.IO, error) { return shimIO{cfg}, nil }, undo, nil
}

// makeFIFO makes a new FIFO at path, replacing what was there.
func makeFIFO(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove old fifo: %w", err)
	}
	if err := unix.Mkfifo(path, 0o600); err != nil {
		return fmt.Errorf("make fifo %s: %w", path, err)
	}
	return nil
}

// shimIO is a task IO the shim and the log driver serve entirely: the agent
// copies nothing, so there is nothing to wait for or close.
type shimIO struct{ cfg cio.Config }

func (s shimIO) Config() cio.Config { return s.cfg }
func (shimIO) Cancel()              {}
func (shimIO) Wait()                {}
func (shimIO) Close() error         { return nil }
