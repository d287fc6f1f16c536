package runtime

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	containerd "github.com/containerd/containerd"
)

// Paths of the containerd the agent supervises, relative to <DataDir>/containerd.
const (
	containerdConfigFile = "config.toml"
	containerdSocketFile = "containerd.sock"
	containerdPIDFile    = "containerd.pid"
	containerdLogFile    = "containerd.log"
	runcRootDir          = "runc"
)

// How the supervisor waits and retries.
const (
	containerdStartTimeout = 30 * time.Second
	containerdStopTimeout  = 10 * time.Second
	containerdRestartDelay = time.Second
)

// Containerd is a containerd process started and watched by the agent, with
// its config, root, state, socket and runc root all under one directory, so
// that several agents on one machine never share containerd or runc state.
// It restarts containerd whenever it dies and stops it (SIGTERM, then SIGKILL
// after containerdStopTimeout) when the context given to StartContainerd
// ends. Containers survive a containerd restart: their shims keep running and
// containerd reconnects to them from its state directory.
type Containerd struct {
	dir       string
	log       *slog.Logger
	done      chan struct{}
	restarted chan struct{}
}

// StartContainerd writes a config under dir, starts `containerd --config`,
// waits until it answers on its socket and keeps it running until ctx ends.
// A containerd left running by an earlier agent on the same dir (its PID is in
// dir/containerd.pid) is stopped first: two daemons cannot share one root.
func StartContainerd(ctx context.Context, dir string, log *slog.Logger) (*Containerd, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Containerd{dir: dir, log: log.With("component", "containerd"), done: make(chan struct{}), restarted: make(chan struct{}, 1)}
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return nil, fmt.Errorf("create containerd dir: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, containerdConfigFile), []byte(c.config()), 0o600); err != nil {
		return nil, fmt.Errorf("write containerd config: %w", err)
	}
	if err := c.stopStale(); err != nil {
		return nil, err
	}
	cmd, exited, err := c.start(ctx)
	if err != nil {
		return nil, err
	}
	go c.supervise(ctx, cmd, exited)
	return c, nil
}

// Address is the containerd socket.
func (c *Containerd) Address() string { return filepath.Join(c.dir, containerdSocketFile) }

// RuncRoot is the runc state directory containers of this containerd use.
func (c *Containerd) RuncRoot() string { return filepath.Join(c.dir, runcRootDir) }

// Done is closed once containerd has been stopped after the context ended.
func (c *Containerd) Done() <-chan struct{} { return c.done }

// Restarted receives a value after containerd died and was started again:
// clients reconnect then (a gRPC connection backs off for seconds after its
// server went away) and look again at what they were waiting for.
func (c *Containerd) Restarted() <-chan struct{} { return c.restarted }

// config is containerd's configuration: everything under c.dir, no CRI (the
// agent is the kubelet), no debug or metrics listeners.
func (c *Containerd) config() string {
	q := strconv.Quote
	return strings.Join([]string{
		`version = 2`,
		`root = ` + q(filepath.Join(c.dir, "root")),
		`state = ` + q(filepath.Join(c.dir, "state")),
		`disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs", "io.containerd.internal.v1.tracing", "io.containerd.tracing.processor.v1.otlp"]`,
		``,
		`[grpc]`,
		`  address = ` + q(c.Address()),
		``,
		`[ttrpc]`,
		`  address = ` + q(c.Address()+".ttrpc"),
		``,
		`[cgroup]`,
		`  path = ""`,
		``,
		`[plugins."io.containerd.internal.v1.opt"]`,
		`  path = ` + q(filepath.Join(c.dir, "opt")),
		``,
		`[plugins."io.containerd.runtime.v2.task"]`,
		`  platforms = ["linux/amd64", "linux/arm64"]`,
		``,
	}, "\n")
}

