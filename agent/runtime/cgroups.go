package runtime

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// cgroupMounts are the mount points of the node's cgroup hierarchies: one
// per cgroup v1 controller (hybrid mode) plus the cgroup2 one, where runc
// also places containers.
type cgroupMounts struct {
	all    []string
	memory string // the hierarchy with the memory controller
	v2     bool   // memory is cgroup2
}

// findCgroupMounts reads the cgroup mounts of the current mount namespace.
func findCgroupMounts() (cgroupMounts, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return cgroupMounts{}, fmt.Errorf("read mountinfo: %w", err)
	}
	defer f.Close()
	var m cgroupMounts
	var unified string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent major:minor root mountpoint options optional... - fstype source superoptions
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, field := range fields {
			if field == "-" {
				sep = i
				break
			}
		}
		if sep < 5 || sep+3 >= len(fields) {
			continue
		}
		fstype, mountpoint := fields[sep+1], fields[4]
		switch fstype {
		case "cgroup":
			m.all = append(m.all, mountpoint)
			if hasOption(fields[sep+3], "memory") {
				m.memory = mountpoint
			}
		case "cgroup2":
			m.all = append(m.all, mountpoint)
			unified = mountpoint
		}
	}
	if err := sc.Err(); err != nil {
		return cgroupMounts{}, fmt.Errorf("read mountinfo: %w", err)
	}
	if m.memory == "" && unified != "" {
		m.memory, m.v2 = unified, true
	}
	if len(m.all) == 0 {
		return cgroupMounts{}, errors.New("no cgroup filesystem is mounted")
	}
	return m, nil
}

func hasOption(options, name string) bool {
	for _, o := range strings.Split(options, ",") {
		if o == name {
			return true
		}
	}
	return false
}

// oomKills is how many processes the kernel's OOM killer killed in the cgroup
// at path (as given to oci.WithCgroup). It must be read before the task is
// deleted, which removes the cgroup.
func (m cgroupMounts) oomKills(path string) int {
	file, key := "memory.oom_control", "oom_kill"
	if m.v2 {
		file = "memory.events"
	}
	data, err := os.ReadFile(filepath.Join(m.memory, path, file))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		k, v, ok := strings.Cut(line, " ")
		if ok && k == key {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	return 0
}

// remove deletes the cgroup at path, and every cgroup below it, from every
// hierarchy. runc removes a container's own cgroup when its task is
// deleted; the pod's cgroup above it is the runtime's to remove. A cgroup
// still holding a process cannot be removed: that is an error.
func (m cgroupMounts) remove(path string) error {
	var errs []error
	for _, mount := range m.all {
		root := filepath.Join(mount, path)
		var dirs []string
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("walk cgroup %s: %w", root, err))
			continue
		}
		// Deepest first: a cgroup with children cannot be removed.
		for i := len(dirs) - 1; i >= 0; i-- {
			if err := os.Remove(dirs[i]); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, fmt.Errorf("remove cgroup %s: %w", dirs[i], err))
			}
		}
	}
	return errors.Join(errs...)
}
