package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// dataplaneState, re-executed inside a node's network namespace, prints
// what any dataplane mode has installed there: programs attached to the
// node's cgroup and to its interface, kube-proxy-style iptables chains and
// the nftables table. It asks the kernel, iptables and nft directly, not
// skep, so a leftover that skep forgot to track is seen too.
func dataplaneState(cgroup, iface string) int {
	var fields []string
	count := func(name string, target int, attach ebpf.AttachType) {
		res, err := link.QueryPrograms(link.QueryOptions{Target: target, Attach: attach})
		n := 0
		if err == nil {
			n = len(res.Programs)
		} else if !errors.Is(err, unix.ENOENT) {
			fmt.Printf("query %s: %v\n", name, err)
			os.Exit(1)
		}
		fields = append(fields, fmt.Sprintf("%s=%d", name, n))
	}
	fd, err := unix.Open(cgroup, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		fmt.Printf("open cgroup %s: %v\n", cgroup, err)
		return 1
	}
	defer unix.Close(fd)
	count("connect4", fd, ebpf.AttachCGroupInet4Connect)
	count("sendmsg4", fd, ebpf.AttachCGroupUDP4Sendmsg)
	count("recvmsg4", fd, ebpf.AttachCGroupUDP4Recvmsg)
	count("getpeername4", fd, ebpf.AttachCgroupInet4GetPeername)
	ifi, err := netInterfaceIndex(iface)
	if err != nil {
		fmt.Println(err)
		return 1
	}
	count("tcx-ingress", ifi, ebpf.AttachTCXIngress)
	count("tcx-egress", ifi, ebpf.AttachTCXEgress)
	out, err := exec.Command("iptables-save").Output()
	if err != nil {
		fmt.Printf("iptables-save: %v\n", err)
		return 1
	}
	chains := 0
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, ":KUBE-") {
			chains++
		}
	}
	fields = append(fields, fmt.Sprintf("kube-chains=%d", chains))
	out, err = exec.Command("nft", "list", "tables", "ip").Output()
	if err != nil {
		fmt.Printf("nft list tables: %v\n", err)
		return 1
	}
	tables := 0
	for _, line := range strings.Split(string(out), "\n") {
		if strings.TrimSpace(line) == "table ip kube-proxy" {
			tables++
		}
	}
	fields = append(fields, fmt.Sprintf("kube-table=%d", tables))
	fmt.Println(strings.Join(fields, " "))
	return 0
}

func netInterfaceIndex(name string) (int, error) {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return 0, fmt.Errorf("interface %s in this network namespace: %w", name, err)
	}
	return ifi.Index, nil
}

// nodeDataplane is dataplaneState of a node, and whether its pin
// directory exists.
type nodeDataplane struct {
	state string
	pins  bool
}

func (cl *cluster) dataplaneOf(t *testing.T, node string) nodeDataplane {
	t.Helper()
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	code, err := cl.lab.Exec(ctx, node, []string{os.Args[0], "dataplane-state", cl.lab.Cgroup(node), "eth0"}, nil, &out, &out)
	if err != nil || code != 0 {
		t.Fatalf("dataplane state of %s: exit %d %v\n%s", node, code, err, out.String())
	}
	_, statErr := os.Stat(filepath.Join("/sys/fs/bpf/skep", node))
	return nodeDataplane{state: strings.TrimSpace(out.String()), pins: statErr == nil}
}

// What a node has in each mode: ebpfState; noPrograms and iptables chains
// (how many depends on the Services); noPrograms and nftablesTail.
const (
	ebpfState    = "connect4=1 sendmsg4=1 recvmsg4=1 getpeername4=1 tcx-ingress=1 tcx-egress=1 kube-chains=0 kube-table=0"
	noPrograms   = "connect4=0 sendmsg4=0 recvmsg4=0 getpeername4=0 tcx-ingress=0 tcx-egress=0"
	nftablesTail = " kube-chains=0 kube-table=1"
)

// testSwitchDataplane restarts every agent with another --dataplane and
// checks that each node then carries the new mode's state and nothing of
// the old one: no programs on its cgroup or interface, no pins, no chains,
// no table.
func testSwitchDataplane(t *testing.T, cl *cluster, to string) {
	from := cl.lab.Dataplane()
	for _, node := range cl.lab.Nodes() {
		t.Logf("%s before, in %s mode: %s (pins: %v)", node, from, cl.dataplaneOf(t, node).state, cl.dataplaneOf(t, node).pins)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := cl.lab.SwitchDataplane(ctx, to); err != nil {
		t.Fatal(err)
	}
	for _, node := range cl.lab.Nodes() {
		var got nodeDataplane
		deadline := time.Now().Add(30 * time.Second)
		for {
			got = cl.dataplaneOf(t, node)
			if switched(got, to) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s 30s after its agent restarted with --dataplane %s: %s (pins: %v)", node, to, got.state, got.pins)
			}
			time.Sleep(250 * time.Millisecond)
		}
		t.Logf("%s switched %s → %s: %s (pins: %v)", node, from, to, got.state, got.pins)
	}
}

func switched(got nodeDataplane, to string) bool {
	switch to {
	case "ebpf":
		return got.state == ebpfState && got.pins
	case "nftables":
		// The table exists once the first sync ran.
		return got.state == noPrograms+nftablesTail && !got.pins
	default:
		// Kube-proxy's chains exist once the first sync ran.
		return strings.HasPrefix(got.state, noPrograms+" kube-chains=") &&
			!strings.Contains(got.state, " kube-chains=0 ") && strings.HasSuffix(got.state, " kube-table=0") && !got.pins
	}
}
