package network

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// RouteProtocol tags every route SyncRoutes makes (rtm_protocol, shown by
// `ip route` as "proto 0xa5" or "proto 165"), so that it removes its own
// routes and never one a person or another daemon added. The number is free in
// iproute2's rt_protos list.
const RouteProtocol netlink.RouteProtocol = 0xa5

// Peer is another node of the cluster as the pod network sees it.
type Peer struct {
	PodCIDR netip.Prefix // that node's pods
	NodeIP  netip.Addr   // its InternalIP, reachable from this node
}

// SyncRoutes makes the node's routes to other nodes' pods match peers (node
// name → Peer): one route per peer to its pod CIDR via its NodeIP, and none to
// nodes that are no longer in peers. The entry of this node itself, if
// present, is skipped. A bad peer does not stop the others; every problem is
// returned, joined.
func (n *Network) SyncRoutes(ctx context.Context, peers map[string]Peer) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("sync routes: %w", err)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.nl == nil {
		return errClosed
	}

	var errs []error
	want := make(map[netip.Prefix]Peer, len(peers))
	names := make([]string, 0, len(peers))
	for name := range peers {
		names = append(names, name)
	}
	sort.Strings(names) // stable error order
	for _, name := range names {
		p := peers[name]
		switch {
		case name == n.cfg.NodeName:
			continue
		case !p.PodCIDR.IsValid() || !p.PodCIDR.Addr().Is4() || p.PodCIDR != p.PodCIDR.Masked():
			errs = append(errs, fmt.Errorf("node %s: pod CIDR %s: want a masked IPv4 prefix", name, p.PodCIDR))
			continue
		case !p.NodeIP.IsValid() || !p.NodeIP.Is4():
			errs = append(errs, fmt.Errorf("node %s: node IP %s: want an IPv4 address", name, p.NodeIP))
			continue
		case p.PodCIDR.Overlaps(n.cfg.PodCIDR):
			errs = append(errs, fmt.Errorf("node %s: pod CIDR %s overlaps this node's %s", name, p.PodCIDR, n.cfg.PodCIDR))
			continue
		}
		if other, dup := want[p.PodCIDR]; dup {
			errs = append(errs, fmt.Errorf("node %s: pod CIDR %s is also claimed via %s", name, p.PodCIDR, other.NodeIP))
			continue
		}
		want[p.PodCIDR] = p
	}
	if err := n.syncRoutes(want); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// syncRoutes replaces the routes in want and deletes every other route
// tagged RouteProtocol. Called with n.mu held.
func (n *Network) syncRoutes(want map[netip.Prefix]Peer) error {
	var errs []error
	for cidr, p := range want {
		r := &netlink.Route{
			Dst:      &net.IPNet{IP: net.IP(cidr.Addr().AsSlice()), Mask: net.CIDRMask(cidr.Bits(), 32)},
			Gw:       net.IP(p.NodeIP.AsSlice()),
			Protocol: RouteProtocol,
			Table:    unix.RT_TABLE_MAIN,
		}
		// No output interface: the kernel picks the one that reaches the
		// gateway, and refuses the route if none does.
		if err := n.nl.RouteReplace(r); err != nil {
			errs = append(errs, fmt.Errorf("add route to %s via %s: %w", cidr, p.NodeIP, err))
		}
	}
	have, err := n.ownRoutes()
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	for _, r := range have {
		cidr, ok := routePrefix(r)
		if ok {
			if _, keep := want[cidr]; keep {
				continue
			}
		}
		if err := n.nl.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("delete route to %s: %w", r.Dst, err))
		} else {
			n.log.Info("route to departed node removed", "dst", r.Dst, "via", r.Gw)
		}
	}
	return errors.Join(errs...)
}

// ownRoutes lists the main table's IPv4 routes tagged RouteProtocol.
func (n *Network) ownRoutes() ([]netlink.Route, error) {
	filter := &netlink.Route{Protocol: RouteProtocol, Table: unix.RT_TABLE_MAIN}
	mask := netlink.RT_FILTER_PROTOCOL | netlink.RT_FILTER_TABLE
	var err error
	// A dump interrupted by a concurrent change is retried; the routes are
	// few, and a second dump almost always completes.
	for range 5 {
		var routes []netlink.Route
		routes, err = n.nl.RouteListFiltered(unix.AF_INET, filter, mask)
		if err == nil {
			return routes, nil
		}
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	return nil, fmt.Errorf("list routes: %w", err)
}

// routePrefix returns a route's destination as a prefix.
func routePrefix(r netlink.Route) (netip.Prefix, bool) {
	if r.Dst == nil {
		return netip.Prefix{}, false
	}
	addr, ok := netip.AddrFromSlice(r.Dst.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	bits, _ := r.Dst.Mask.Size()
	return netip.PrefixFrom(addr.Unmap(), bits), true
}
