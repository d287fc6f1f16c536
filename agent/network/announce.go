package network

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
)

// AnnounceLabel marks the LoadBalancer addresses AnnounceAddresses adds,
// so it removes only its own. (A label must start with the interface
// name.)
func announceLabel(iface string) string { return iface + ":skeplb" }

// AnnounceAddresses makes this node answer ARP for exactly addrs on iface,
// as MetalLB's layer 2 mode does: each address is added as a /32, so the
// kernel answers ARP for it, and traffic to it enters the node, where the
// dataplane balances it. Addresses it added earlier and not in addrs are
// removed. It works in the calling thread's network namespace.
func AnnounceAddresses(iface string, addrs []netip.Addr) error {
	link, err := netlink.LinkByName(iface)
	if err != nil {
		return fmt.Errorf("announce LoadBalancer addresses: find %s: %w", iface, err)
	}
	have, err := netlink.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("announce LoadBalancer addresses: list addresses of %s: %w", iface, err)
	}
	want := map[netip.Addr]bool{}
	for _, a := range addrs {
		want[a] = true
	}
	label := announceLabel(iface)
	for _, a := range have {
		ip, _ := netip.AddrFromSlice(a.IP.To4())
		if a.Label == label && !want[ip] {
			if err := netlink.AddrDel(link, &a); err != nil {
				return fmt.Errorf("withdraw %s from %s: %w", ip, iface, err)
			}
		}
		if want[ip] {
			delete(want, ip) // already there (ours or configured by hand)
		}
	}
	for ip := range want {
		a := &netlink.Addr{IPNet: &net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(32, 32)}, Label: label}
		if err := netlink.AddrAdd(link, a); err != nil {
			return fmt.Errorf("announce %s on %s: %w", ip, iface, err)
		}
	}
	return nil
}
