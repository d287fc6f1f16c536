package ebpf

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/skep-io/skep/agent/dataplane"
)

// tcLab is three network namespaces made by the test: a node with its
// external interface towards a client, and a pod behind the node.
//
//	client 198.18.0.100 --veth-- 198.18.0.1 node 10.244.1.1 --veth-- 10.244.1.5 pod
//
// 10.244.2.7, on the client namespace's loopback, plays a pod on another
// node: the node routes 10.244.2.0/24 through the external interface.
type tcLab struct {
	orig, node, client, pod netns.NsHandle
}

// newTCLab builds the lab and locks the test goroutine to its thread,
// which it leaves in the node namespace.
// nodeConfig is the dataplane of the lab's node: NodePort traffic on
// ext0 at 198.18.0.1. Whatever it leaves in the node's namespace is
// removed when the test ends.
func (lab *tcLab) nodeConfig(t *testing.T) Config {
	cfg := testConfig(t)
	cfg.Interface = "ext0"
	cfg.NodeIPs = []netip.Addr{netip.MustParseAddr("198.18.0.1")}
	t.Cleanup(func() {
		netns.Set(lab.node)
		Cleanup(cfg)
	})
	return cfg
}

func newTCLab(t *testing.T) *tcLab {
	t.Helper()
	runtime.LockOSThread()
	lab := &tcLab{}
	var err error
	if lab.orig, err = netns.Get(); err != nil {
		t.Fatalf("get netns: %v", err)
	}
	t.Cleanup(func() {
		netns.Set(lab.orig)
		for _, ns := range []netns.NsHandle{lab.node, lab.client, lab.pod} {
			if ns.IsOpen() {
				ns.Close()
			}
		}
		lab.orig.Close()
		runtime.UnlockOSThread()
	})
	for _, ns := range []*netns.NsHandle{&lab.client, &lab.pod, &lab.node} {
		if *ns, err = netns.New(); err != nil {
			t.Fatalf("new netns: %v", err)
		}
	}
	// Now in the node namespace.
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	must("add client veth", netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "ext0"}, PeerName: "eth0",
		PeerNamespace: netlink.NsFd(lab.client)}))
	must("add pod veth", netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "pod0"}, PeerName: "eth0",
		PeerNamespace: netlink.NsFd(lab.pod)}))
	setup := func(ns netns.NsHandle, ifname, cidr, gw string) {
		t.Helper()
		must("enter netns", netns.Set(ns))
		lo, _ := netlink.LinkByName("lo")
		must("lo up", netlink.LinkSetUp(lo))
		l, err := netlink.LinkByName(ifname)
		must("find "+ifname, err)
		addr, _ := netlink.ParseAddr(cidr)
		must("address "+ifname, netlink.AddrAdd(l, addr))
		must("up "+ifname, netlink.LinkSetUp(l))
		if gw != "" {
			must("default route", netlink.RouteAdd(&netlink.Route{Gw: net.ParseIP(gw)}))
		}
	}
	setup(lab.client, "eth0", "198.18.0.100/24", "198.18.0.1")
	setup(lab.pod, "eth0", "10.244.1.5/24", "10.244.1.1")
	setup(lab.node, "ext0", "198.18.0.1/24", "")
	setup(lab.node, "pod0", "10.244.1.1/24", "")
	must("enter client netns", netns.Set(lab.client))
	lo, _ := netlink.LinkByName("lo")
	remote, _ := netlink.ParseAddr("10.244.2.7/32")
	must("remote pod address", netlink.AddrAdd(lo, remote))
	must("enter node netns", netns.Set(lab.node))
	_, remoteNet, _ := net.ParseCIDR("10.244.2.0/24")
	must("route to remote pods", netlink.RouteAdd(&netlink.Route{Dst: remoteNet, Gw: net.ParseIP("198.18.0.100")}))
	must("enable forwarding", os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644))
	return lab
}

