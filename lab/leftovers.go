package lab

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
)

// Leftovers lists what of the lab is still on the machine: namespaces,
// links, cgroups, BPF pins, mounts, processes and its directory. After
// Down it should be empty. It reads the lab's state as this Lab holds it,
// so it works after Down has removed the state file.
func (l *Lab) Leftovers() []string {
	st := l.st
	if st == nil {
		return nil
	}
	var out []string
	members := append([]member{st.Client}, st.Nodes...)
	for _, m := range members {
		if _, err := os.Lstat(netnsPath(m.Netns)); err == nil {
			out = append(out, "netns "+m.Netns)
		}
		if _, err := netlink.LinkByName(m.HostVeth); err == nil {
			out = append(out, "link "+m.HostVeth)
		}
	}
	if _, err := netlink.LinkByName(st.Bridge); err == nil {
		out = append(out, "link "+st.Bridge)
	}
	if _, err := os.Stat(st.Cgroup); err == nil {
		out = append(out, "cgroup "+st.Cgroup)
	}
	for _, n := range st.Nodes {
		if _, err := os.Stat(filepath.Join(bpfRoot, n.Name)); err == nil {
			out = append(out, "pins "+filepath.Join(bpfRoot, n.Name))
		}
	}
	if f, err := os.Open("/proc/self/mountinfo"); err == nil {
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) < 5 {
				continue
			}
			p := unescapeMount(fields[4])
			if strings.HasPrefix(p, st.Dir+"/") || p == st.Dir || strings.HasPrefix(p, netnsPath("sklab-"+st.Name+"-")) {
				out = append(out, "mount "+p)
			}
		}
		f.Close()
	}
	for _, p := range l.started() {
		if p.exists() {
			out = append(out, fmt.Sprintf("process %d (recorded)", p.PID))
		}
	}
	// Processes the lab's binaries started: they name the lab's directory
	// on their command lines (--data-dir, --root, --state, ...).
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(string(cmdline), st.Dir+"/") {
			out = append(out, fmt.Sprintf("process %d: %s", pid, strings.ReplaceAll(strings.TrimRight(string(cmdline), "\x00"), "\x00", " ")))
		}
	}
	if _, err := os.Stat(st.Dir); err == nil {
		out = append(out, "dir "+st.Dir)
	}
	return out
}
