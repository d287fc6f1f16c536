package lab

import (
	"fmt"
	"hash/fnv"
	"net/netip"
	"path/filepath"
	"regexp"
	"strconv"
)

const (
	// DefaultName is the lab's name when none is given.
	DefaultName = "skep"
	// DefaultRoot holds the state and data of every lab, one directory each.
	DefaultRoot = "/var/lib/skep/lab"
	// cgroup2Root is where the machine mounts the cgroup2 hierarchy (hybrid
	// mode: /sys/fs/cgroup itself holds the v1 controllers).
	cgroup2Root = "/sys/fs/cgroup/unified"
	// bpfRoot is where the agent pins its maps and links, per node name.
	bpfRoot = "/sys/fs/bpf/skep"
	// netnsRoot is where `ip netns` keeps its named namespaces.
	netnsRoot = "/run/netns"
	// ClusterCIDR is the pod range of every lab: each lab's nodes have their
	// own network namespaces, so two labs may use the same range.
	ClusterCIDR = "10.244.0.0/16"
	// ClientName names the client namespace in Exec.
	ClientName = "client"
	maxNameLen = 30
	// bpfFSMagic is BPF_FS_MAGIC from linux/magic.h.
	bpfFSMagic = 0xcafe4a11
)

var validName = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`)

// checkName accepts what may become part of node names (DNS-1123 labels)
// and file names.
func checkName(name string) error {
	if len(name) > maxNameLen || !validName.MatchString(name) {
		return fmt.Errorf("lab name %q: use at most %d lowercase letters, digits and '-', starting and ending with a letter or digit", name, maxNameLen)
	}
	return nil
}

// DirFor is the default directory of a lab.
func DirFor(name string) string { return filepath.Join(DefaultRoot, name) }

// bridgeName is sklab-<name> when that fits the kernel's 15 characters,
// else sklab-<hash of the name>, so that it stays unique per lab.
func bridgeName(name string) string {
	if n := "sklab-" + name; len(n) <= 15 {
		return n
	}
	return fmt.Sprintf("sklab-%08x", hash32(name))
}

// firstSubnet is where the search for a free 198.18.<k>.0/24 starts: a hash
// of the name, so that a lab usually keeps its addresses between runs.
func firstSubnet(name string) int { return 20 + int(hash32(name)%200) }

func hash32(s string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(s))
	return h.Sum32()
}

// nodeName is unique across labs, since the agent's BPF pins live under
// /sys/fs/bpf/skep/<node name>.
func nodeName(lab string, i int) string { return lab + "-node" + strconv.Itoa(i) }

func nodeNetns(lab string, i int) string { return "sklab-" + lab + "-node" + strconv.Itoa(i) }
func clientNetns(lab string) string      { return "sklab-" + lab + "-client" }

// Host ends of the veths are named by subnet number, which is unique among
// the labs on the machine; the names stay within 15 characters.
func nodeVeth(k, i int) string { return fmt.Sprintf("sklab%dn%d", k, i) }
func clientVeth(k int) string  { return fmt.Sprintf("sklab%dc", k) }

func subnet(k int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, byte(k), 0}), 24)
}
func bridgeIP(k int) netip.Addr  { return netip.AddrFrom4([4]byte{198, 18, byte(k), 1}) }
func nodeIP(k, i int) netip.Addr { return netip.AddrFrom4([4]byte{198, 18, byte(k), byte(10 + i)}) }
func clientIP(k int) netip.Addr  { return netip.AddrFrom4([4]byte{198, 18, byte(k), 254}) }
func lbPool(k int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, byte(k), 200}), 29)
}
func netnsPath(ns string) string { return filepath.Join(netnsRoot, ns) }