// start runs containerd and waits for its socket to answer. exited receives
// the result of cmd.Wait.
func (c *Containerd) start(ctx context.Context) (*exec.Cmd, <-chan error, error) {
	logFile, err := os.OpenFile(filepath.Join(c.dir, containerdLogFile), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("open containerd log: %w", err)
	}
	defer logFile.Close()
	os.Remove(c.Address())

	cmd := exec.Command("containerd", "--config", filepath.Join(c.dir, containerdConfigFile))
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Its own process group: a ^C meant for the agent must not reach it;
	// the agent stops it in order, after its own work.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, nil, fmt.Errorf("start containerd: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	pidFile := filepath.Join(c.dir, containerdPIDFile)
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(cmd.Process.Pid)), 0o600); err != nil {
		c.kill(cmd, exited)
		return nil, nil, fmt.Errorf("write containerd pid file: %w", err)
	}

	if err := c.waitReady(ctx, exited); err != nil {
		c.kill(cmd, exited)
		return nil, nil, err
	}
	c.log.Info("containerd running", "pid", cmd.Process.Pid, "address", c.Address())
	return cmd, exited, nil
}

// waitReady polls containerd's Version call until it answers.
func (c *Containerd) waitReady(ctx context.Context, exited <-chan error) error {
	ctx, cancel := context.WithTimeout(ctx, containerdStartTimeout)
	defer cancel()
	for {
		if _, err := os.Stat(c.Address()); err == nil {
			if err := ping(ctx, c.Address()); err == nil {
				return nil
			}
		}
		select {
		case err := <-exited:
			return fmt.Errorf("containerd exited while starting (%v); see %s", err, filepath.Join(c.dir, containerdLogFile))
		case <-ctx.Done():
			return fmt.Errorf("wait for containerd socket %s: %w", c.Address(), ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// ping asks containerd at address for its version.
func ping(ctx context.Context, address string) error {
	client, err := containerd.New(address, containerd.WithTimeout(time.Second))
	if err != nil {
		return err
	}
	defer client.Close()
	_, err = client.Version(ctx)
	return err
}

// supervise restarts containerd when it dies and stops it when ctx ends.
func (c *Containerd) supervise(ctx context.Context, cmd *exec.Cmd, exited <-chan error) {
	defer close(c.done)
	for {
		select {
		case <-ctx.Done():
			c.stop(cmd, exited)
			return
		case err := <-exited:
			c.log.Warn("containerd exited; restarting it", "pid", cmd.Process.Pid, "err", err)
		}
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(containerdRestartDelay):
			}
			var err error
			cmd, exited, err = c.start(ctx)
			if err == nil {
				select {
				case c.restarted <- struct{}{}:
				default:
				}
				break
			}
			c.log.Error("restart containerd", "err", err)
		}
	}
}

// stop sends SIGTERM, waits, then SIGKILL.
func (c *Containerd) stop(cmd *exec.Cmd, exited <-chan error) {
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(containerdStopTimeout):
		c.log.Warn("containerd ignored SIGTERM; killing it", "pid", cmd.Process.Pid)
		c.kill(cmd, exited)
	}
	os.Remove(filepath.Join(c.dir, containerdPIDFile))
	c.log.Info("containerd stopped", "pid", cmd.Process.Pid)
}

func (c *Containerd) kill(cmd *exec.Cmd, exited <-chan error) {
	cmd.Process.Kill()
	<-exited
}

// stopStale stops a containerd an earlier agent started on the same dir and
// did not stop (it crashed or was killed). The PID counts only when the
// process is a containerd running this dir's config.
func (c *Containerd) stopStale() error {
	data, err := os.ReadFile(filepath.Join(c.dir, containerdPIDFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read containerd pid file: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 0 {
		return nil
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !strings.Contains(string(cmdline), filepath.Join(c.dir, containerdConfigFile)) {
		return nil
	}
	c.log.Warn("stopping containerd left by an earlier agent", "pid", pid)
	syscall.Kill(pid, syscall.SIGTERM)
	deadline := time.Now().Add(containerdStopTimeout)
	for time.Now().Before(deadline) {
		if syscall.Kill(pid, 0) != nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	syscall.Kill(pid, syscall.SIGKILL)
	for syscall.Kill(pid, 0) == nil {
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}