// in runs f with the thread in ns and returns to the node namespace. Only
// the goroutine that made the lab may call it: it alone is locked to the
// thread that moves between the namespaces (a subtest's goroutine is not,
// and would open its sockets wherever its thread happens to be).
func (lab *tcLab) in(t *testing.T, ns netns.NsHandle, f func()) {
	t.Helper()
	cur, err := netns.Get()
	if err != nil {
		t.Fatalf("get netns: %v", err)
	}
	here := cur.Equal(lab.node)
	cur.Close()
	if !here {
		t.Fatal("tcLab.in called off the lab's locked thread (from a subtest?)")
	}
	if err := netns.Set(ns); err != nil {
		t.Fatalf("enter netns: %v", err)
	}
	defer netns.Set(lab.node)
	f()
}

// TestTCNodePortThroughNetns sends real TCP and UDP from a client
// namespace to the node's NodePort: the tcx programs on the node's
// external interface carry it to the pod and the replies back, and Local
// keeps the client's address.
func TestTCNodePortThroughNetns(t *testing.T) {
	lab := newTCLab(t)
	cfg := lab.nodeConfig(t)

	// The pod answers with the address it sees the client at.
	var tcpLn net.Listener
	var udpConn net.PacketConn
	lab.in(t, lab.pod, func() {
		var err error
		if tcpLn, err = net.Listen("tcp4", "10.244.1.5:8080"); err != nil {
			t.Fatalf("listen in pod: %v", err)
		}
		if udpConn, err = net.ListenPacket("udp4", "10.244.1.5:8080"); err != nil {
			t.Fatalf("listen udp in pod: %v", err)
		}
	})
	t.Cleanup(func() { tcpLn.Close(); udpConn.Close() })
	go func() {
		for {
			c, err := tcpLn.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "pod sees %s", c.RemoteAddr())
			c.Close()
		}
	}()
	go func() {
		buf := make([]byte, 64)
		for {
			_, from, err := udpConn.ReadFrom(buf)
			if err != nil {
				return
			}
			udpConn.WriteTo([]byte("pod sees "+from.String()), from)
		}
	}()

	d := newDataplane(t, cfg)
	pod := dataplane.Backend{Addr: netip.MustParseAddr("10.244.1.5"), Port: 8080, Local: true, Ready: true}
	svcs := services(
		&dataplane.Service{Key: tcpKey, ClusterIP: clusterIP, Port: 80, NodePort: 30080, ExternalPolicyLocal: true,
			Backends: []dataplane.Backend{pod}},
		&dataplane.Service{Key: udpKey, ClusterIP: clusterIP, Port: 80, NodePort: 30080, ExternalPolicyLocal: true,
			Backends: []dataplane.Backend{pod}},
	)
	if err := d.Sync(t.Context(), svcs); err != nil {
		t.Fatalf("Sync: %v", err)
	}

	lab.in(t, lab.client, func() {
		for i := 0; i < 5; i++ {
			c, err := net.DialTimeout("tcp4", "198.18.0.1:30080", 3*time.Second)
			if err != nil {
				t.Fatalf("connect to NodePort from outside: %v", err)
			}
			c.SetDeadline(time.Now().Add(3 * time.Second))
			got, err := io.ReadAll(c)
			local := c.LocalAddr().String()
			c.Close()
			if err != nil {
				t.Fatalf("read from NodePort: %v", err)
			}
			if want := "pod sees " + local; string(got) != want {
				t.Errorf("TCP through NodePort: %q, want %q (Local keeps the client address)", got, want)
			}
		}

		c, err := net.ListenPacket("udp4", "198.18.0.100:0")
		if err != nil {
			t.Fatalf("udp socket: %v", err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(3 * time.Second))
		if _, err := c.WriteTo([]byte("hi"), &net.UDPAddr{IP: net.ParseIP("198.18.0.1"), Port: 30080}); err != nil {
			t.Fatalf("send to NodePort: %v", err)
		}
		buf := make([]byte, 64)
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			t.Fatalf("UDP reply through NodePort: %v", err)
		}
		if from.String() != "198.18.0.1:30080" || string(buf[:n]) != "pod sees "+c.LocalAddr().String() {
			t.Errorf("UDP reply %q from %v, want %q from 198.18.0.1:30080", buf[:n], from, "pod sees "+c.LocalAddr().String())
		}
	})
}

