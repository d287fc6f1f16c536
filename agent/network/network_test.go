package network

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Network provides what the runtime package needs from the pod network.
var _ interface {
	Setup(ctx context.Context, podID string, netnsPath string) (netip.Addr, error)
	Teardown(ctx context.Context, podID string) error
} = (*Network)(nil)

// These tests need root: they make network namespaces standing in for nodes
// and pods, and run the real Network in them.

// testNS is a network namespace made for one test. It has no name in
// /run/netns: it lives as long as its handle (and any socket in it), so even
// a test binary that crashes leaves nothing behind.
type testNS struct {
	h    netns.NsHandle
	path string // what a container runtime would pass to Setup
}

func newNS(t *testing.T) testNS {
	t.Helper()
	var h netns.NsHandle
	errc := make(chan error, 1)
	go func() {
		// The thread that made the namespace is in it; it ends with this
		// goroutine because it is never unlocked.
		runtime.LockOSThread()
		var err error
		h, err = netns.New()
		errc <- err
	}()
	if err := <-errc; err != nil {
		t.Fatalf("create network namespace: %v", err)
	}
	t.Cleanup(func() { h.Close() })
	ns := testNS{h: h, path: fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), int(h))}
	ns.linkUp(t, "lo")
	return ns
}

// do runs f in the namespace.
func (ns testNS) do(t *testing.T, f func() error) {
	t.Helper()
	if err := inNetNS(ns.h, f); err != nil {
		t.Fatal(err)
	}
}

func (ns testNS) handle(t *testing.T) *netlink.Handle {
	t.Helper()
	h, err := netlink.NewHandleAt(ns.h)
	if err != nil {
		t.Fatalf("netlink handle: %v", err)
	}
	t.Cleanup(h.Close)
	return h
}

func (ns testNS) linkUp(t *testing.T, name string) {
	t.Helper()
	h := ns.handle(t)
	link, err := h.LinkByName(name)
	if err != nil {
		t.Fatalf("find %s: %v", name, err)
	}
	if err := h.LinkSetUp(link); err != nil {
		t.Fatalf("bring up %s: %v", name, err)
	}
}

func (ns testNS) hasLink(t *testing.T, name string) bool {
	t.Helper()
	_, err := ns.handle(t).LinkByName(name)
	if err != nil && !isNotFound(err) {
		t.Fatalf("find %s: %v", name, err)
	}
	return err == nil
}

// iptables runs iptables in the namespace and returns its output.
func (ns testNS) iptables(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out []byte
	err := inNetNS(ns.h, func() error {
		var err error
		out, err = exec.Command("iptables", append([]string{"-w", "5"}, args...)...).CombinedOutput()
		return err
	})
	return string(out), err
}

// serve listens on addr in the namespace and answers each connection with
// the client address it saw, then closes it.
func (ns testNS) serve(t *testing.T, addr string) {
	t.Helper()
	var ln net.Listener
	ns.do(t, func() error {
		var err error
		// The socket belongs to the namespace it was made in, whatever
		// thread accepts on it later.
		ln, err = net.Listen("tcp4", addr)
		return err
	})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
			io.WriteString(c, host)
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close(); wg.Wait() })
}

// dial connects from the namespace to addr and returns what the server said:
// the client address it saw.
func (ns testNS) dial(addr string) (string, error) {
	var reply []byte
	err := inNetNS(ns.h, func() error {
		c, err := net.DialTimeout("tcp4", addr, 3*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(3 * time.Second))
		reply, err = io.ReadAll(c)
		return err
	})
	return string(reply), err
}

// mustReach dials addr from ns and checks the server saw the client as from.
func mustReach(t *testing.T, ns testNS, addr string, from netip.Addr) {
	t.Helper()
	got, err := ns.dial(addr)
	if err != nil {
		t.Fatalf("connect to %s: %v", addr, err)
	}
	if got != from.String() {
		t.Errorf("connect to %s: server saw client %s, want %s", addr, got, from)
	}
}

// testNode is a node: a namespace and the Network running in it.
type testNode struct {
	ns      testNS
	net     *Network
	cfg     Config
	dataDir string
}

