package lab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Down removes everything the lab made: agents and server (by PID), what
// each node's agent made (`skep agent --cleanup` in the node's namespace
// and cgroup: pods, containerd, mounts, BPF pins and links, iptables
// chains), any process still in the lab's cgroups, mounts under the lab's
// directory, namespaces, veths, bridge, cgroups and the directory itself.
// It works on a lab that Up left half-made or whose processes died, and
// doing it twice is harmless. It goes on past errors and returns them all.
func (l *Lab) Down(ctx context.Context) error {
	st := l.st
	if st == nil {
		return nil
	}
	var errs []error
	l.progress("stopping the agents")
	l.eachNode(func(n *member) { l.stopTracked(n.Agent, 10*time.Second) })

	l.progress("cleaning up the nodes")
	var mu sync.Mutex
	l.eachNode(func(n *member) {
		if err := l.cleanupNode(ctx, n); err != nil {
			mu.Lock()
			errs = append(errs, err)
			mu.Unlock()
		}
	})

	l.progress("stopping the server")
	l.stopTracked(st.Server, 10*time.Second)

	// Whatever still runs in the lab's cgroups goes now: a containerd the
	// cleanup missed, shims, a command started by Exec.
	procs := cgroupProcs(st.Cgroup)
	if len(procs) > 0 {
		l.progress("killing %d leftover processes", len(procs))
		if err := killCgroup(st.Cgroup); err != nil {
			errs = append(errs, err)
		}
	}
	// Also wait for what the agents started and left to PID 1 to reap.
	if waited := append(procs, l.started()...); !l.waitGone(waited, 20*time.Second) {
		errs = append(errs, fmt.Errorf("processes of lab %s still exist after 20 s: %s", st.Name, describeProcs(waited)))
	}

	if err := unmountUnder(st.Dir); err != nil {
		errs = append(errs, err)
	}
	l.progress("removing namespaces, links and cgroups")
	for _, m := range append([]member{st.Client}, st.Nodes...) {
		if err := deleteNetns(m.Netns); err != nil {
			errs = append(errs, err)
		}
		if err := deleteLink(m.HostVeth); err != nil {
			errs = append(errs, err)
		}
	}
	if err := deleteLink(st.Bridge); err != nil {
		errs = append(errs, err)
	}
	if err := removeCgroup(st.Cgroup); err != nil {
		errs = append(errs, err)
	}
	// The agents' cleanup removes their pins; this catches a node whose
	// cleanup could not run. The names are the lab's own.
	for _, n := range st.Nodes {
		if err := os.RemoveAll(filepath.Join(bpfRoot, n.Name)); err != nil {
			errs = append(errs, fmt.Errorf("remove BPF pins of %s: %w", n.Name, err))
		}
	}
	_ = os.Remove(bpfRoot) // shared by every node on the machine: only when empty
	if len(errs) == 0 {
		if err := os.RemoveAll(st.Dir); err != nil {
			errs = append(errs, fmt.Errorf("remove %s: %w", st.Dir, err))
		}
		l.progress("down")
	}
	return errors.Join(errs...)
}

// eachNode runs f for every node at once and waits for all.
func (l *Lab) eachNode(f func(n *member)) {
	var wg sync.WaitGroup
	for i := range l.st.Nodes {
		wg.Add(1)
		go func(n *member) { defer wg.Done(); f(n) }(&l.st.Nodes[i])
	}
	wg.Wait()
}

// started lists the server and agents as recorded.
func (l *Lab) started() []proc {
	var out []proc
	if l.st.Server != nil {
		out = append(out, *l.st.Server)
	}
	for _, n := range l.st.Nodes {
		if n.Agent != nil {
			out = append(out, *n.Agent)
		}
	}
	return out
}

// cleanupNode runs `skep agent --cleanup` for a node, in its namespace and
// cgroup, when both are still there: without its namespace there is no
// place where its iptables chains and tc filters could be, and running the
// cleanup in the host's namespace would remove the host's own.
func (l *Lab) cleanupNode(ctx context.Context, n *member) error {
	if _, err := os.Stat(netnsPath(n.Netns)); err != nil {
		return nil
	}
	if _, err := os.Stat(filepath.Join(n.Cgroup, "cgroup.procs")); err != nil {
		return nil
	}
	if _, err := os.Stat(l.st.Binary); err != nil {
		return fmt.Errorf("clean up %s: the skep binary %s is gone: %w", n.Name, l.st.Binary, err)
	}
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	argv := []string{l.st.Binary, "agent", "--cleanup", "--node-name", n.Name, "--node-ip", n.IP, "--interface", "eth0",
		"--data-dir", n.DataDir, "--dataplane", l.st.Dataplane, "--cgroup-root", n.Cgroup, "--cluster-cidr", ClusterCIDR}
	cmd, fd, err := command(ctx, n.Netns, n.Cgroup, argv)
	if err != nil {
		return fmt.Errorf("clean up %s: %w", n.Name, err)
	}
	if n.Log != "" {
		if logf, err := os.OpenFile(n.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err == nil {
			defer logf.Close()
			cmd.Stdout, cmd.Stderr = logf, logf
		}
	}
	err = cmd.Start()
	fd.Close()
	if err == nil {
		err = cmd.Wait()
	}
	if err != nil {
		return fmt.Errorf("clean up %s (skep agent --cleanup, log %s): %w\n%s", n.Name, n.Log, err, tail(n.Log, 10))
	}
	return nil
}

// unmountUnder detaches every mount at or below dir, deepest first: what a
// node's containerd left behind if its cleanup could not run.
func unmountUnder(dir string) error {
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		dir = real
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return fmt.Errorf("read mounts: %w", err)
	}
	defer f.Close()
	var points []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		p := unescapeMount(fields[4])
		if p == dir || strings.HasPrefix(p, dir+"/") {
			points = append(points, p)
		}
	}
	sort.Slice(points, func(i, j int) bool { return len(points[i]) > len(points[j]) })
	var errs []error
	for _, p := range points {
		if err := syscall.Unmount(p, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", p, err))
		}
	}
	return errors.Join(errs...)
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
