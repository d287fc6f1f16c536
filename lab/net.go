package lab

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// lockPath serialises the choice of subnets between labs brought up at the
// same time.
const lockPath = "/run/skep-lab.lock"

// lockSubnets takes the machine-wide lock held while a lab picks its subnet
// and puts it on its bridge; call the returned function to release it.
func lockSubnets() (func(), error) {
	f, err := os.OpenFile(lockPath, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", lockPath, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", lockPath, err)
	}
	return func() { f.Close() }, nil
}

// freeSubnet finds a 198.18.<k>.0/24 that no address or route of the host
// namespace overlaps, starting at the lab name's hash.
func freeSubnet(name string) (int, error) {
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return 0, fmt.Errorf("list addresses: %w", err)
	}
	routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		return 0, fmt.Errorf("list routes: %w", err)
	}
	taken := func(p netip.Prefix) bool {
		for _, a := range addrs {
			if ap, ok := prefixOf(a.IPNet); ok && ap.Overlaps(p) {
				return true
			}
		}
		for _, r := range routes {
			if rp, ok := prefixOf(r.Dst); ok && rp.Bits() > 0 && rp.Overlaps(p) {
				return true
			}
		}
		return false
	}
	first := firstSubnet(name)
	for n := 0; n < 200; n++ {
		k := 20 + (first-20+n)%200
		if !taken(subnet(k)) {
			return k, nil
		}
	}
	return 0, errors.New("no free /24 in 198.18.20.0-198.18.219.255 for the lab's bridge")
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP.To4())
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a, ones).Masked(), true
}

func ipNet(a netip.Addr, bits int) *net.IPNet {
	return &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(bits, 32)}
}

// makeBridge creates the lab's bridge with the host's address on the node
// network, replacing one a crashed lab left behind.
func makeBridge(name string, addr netip.Addr) error {
	_ = deleteLink(name)
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}
	if err := netlink.LinkAdd(br); err != nil {
		return fmt.Errorf("create bridge %s: %w", name, err)
	}
	if err := netlink.AddrAdd(br, &netlink.Addr{IPNet: ipNet(addr, 24)}); err != nil {
		return fmt.Errorf("add %s to bridge %s: %w", addr, name, err)
	}
	if err := netlink.LinkSetUp(br); err != nil {
		return fmt.Errorf("set bridge %s up: %w", name, err)
	}
	return nil
}

func deleteLink(name string) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return fmt.Errorf("find link %s: %w", name, err)
	}
	// A veth goes with its peer's namespace, so it may vanish between the
	// lookup and the delete: gone is what was wanted.
	if err := netlink.LinkDel(l); err != nil && !errors.Is(err, syscall.ENODEV) {
		return fmt.Errorf("delete link %s: %w", name, err)
	}
	return nil
}

// makeNetns creates a named network namespace (a bind mount under
// /run/netns, as `ip netns add` makes it), replacing a leftover one.
func makeNetns(name string) error {
	if err := deleteNetns(name); err != nil {
		return err
	}
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		return fmt.Errorf("create netns %s: %s: %w", name, strings.TrimSpace(string(out)), err)
	}
	return nil
}

func deleteNetns(name string) error {
	if _, err := os.Stat(netnsPath(name)); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if out, err := exec.Command("ip", "netns", "delete", name).CombinedOutput(); err != nil {
		return fmt.Errorf("delete netns %s: %s: %w", name, strings.TrimSpace(string(out)), err)
	}
	return nil
}