func newNode(t *testing.T, name, podCIDR string) *testNode {
	t.Helper()
	node := &testNode{ns: newNS(t), dataDir: t.TempDir()}
	node.cfg = Config{
		NodeName:    name,
		PodCIDR:     netip.MustParsePrefix(podCIDR),
		ClusterCIDR: netip.MustParsePrefix("10.244.0.0/16"),
		DataDir:     node.dataDir,
		Logger:      slog.New(slog.NewTextHandler(t.Output(), nil)),
	}
	// A fresh namespace has ip_forward 0 already; turn bridged traffic
	// through iptables off as well so the test sees New turn both on.
	node.ns.do(t, func() error { return writeSysctl("net/bridge/bridge-nf-call-iptables", "0") })
	node.net = node.start(t)
	return node
}

// start runs New in the node's namespace (what an agent start does) and
// registers Cleanup and Close.
func (node *testNode) start(t *testing.T) *Network {
	t.Helper()
	var n *Network
	node.ns.do(t, func() error {
		var err error
		n, err = New(t.Context(), node.cfg)
		return err
	})
	t.Cleanup(func() {
		if n.nl == nil {
			return // closed by the test: an agent restart
		}
		if err := n.Cleanup(context.Background()); err != nil {
			t.Errorf("Cleanup: %v", err)
		}
		n.Close()
	})
	return n
}

// setup makes a pod namespace and sets up its network on the node.
func (node *testNode) setup(t *testing.T, podID string) (testNS, netip.Addr) {
	t.Helper()
	pod := newNS(t)
	addr, err := node.net.Setup(t.Context(), podID, pod.path)
	if err != nil {
		t.Fatalf("Setup(%s): %v", podID, err)
	}
	if !node.cfg.PodCIDR.Contains(addr) {
		t.Fatalf("Setup(%s) = %s, outside pod CIDR %s", podID, addr, node.cfg.PodCIDR)
	}
	return pod, addr
}

func TestPodsOnOneNode(t *testing.T) {
	node := newNode(t, "node-a", "10.244.1.0/24")
	gateway := netip.MustParseAddr("10.244.1.1")
	podA, addrA := node.setup(t, "default/a")
	podB, addrB := node.setup(t, "default/b")
	if addrA == addrB {
		t.Fatalf("two pods got one address %s", addrA)
	}

	podB.serve(t, addrB.String()+":8080")
	node.ns.serve(t, gateway.String()+":8081")
	podA.serve(t, addrA.String()+":8082")

	t.Run("pod to pod", func(t *testing.T) { mustReach(t, podA, addrB.String()+":8080", addrA) })
	t.Run("pod to bridge", func(t *testing.T) { mustReach(t, podA, gateway.String()+":8081", addrA) })
	t.Run("node to pod", func(t *testing.T) { mustReach(t, node.ns, addrA.String()+":8082", gateway) })

	t.Run("bridge port", func(t *testing.T) {
		h := node.ns.handle(t)
		veth, err := h.LinkByName(HostVethName("default/a"))
		if err != nil {
			t.Fatal(err)
		}
		bridge, err := h.LinkByName(DefaultBridgeName)
		if err != nil {
			t.Fatal(err)
		}
		if veth.Attrs().MasterIndex != bridge.Attrs().Index {
			t.Errorf("%s master index = %d, want the bridge's %d", veth.Attrs().Name, veth.Attrs().MasterIndex, bridge.Attrs().Index)
		}
		info, err := h.LinkGetProtinfo(veth)
		if err != nil {
			t.Fatal(err)
		}
		if !info.Hairpin {
			t.Errorf("%s: hairpin mode off, want on", veth.Attrs().Name)
		}
	})

	t.Run("sysctls", func(t *testing.T) {
		node.ns.do(t, func() error {
			for _, name := range []string{"net/ipv4/ip_forward", "net/bridge/bridge-nf-call-iptables"} {
				b, err := os.ReadFile("/proc/sys/" + name)
				if err != nil {
					return err
				}
				if got := strings.TrimSpace(string(b)); got != "1" {
					t.Errorf("%s = %s in the node namespace, want 1", name, got)
				}
			}
			return nil
		})
	})

	t.Run("setup again is a no-op", func(t *testing.T) {
		h := node.ns.handle(t)
		before, err := h.LinkByName(HostVethName("default/a"))
		if err != nil {
			t.Fatal(err)
		}
		again, err := node.net.Setup(t.Context(), "default/a", podA.path)
		if err != nil || again != addrA {
			t.Fatalf("Setup(default/a) again = %s, %v; want %s", again, err, addrA)
		}
		after, err := h.LinkByName(HostVethName("default/a"))
		if err != nil {
			t.Fatal(err)
		}
		if after.Attrs().Index != before.Attrs().Index {
			t.Errorf("second Setup replaced the veth (index %d → %d)", before.Attrs().Index, after.Attrs().Index)
		}
		mustReach(t, podA, addrB.String()+":8080", addrA)
	})

	t.Run("masquerade rule", func(t *testing.T) {
		out, err := node.ns.iptables(t, "-t", "nat", "-S", masqueradeChain)
		if err != nil {
			t.Fatalf("list %s: %v: %s", masqueradeChain, err, out)
		}
		if want := "-A SKEP-POD-MASQ -s 10.244.1.0/24 ! -d 10.244.0.0/16"; !strings.Contains(out, want) {
			t.Errorf("chain %s:\n%s\nwant a rule starting %q", masqueradeChain, out, want)
		}
	})

	t.Run("teardown", func(t *testing.T) {
		vethB := HostVethName("default/b")
		if err := node.net.Teardown(t.Context(), "default/b"); err != nil {
			t.Fatalf("Teardown(default/b): %v", err)
		}
		if node.ns.hasLink(t, vethB) {
			t.Errorf("%s still exists after Teardown", vethB)
		}
		if podB.hasLink(t, podInterface) {
			t.Errorf("pod b still has %s after Teardown", podInterface)
		}
		if _, ok, _ := node.net.ipam.lookup("default/b"); ok {
			t.Errorf("address of default/b still recorded after Teardown")
		}
		if err := node.net.Teardown(t.Context(), "default/b"); err != nil {
			t.Errorf("Teardown(default/b) twice: %v", err)
		}
		if err := node.net.Teardown(t.Context(), "never/was"); err != nil {
			t.Errorf("Teardown of an unknown pod: %v", err)
		}
	})
}

