package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// command makes a command that runs argv in the network namespace netns
// (the host's when empty) and in the cgroup2 directory cgroup. Only the
// network namespace is entered: `ip netns exec` would also remount /sys,
// hiding bpffs and the cgroup2 hierarchy from the agent. The cgroup is
// joined at clone (CLONE_INTO_CGROUP), so that not even the first
// instruction of the child runs outside it. The caller closes the returned
// file after Start.
func command(ctx context.Context, netns, cgroup string, argv []string) (*exec.Cmd, *os.File, error) {
	if len(argv) == 0 {
		return nil, nil, errors.New("no command given")
	}
	if netns != "" {
		argv = append([]string{"nsenter", "--net=" + netnsPath(netns), "--"}, argv...)
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	fd, err := os.Open(cgroup)
	if err != nil {
		return nil, nil, fmt.Errorf("open cgroup %s: %w", cgroup, err)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(fd.Fd())}
	return cmd, fd, nil
}

// daemon starts a long-running process of the lab: in its own session, so
// that a Ctrl-C in the terminal of `skep lab up` does not reach it, with
// its output appended to logPath. It lives on after this process exits;
// done is closed once it has exited and been reaped, as long as this
// process is its parent.
func daemon(netns, cgroup string, argv, env []string, logPath string) (p *proc, done <-chan struct{}, err error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, nil, fmt.Errorf("open log: %w", err)
	}
	// A daemon outlives every context of this process.
	cmd, fd, err := command(context.Background(), netns, cgroup, argv)
	if err != nil {
		logf.Close()
		return nil, nil, err
	}
	defer fd.Close()
	cmd.SysProcAttr.Setsid = true
	cmd.Stdout, cmd.Stderr, cmd.Env = logf, logf, env
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, nil, fmt.Errorf("start %s: %w", argv[0], err)
	}
	start, _, _ := procStat(cmd.Process.Pid)
	ch := make(chan struct{})
	go func() {
		// The log says how the process ended, when this process sees it.
		err := cmd.Wait()
		fmt.Fprintf(logf, "lab: pid %d ended: %v\n", cmd.Process.Pid, cmd.ProcessState)
		_ = err
		logf.Close()
		close(ch)
	}()
	return &proc{PID: cmd.Process.Pid, Start: start}, ch, nil
}

// procStat reads a process's start time and state letter from
// /proc/PID/stat.
func procStat(pid int) (start uint64, stateLetter string, err error) {
	data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, "", err
	}
	// The command name is in parentheses and may hold anything; the fields
	// after its last ')' start with field 3, the state.
	i := strings.LastIndexByte(string(data), ')')
	if i < 0 {
		return 0, "", fmt.Errorf("parse /proc/%d/stat", pid)
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 20 {
		return 0, "", fmt.Errorf("parse /proc/%d/stat", pid)
	}
	start, err = strconv.ParseUint(f[19], 10, 64)
	return start, f[0], err
}

// exists says whether p still has an entry in /proc, zombies included.
func (p *proc) exists() bool {
	if p == nil || p.PID <= 0 {
		return false
	}
	start, _, err := procStat(p.PID)
	return err == nil && (p.Start == 0 || start == p.Start)
}

// running says whether p is still running (not a zombie).
func (p *proc) running() bool {
	if !p.exists() {
		return false
	}
	_, st, _ := procStat(p.PID)
	return st != "Z" && st != "X"
}

func (p *proc) signal(sig syscall.Signal) {
	if p.running() {
		_ = syscall.Kill(p.PID, sig)
	}
}

// stop ends p: SIGTERM, up to grace for it to exit, then SIGKILL.
func (p *proc) stop(grace time.Duration) {
	if !p.running() {
		return
	}
	p.signal(syscall.SIGTERM)
	if waitFor(grace, func() bool { return !p.running() }) {
		return
	}
	p.signal(syscall.SIGKILL)
	waitFor(5*time.Second, func() bool { return !p.running() })
}

// waitFor polls cond until it holds or d has passed, and says which.
func waitFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// cgroupProcs lists the processes in a cgroup2 directory and below it.
func cgroupProcs(dir string) []proc {
	var out []proc
	_ = filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		data, err := os.ReadFile(filepath.Join(path, "cgroup.procs"))
		if err != nil {
			return nil
		}
		for _, s := range strings.Fields(string(data)) {
			pid, _ := strconv.Atoi(s)
			start, _, err := procStat(pid)
			if err == nil {
				out = append(out, proc{PID: pid, Start: start})
			}
		}
		return nil
	})
	return out
}

// killCgroup kills every process in a cgroup2 directory and below it
// (cgroup.kill, Linux 5.14), so that nothing a node started escapes.
func killCgroup(dir string) error {
	err := os.WriteFile(filepath.Join(dir, "cgroup.kill"), []byte("1"), 0)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("kill cgroup %s: %w", dir, err)
	}
	return nil
}

// killProcs kills every process in a cgroup2 directory and below it one by
// one, until none is left (or 5 s have passed). Unlike cgroup.kill, it
// leaves the cgroup usable: on this kernel a process cloned into a cgroup
// (CLONE_INTO_CGROUP) after a cgroup.kill there is killed at birth.
func killProcs(dir string) bool {
	return waitFor(5*time.Second, func() bool {
		procs := cgroupProcs(dir)
		for _, p := range procs {
			_ = syscall.Kill(p.PID, syscall.SIGKILL)
		}
		return len(procs) == 0
	})
}

// removeCgroup removes a cgroup2 directory and those below it, deepest
// first, retrying while exiting processes keep it busy.
func removeCgroup(dir string) error {
	var dirs []string
	_ = filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, path)
		}
		return nil
	})
	for i := len(dirs) - 1; i >= 0; i-- {
		var err error
		waitFor(5*time.Second, func() bool {
			err = syscall.Rmdir(dirs[i])
			return err == nil || errors.Is(err, syscall.ENOENT)
		})
		if err != nil && !errors.Is(err, syscall.ENOENT) {
			return fmt.Errorf("remove cgroup %s: %w", dirs[i], err)
		}
	}
	return nil
}

// tail is the end of a log file, for error messages.
func tail(path string, lines int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	all := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

// describeProcs names the processes of procs that still exist, with
// their command and state (Z: a zombie its parent has not reaped; D: in
// the kernel, unkillable until it returns), for an error that says what
// was left.
func describeProcs(procs []proc) string {
	var out []string
	for i := range procs {
		p := &procs[i]
		if !p.exists() {
			continue
		}
		comm, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(p.PID), "comm"))
		_, state, _ := procStat(p.PID)
		out = append(out, fmt.Sprintf("%d (%s, state %s)", p.PID, strings.TrimSpace(string(comm)), state))
	}
	return strings.Join(out, ", ")
}