// TestTCNodePortRemoteBackend reaches a backend on "another node" through
// the external interface: the backend sees the node's address (SNAT,
// externalTrafficPolicy Cluster), the client sees the NodePort answer.
func TestTCNodePortRemoteBackend(t *testing.T) {
	lab := newTCLab(t)
	cfg := lab.nodeConfig(t)
	var ln net.Listener
	lab.in(t, lab.client, func() {
		var err error
		if ln, err = net.Listen("tcp4", "10.244.2.7:8080"); err != nil {
			t.Fatalf("listen as remote pod: %v", err)
		}
	})
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "remote pod sees %s", c.RemoteAddr().(*net.TCPAddr).IP)
			c.Close()
		}
	}()

	d := newDataplane(t, cfg)
	remote := dataplane.Backend{Addr: netip.MustParseAddr("10.244.2.7"), Port: 8080, NodeName: "node-b", Ready: true}
	if err := d.Sync(t.Context(), services(&dataplane.Service{Key: tcpKey, ClusterIP: clusterIP, Port: 80, NodePort: 30081,
		Backends: []dataplane.Backend{remote}})); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	lab.in(t, lab.client, func() {
		for i := 0; i < 5; i++ {
			c, err := net.DialTimeout("tcp4", "198.18.0.1:30081", 3*time.Second)
			if err != nil {
				t.Fatalf("connect to NodePort with a remote backend: %v", err)
			}
			c.SetDeadline(time.Now().Add(3 * time.Second))
			got, err := io.ReadAll(c)
			c.Close()
			if err != nil {
				t.Fatalf("read from NodePort: %v", err)
			}
			if want := "remote pod sees 198.18.0.1"; string(got) != want {
				t.Errorf("through NodePort to a remote backend: %q, want %q", got, want)
			}
		}
	})
}

// TestTCRejectThroughNetns connects from the client namespace to frontends
// whose services have no serving backend: TCP fails at once with
// ECONNREFUSED (the RST from tc), and a connected UDP socket gets
// ECONNREFUSED (the ICMP port unreachable). Listeners on the node's own
// NodePort make sure the refusal is tc's: a packet let through would reach
// them and succeed.
//
// The checksums are checked by the client's kernel where it checks them:
// by default the client's veth offloads them, its packets arrive marked
// CHECKSUM_PARTIAL and so do the replies, which the client trusts. With
// offload off on the client, requests and replies carry full checksums
// that the client verifies; with offload off on the node's interface, the
// node completes the replies' checksums in software on the way out, and
// the client verifies those.
//
// The cases run in a loop, not as subtests: everything runs on the
// goroutine locked to the lab's thread.
func TestTCRejectThroughNetns(t *testing.T) {
	lab := newTCLab(t)
	cfg := lab.nodeConfig(t)
	decoyTCP, err := net.Listen("tcp4", "198.18.0.1:30086")
	if err != nil {
		t.Fatalf("listen on the node: %v", err)
	}
	t.Cleanup(func() { decoyTCP.Close() })
	go func() {
		for {
			c, err := decoyTCP.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("node stack"))
			c.Close()
		}
	}()
	decoyUDP, err := net.ListenPacket("udp4", "198.18.0.1:30086")
	if err != nil {
		t.Fatalf("listen udp on the node: %v", err)
	}
	t.Cleanup(func() { decoyUDP.Close() })
	go func() {
		buf := make([]byte, 64)
		for {
			_, from, err := decoyUDP.ReadFrom(buf)
			if err != nil {
				return
			}
			decoyUDP.WriteTo([]byte("node stack"), from)
		}
	}()

	d := newDataplane(t, cfg)
	lbAddr := netip.MustParseAddr("198.18.100.6")
	notReady := dataplane.Backend{Addr: netip.MustParseAddr("10.244.1.5"), Port: 8080, Local: true}
	if err := d.Sync(t.Context(), services(
		&dataplane.Service{Key: tcpKey, ClusterIP: clusterIP, Port: 80, NodePort: 30086,
			LoadBalancerIPs: []netip.Addr{lbAddr}, Backends: []dataplane.Backend{notReady}},
		&dataplane.Service{Key: udpKey, ClusterIP: clusterIP, Port: 80, NodePort: 30086,
			LoadBalancerIPs: []netip.Addr{lbAddr}},
	)); err != nil {
		t.Fatalf("Sync: %v", err)
	}

	for _, tc := range []struct {
		name                       string
		clientOffload, nodeOffload bool
	}{
		{"offload", true, true},
		{"client sends full checksums", false, true},
		{"node completes checksums", true, false},
	} {
		lab.in(t, lab.client, func() { setTxChecksumOffload(t, "eth0", tc.clientOffload) })
		setTxChecksumOffload(t, "ext0", tc.nodeOffload)
		lab.in(t, lab.client, func() {
			for _, addr := range []string{"198.18.0.1:30086", "198.18.100.6:80"} {
				checkRefused(t, tc.name, addr)
			}
		})
	}
}