func TestSetupReplacesPairOfOldNetns(t *testing.T) {
	node := newNode(t, "node-a", "10.244.1.0/24")
	_, addr := node.setup(t, "default/restarted")
	// The runtime recreated the pod's sandbox: same pod ID, new namespace.
	second := newNS(t)
	again, err := node.net.Setup(t.Context(), "default/restarted", second.path)
	if err != nil || again != addr {
		t.Fatalf("Setup in a new namespace = %s, %v; want %s", again, err, addr)
	}
	if !second.hasLink(t, podInterface) {
		t.Fatalf("new namespace has no %s", podInterface)
	}
	node.ns.serve(t, "10.244.1.1:8080")
	mustReach(t, second, "10.244.1.1:8080", addr)
}

func TestTeardownAfterNetnsIsGone(t *testing.T) {
	node := newNode(t, "node-a", "10.244.1.0/24")
	pod, _ := node.setup(t, "default/gone")
	pod.h.Close() // the last reference: the kernel destroys the namespace and the pair with it
	if err := node.net.Teardown(t.Context(), "default/gone"); err != nil {
		t.Fatalf("Teardown after the pod namespace went: %v", err)
	}
	if node.ns.hasLink(t, HostVethName("default/gone")) {
		t.Errorf("veth still exists")
	}
}

func TestAddressSurvivesRestart(t *testing.T) {
	node := newNode(t, "node-a", "10.244.1.0/24")
	pod, addr := node.setup(t, "default/keep")
	node.setup(t, "default/other")

	// An agent restart: a new Network, same namespace, same data directory.
	if err := node.net.Close(); err != nil {
		t.Fatal(err)
	}
	node.net = node.start(t)
	again, err := node.net.Setup(t.Context(), "default/keep", pod.path)
	if err != nil || again != addr {
		t.Fatalf("Setup after restart = %s, %v; want %s", again, err, addr)
	}
	_, fresh := node.setup(t, "default/new")
	if fresh == addr {
		t.Errorf("a new pod got %s, which default/keep holds", addr)
	}

	for _, c := range ownedChains() {
		out, err := node.ns.iptables(t, "-t", c.table, "-S", c.parent)
		if err != nil {
			t.Fatalf("list %s: %v", c.parent, err)
		}
		if n := strings.Count(out, "-j "+c.chain); n != 1 {
			t.Errorf("%s has %d jumps to %s after two starts, want 1:\n%s", c.parent, n, c.chain, out)
		}
	}
}