// plug connects a namespace to the bridge: a veth whose host end joins the
// bridge and whose other end is eth0 in the namespace, with addr on it, lo
// up and the default route through the host's bridge address, which is
// also where the API server listens.
func plug(ns, hostVeth, bridge string, addr, gateway netip.Addr) error {
	_ = deleteLink(hostVeth)
	br, err := netlink.LinkByName(bridge)
	if err != nil {
		return fmt.Errorf("find bridge %s: %w", bridge, err)
	}
	h, err := netns.GetFromPath(netnsPath(ns))
	if err != nil {
		return fmt.Errorf("open netns %s: %w", ns, err)
	}
	defer h.Close()
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: hostVeth, MasterIndex: br.Attrs().Index},
		PeerName:      "eth0",
		PeerNamespace: netlink.NsFd(int(h)),
	}
	if err := netlink.LinkAdd(veth); err != nil {
		return fmt.Errorf("create veth %s to netns %s: %w", hostVeth, ns, err)
	}
	if err := netlink.LinkSetUp(veth); err != nil {
		return fmt.Errorf("set %s up: %w", hostVeth, err)
	}
	nh, err := netlink.NewHandleAt(h)
	if err != nil {
		return fmt.Errorf("netlink in netns %s: %w", ns, err)
	}
	defer nh.Close()
	for _, name := range []string{"lo", "eth0"} {
		l, err := nh.LinkByName(name)
		if err != nil {
			return fmt.Errorf("find %s in netns %s: %w", name, ns, err)
		}
		if name == "eth0" {
			if err := nh.AddrAdd(l, &netlink.Addr{IPNet: ipNet(addr, 24)}); err != nil {
				return fmt.Errorf("add %s to eth0 in netns %s: %w", addr, ns, err)
			}
		}
		if err := nh.LinkSetUp(l); err != nil {
			return fmt.Errorf("set %s up in netns %s: %w", name, ns, err)
		}
	}
	eth0, _ := nh.LinkByName("eth0")
	if err := nh.RouteAdd(&netlink.Route{LinkIndex: eth0.Attrs().Index, Gw: gateway.AsSlice()}); err != nil {
		return fmt.Errorf("add default route via %s in netns %s: %w", gateway, ns, err)
	}
	return nil
}

// routeVia adds, in namespace ns, a route to dst spread over the given
// gateways (ECMP by flow hash): the client's way to LoadBalancer addresses,
// as a router in front of the nodes would have it.
func routeVia(ns string, dst netip.Prefix, gateways []netip.Addr) error {
	h, err := netns.GetFromPath(netnsPath(ns))
	if err != nil {
		return fmt.Errorf("open netns %s: %w", ns, err)
	}
	defer h.Close()
	nh, err := netlink.NewHandleAt(h)
	if err != nil {
		return fmt.Errorf("netlink in netns %s: %w", ns, err)
	}
	defer nh.Close()
	eth0, err := nh.LinkByName("eth0")
	if err != nil {
		return fmt.Errorf("find eth0 in netns %s: %w", ns, err)
	}
	r := &netlink.Route{Dst: ipNet(dst.Addr(), dst.Bits())}
	for _, gw := range gateways {
		r.MultiPath = append(r.MultiPath, &netlink.NexthopInfo{LinkIndex: eth0.Attrs().Index, Gw: gw.AsSlice()})
	}
	if err := nh.RouteReplace(r); err != nil {
		return fmt.Errorf("route %s via %v in netns %s: %w", dst, gateways, ns, err)
	}
	return nil
}

// setLinkUp sets a host link up or down: a node's veth down cuts the node
// off the network as a pulled cable would.
func setLinkUp(name string, up bool) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("find link %s: %w", name, err)
	}
	if up {
		err = netlink.LinkSetUp(l)
	} else {
		err = netlink.LinkSetDown(l)
	}
	if err != nil {
		return fmt.Errorf("set link %s up=%v: %w", name, up, err)
	}
	return nil
}

// freePort asks the kernel for a free TCP port on addr.
func freePort(addr netip.Addr) (int, error) {
	ln, err := net.Listen("tcp", netip.AddrPortFrom(addr, 0).String())
	if err != nil {
		return 0, fmt.Errorf("find a free port on %s: %w", addr, err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// dialFrom connects to addr over TCP from inside the network namespace ns,
// retrying until it succeeds or d has passed: whether a node can reach the
// API server.
func dialFrom(ns string, addr string, d time.Duration) error {
	errc := make(chan error, 1)
	go func() {
		// The thread enters the namespace and is thrown away afterwards
		// (no UnlockOSThread), so no other goroutine ever runs in it.
		runtime.LockOSThread()
		h, err := netns.GetFromPath(netnsPath(ns))
		if err != nil {
			errc <- fmt.Errorf("open netns %s: %w", ns, err)
			return
		}
		defer h.Close()
		if err := netns.Set(h); err != nil {
			errc <- fmt.Errorf("enter netns %s: %w", ns, err)
			return
		}
		var last error
		ok := waitFor(d, func() bool {
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil {
				c.Close()
				return true
			}
			last = err
			time.Sleep(100 * time.Millisecond)
			return false
		})
		if !ok {
			errc <- fmt.Errorf("reach %s from netns %s: %w", addr, ns, last)
			return
		}
		errc <- nil
	}()
	return <-errc
}