// labClient is the client namespace's address. Sockets bind to it, so
// that one opened in any other namespace fails instead of sending.
var labClient = net.ParseIP("198.18.0.100")

// checkRefused connects to addr by TCP and by connected UDP and wants both
// refused, TCP at once.
func checkRefused(t *testing.T, name, addr string) {
	t.Helper()
	start := time.Now()
	dialer := net.Dialer{Timeout: 3 * time.Second, LocalAddr: &net.TCPAddr{IP: labClient}}
	c, err := dialer.Dial("tcp4", addr)
	if err == nil {
		got, _ := io.ReadAll(c)
		c.Close()
		t.Fatalf("%s: TCP connect to %s without backends succeeded (%q), want ECONNREFUSED", name, addr, got)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("%s: TCP connect to %s without backends: %v, want ECONNREFUSED", name, addr, err)
	}
	if el := time.Since(start); el > time.Second {
		t.Errorf("%s: TCP connect to %s took %v to be refused", name, addr, el)
	}

	udpDialer := net.Dialer{LocalAddr: &net.UDPAddr{IP: labClient}}
	u, err := udpDialer.Dial("udp4", addr)
	if err != nil {
		t.Fatalf("%s: connect udp socket: %v", name, err)
	}
	defer u.Close()
	u.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := u.Write([]byte("hi")); err != nil {
		t.Fatalf("%s: send to %s: %v", name, addr, err)
	}
	buf := make([]byte, 64)
	n, err := u.Read(buf)
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("%s: UDP to %s without backends: read %q, %v; want ECONNREFUSED", name, addr, buf[:n], err)
	}
}

// setTxChecksumOffload turns checksum offload on transmit on or off for
// ifname in the calling thread's network namespace, as
// `ethtool -K ifname tx on|off` does.
func setTxChecksumOffload(t *testing.T, ifname string, on bool) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("socket for ethtool: %v", err)
	}
	defer unix.Close(fd)
	val := struct{ cmd, data uint32 }{cmd: unix.ETHTOOL_STXCSUM}
	if on {
		val.data = 1
	}
	var ifr struct {
		name [unix.IFNAMSIZ]byte
		data unsafe.Pointer
		_    [16]byte // the rest of struct ifreq's union
	}
	copy(ifr.name[:], ifname)
	ifr.data = unsafe.Pointer(&val)
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr))); errno != 0 {
		t.Fatalf("set tx checksum offload of %s to %v: %v", ifname, on, errno)
	}
}