func TestCleanupRemovesEverything(t *testing.T) {
	node := newNode(t, "node-a", "10.244.1.0/24")
	node.setup(t, "default/a")
	if err := node.net.SyncRoutes(t.Context(), map[string]Peer{
		"node-b": {PodCIDR: netip.MustParsePrefix("10.244.2.0/24"), NodeIP: netip.MustParseAddr("10.244.1.200")},
	}); err != nil {
		t.Fatalf("SyncRoutes: %v", err)
	}
	if err := node.net.Cleanup(t.Context()); err != nil {
		t.Fatalf("Cleanup: %v", err)
	}
	for _, name := range []string{DefaultBridgeName, HostVethName("default/a")} {
		if node.ns.hasLink(t, name) {
			t.Errorf("link %s left after Cleanup", name)
		}
	}
	for _, c := range ownedChains() {
		if out, err := node.ns.iptables(t, "-t", c.table, "-S"); err != nil || strings.Contains(out, c.chain) {
			t.Errorf("table %s after Cleanup (err %v):\n%s\nwant no %s", c.table, err, out, c.chain)
		}
	}
	routes, err := node.net.ownRoutes()
	if err != nil || len(routes) != 0 {
		t.Errorf("routes after Cleanup = %v, %v; want none", routes, err)
	}
	if _, err := os.Stat(filepath.Join(node.dataDir, "ipam")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("ipam state after Cleanup: stat err = %v, want not exist", err)
	}
	if err := node.net.Cleanup(t.Context()); err != nil {
		t.Errorf("Cleanup twice: %v", err)
	}
}

// connectNodes joins two node namespaces with a veth pair (their "physical"
// network) and gives them addresses.
func connectNodes(t *testing.T, a, b testNS, addrA, addrB string) {
	t.Helper()
	ha := a.handle(t)
	err := ha.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "uplink"}, PeerName: "uplink", PeerNamespace: netlink.NsFd(int(b.h))})
	if err != nil {
		t.Fatalf("create uplink pair: %v", err)
	}
	for _, side := range []struct {
		ns   testNS
		addr string
	}{{a, addrA}, {b, addrB}} {
		h := side.ns.handle(t)
		link, err := h.LinkByName("uplink")
		if err != nil {
			t.Fatal(err)
		}
		nlAddr, err := netlink.ParseAddr(side.addr)
		if err != nil {
			t.Fatal(err)
		}
		if err := h.AddrAdd(link, nlAddr); err != nil {
			t.Fatalf("address %s: %v", side.addr, err)
		}
		if err := h.LinkSetUp(link); err != nil {
			t.Fatal(err)
		}
	}
	// The pair dies with either namespace; deleting it here keeps the
	// order plain.
	t.Cleanup(func() {
		if link, err := ha.LinkByName("uplink"); err == nil {
			ha.LinkDel(link)
		}
	})
}

func TestPodsOnTwoNodes(t *testing.T) {
	nodeA := newNode(t, "node-a", "10.244.1.0/24")
	nodeB := newNode(t, "node-b", "10.244.2.0/24")
	ipA, ipB := netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("198.18.0.2")
	connectNodes(t, nodeA.ns, nodeB.ns, "198.18.0.1/24", "198.18.0.2/24")

	peers := map[string]Peer{
		"node-a": {PodCIDR: nodeA.cfg.PodCIDR, NodeIP: ipA},
		"node-b": {PodCIDR: nodeB.cfg.PodCIDR, NodeIP: ipB},
	}
	for _, n := range []*testNode{nodeA, nodeB} {
		if err := n.net.SyncRoutes(t.Context(), peers); err != nil {
			t.Fatalf("SyncRoutes on %s: %v", n.cfg.NodeName, err)
		}
		if err := n.net.SyncRoutes(t.Context(), peers); err != nil {
			t.Fatalf("SyncRoutes twice on %s: %v", n.cfg.NodeName, err)
		}
	}

	podA, addrA := nodeA.setup(t, "default/client")
	podB, addrB := nodeB.setup(t, "default/server")
	podB.serve(t, addrB.String()+":8080")
	podA.serve(t, addrA.String()+":8080")
	nodeB.ns.serve(t, ipB.String()+":9090")

	t.Run("A to B by pod IP", func(t *testing.T) { mustReach(t, podA, addrB.String()+":8080", addrA) })
	t.Run("B to A by pod IP", func(t *testing.T) { mustReach(t, podB, addrA.String()+":8080", addrB) })
	// The node network is outside the cluster CIDR: masqueraded to node A.
	t.Run("A to outside is masqueraded", func(t *testing.T) { mustReach(t, podA, ipB.String()+":9090", ipA) })

	t.Run("departed node's route removed, others' kept", func(t *testing.T) {
		h := nodeA.ns.handle(t)
		// A route somebody else made: SyncRoutes must not touch it.
		foreign := &netlink.Route{
			Dst:      &net.IPNet{IP: net.IPv4(10, 244, 9, 0).To4(), Mask: net.CIDRMask(24, 32)},
			Gw:       net.IP(ipB.AsSlice()),
			Protocol: unix.RTPROT_STATIC,
		}
		if err := h.RouteAdd(foreign); err != nil {
			t.Fatalf("add foreign route: %v", err)
		}
		t.Cleanup(func() { h.RouteDel(foreign) })

		if err := nodeA.net.SyncRoutes(t.Context(), map[string]Peer{"node-a": peers["node-a"]}); err != nil {
			t.Fatalf("SyncRoutes without node-b: %v", err)
		}
		routes, err := h.RouteList(nil, unix.AF_INET)
		if err != nil {
			t.Fatal(err)
		}
		var sawForeign bool
		for _, r := range routes {
			if r.Dst == nil {
				continue
			}
			switch r.Dst.String() {
			case "10.244.2.0/24":
				t.Errorf("route to departed node-b's pods still there: %v", r)
			case "10.244.9.0/24":
				sawForeign = true
			}
		}
		if !sawForeign {
			t.Errorf("SyncRoutes removed a route it did not make (10.244.9.0/24)")
		}
		if _, err := podA.dial(addrB.String() + ":8080"); err == nil {
			t.Errorf("pod on A still reaches %s without a route", addrB)
		}
	})
}

func TestSyncRoutesRejectsBadPeers(t *testing.T) {
	node := newNode(t, "node-a", "10.244.1.0/24")
	connectNodes(t, node.ns, newNS(t), "198.18.0.1/24", "198.18.0.2/24")
	good := Peer{PodCIDR: netip.MustParsePrefix("10.244.3.0/24"), NodeIP: netip.MustParseAddr("198.18.0.2")}
	err := node.net.SyncRoutes(t.Context(), map[string]Peer{
		"good":       good,
		"overlaps":   {PodCIDR: netip.MustParsePrefix("10.244.1.0/25"), NodeIP: netip.MustParseAddr("198.18.0.3")},
		"no-ip":      {PodCIDR: netip.MustParsePrefix("10.244.4.0/24")},
		"unmasked":   {PodCIDR: netip.MustParsePrefix("10.244.5.7/24"), NodeIP: netip.MustParseAddr("198.18.0.4")},
		"unroutable": {PodCIDR: netip.MustParsePrefix("10.244.6.0/24"), NodeIP: netip.MustParseAddr("198.19.9.9")},
	})
	if err == nil {
		t.Fatal("SyncRoutes with bad peers returned nil, want an error naming them")
	}
	for _, name := range []string{"overlaps", "no-ip", "unmasked", "10.244.6.0/24"} {
		if !strings.Contains(err.Error(), name) {
			t.Errorf("error %q does not name %s", err, name)
		}
	}
	routes, err := node.net.ownRoutes()
	if err != nil {
		t.Fatal(err)
	}
	if len(routes) != 1 || routes[0].Dst.String() != "10.244.3.0/24" {
		t.Errorf("routes = %v, want only the good peer's 10.244.3.0/24", routes)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	valid := Config{
		NodeName:    "n",
		PodCIDR:     netip.MustParsePrefix("10.244.1.0/24"),
		ClusterCIDR: netip.MustParsePrefix("10.244.0.0/16"),
		DataDir:     "/nonexistent",
	}
	tests := []struct {
		name   string
		change func(*Config)
		want   string
	}{
		{"no node name", func(c *Config) { c.NodeName = "" }, "NodeName"},
		{"no pod CIDR", func(c *Config) { c.PodCIDR = netip.Prefix{} }, "PodCIDR"},
		{"host bits", func(c *Config) { c.PodCIDR = netip.MustParsePrefix("10.244.1.5/24") }, "host bits"},
		{"pod CIDR outside cluster", func(c *Config) { c.PodCIDR = netip.MustParsePrefix("10.245.1.0/24") }, "not inside"},
		{"pod CIDR wider than cluster", func(c *Config) { c.PodCIDR = netip.MustParsePrefix("10.0.0.0/8") }, "not inside"},
		{"IPv6", func(c *Config) { c.PodCIDR = netip.MustParsePrefix("fd00::/64") }, "IPv4"},
		{"long bridge name", func(c *Config) { c.BridgeName = "a-very-long-bridge" }, "BridgeName"},
		{"no data dir", func(c *Config) { c.DataDir = "" }, "DataDir"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := valid
			tt.change(&cfg)
			_, err := New(t.Context(), cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New(%+v) error = %v, want one mentioning %q", cfg, err, tt.want)
			}
		})
	}
}

// TestPodReachesItselfThroughServiceAddress plays the iptables dataplane: a
// DNAT from a ClusterIP to the pod itself, plus the masquerade kube-proxy
// adds for such hairpin traffic. With bridge-nf-call-iptables on, the DNAT
// happens while the packet is being bridged and it leaves by the port it came
// in on, which the bridge allows only with hairpin mode.
func TestPodReachesItselfThroughServiceAddress(t *testing.T) {
	node := newNode(t, "node-a", "10.244.1.0/24")
	pod, addr := node.setup(t, "default/self")
	pod.serve(t, addr.String()+":8080")
	rules := [][]string{
		{"-t", "nat", "PREROUTING", "-d", "10.96.0.10/32", "-p", "tcp", "--dport", "80", "-j", "DNAT", "--to-destination", addr.String() + ":8080"},
		{"-t", "nat", "POSTROUTING", "-s", addr.String(), "-d", addr.String(), "-j", "MASQUERADE"},
	}
	for _, r := range rules {
		add := append([]string{r[0], r[1], "-A"}, r[2:]...)
		if out, err := node.ns.iptables(t, add...); err != nil {
			t.Fatalf("iptables %v: %v: %s", add, err, out)
		}
		t.Cleanup(func() {
			del := append([]string{r[0], r[1], "-D"}, r[2:]...)
			if out, err := node.ns.iptables(t, del...); err != nil {
				t.Errorf("iptables %v: %v: %s", del, err, out)
			}
		})
	}
	mustReach(t, pod, "10.96.0.10:80", netip.MustParseAddr("10.244.1.1"))
}

func TestConcurrentSetups(t *testing.T) {
	node := newNode(t, "node-a", "10.244.1.0/24")
	const pods = 16
	nss := make([]testNS, pods)
	for i := range nss {
		nss[i] = newNS(t)
	}
	addrs := make([]netip.Addr, pods)
	errs := make([]error, pods)
	start := time.Now()
	var wg sync.WaitGroup
	for i := range pods {
		wg.Go(func() {
			addrs[i], errs[i] = node.net.Setup(t.Context(), fmt.Sprintf("default/p%d", i), nss[i].path)
		})
	}
	wg.Wait()
	t.Logf("%d concurrent Setups took %v (%v per pod)", pods, time.Since(start), time.Since(start)/pods)
	seen := map[netip.Addr]int{}
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Setup(default/p%d): %v", i, err)
		}
		if j, dup := seen[addrs[i]]; dup {
			t.Errorf("pods p%d and p%d both got %s", j, i, addrs[i])
		}
		seen[addrs[i]] = i
	}
	nss[0].serve(t, addrs[0].String()+":8080")
	mustReach(t, nss[pods-1], addrs[0].String()+":8080", addrs[pods-1])
	for i := range pods {
		if err := node.net.Teardown(t.Context(), fmt.Sprintf("default/p%d", i)); err != nil {
			t.Errorf("Teardown(default/p%d): %v", i, err)
		}
	}
	if recs, err := node.net.ipam.records(); err != nil || len(recs) != 0 {
		t.Errorf("records after tearing every pod down = %v, %v; want none", recs, err)
	}
}
