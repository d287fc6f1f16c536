package changes

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/skep-io/skep/agent/dataplane"
)

// udpFlow matches UDP conntrack entries, as kube-proxy's conntrack cleanup:
// by original destination (address and port) and by who answers.
type udpFlow struct {
	dst          netip.Addr // original destination; invalid: any (node ports)
	dstPort      uint16
	replySrc     netip.Addr // the endpoint the flow was DNATed to; invalid: any
	replySrcPort uint16
	notNATed     bool // only flows never DNATed (the reply comes from the original destination)
}

func addrOf(ip net.IP) netip.Addr {
	a, _ := netip.AddrFromSlice(ip)
	return a.Unmap()
}

// MatchConntrackFlow implements netlink.CustomConntrackFilter.
func (f udpFlow) MatchConntrackFlow(flow *netlink.ConntrackFlow) bool {
	if flow.Forward.Protocol != 17 || flow.Forward.DstPort != f.dstPort {
		return false
	}
	dst := addrOf(flow.Forward.DstIP)
	if f.dst.IsValid() && dst != f.dst {
		return false
	}
	replySrc := addrOf(flow.Reverse.SrcIP)
	if f.replySrc.IsValid() && (replySrc != f.replySrc || flow.Reverse.SrcPort != f.replySrcPort) {
		return false
	}
	if f.notNATed && replySrc != dst {
		return false
	}
	return true
}

// StaleUDPFlows lists the conntrack entries a set of changes leaves stale.
// UDP has no connection to end, so without this a client that keeps its
// source port keeps being sent to a removed endpoint for as long as it
// talks (kubernetes#19029). As kube-proxy:
//   - flows DNATed to a removed endpoint through any of the service's
//     addresses or its node port go;
//   - when a service gets its first endpoint, flows to its addresses that
//     were never DNATed (sent while it had none) go.
func StaleUDPFlows(changes map[dataplane.ServiceKey]Change) []netlink.CustomConntrackFilter {
	var filters []netlink.CustomConntrackFilter
	for k, c := range changes {
		if k.Protocol != dataplane.UDP {
			continue
		}
		now := map[netip.AddrPort]bool{}
		if c.Current != nil {
			for _, b := range c.Current.ServingBackends() {
				now[netip.AddrPortFrom(b.Addr, b.Port)] = true
			}
		}
		if prev := c.Previous; prev != nil {
			vips := append([]netip.Addr{prev.ClusterIP}, prev.ExternalIPs...)
			vips = append(vips, prev.LoadBalancerIPs...)
			for _, b := range prev.ServingBackends() {
				if now[netip.AddrPortFrom(b.Addr, b.Port)] {
					continue
				}
				for _, vip := range vips {
					filters = append(filters, udpFlow{dst: vip, dstPort: prev.Port, replySrc: b.Addr, replySrcPort: b.Port})
				}
				if prev.NodePort != 0 {
					filters = append(filters, udpFlow{dstPort: prev.NodePort, replySrc: b.Addr, replySrcPort: b.Port})
				}
			}
		}
		hadNone := c.Previous == nil || len(c.Previous.ServingBackends()) == 0
		if cur := c.Current; cur != nil && hadNone && len(now) > 0 {
			vips := append([]netip.Addr{cur.ClusterIP}, cur.ExternalIPs...)
			vips = append(vips, cur.LoadBalancerIPs...)
			for _, vip := range vips {
				filters = append(filters, udpFlow{dst: vip, dstPort: cur.Port, notNATed: true})
			}
			if cur.NodePort != 0 {
				filters = append(filters, udpFlow{dstPort: cur.NodePort, notNATed: true})
			}
		}
	}
	return filters
}

// ConntrackLiberal reads nf_conntrack_tcp_be_liberal in the network
// namespace at netnsPath ("": the caller's): when set, out-of-window
// packets are not INVALID and kube-proxy installs no drop for them.
func ConntrackLiberal(ctx context.Context, netnsPath string) bool {
	const path = "/proc/sys/net/netfilter/nf_conntrack_tcp_be_liberal"
	var out []byte
	var err error
	if netnsPath == "" {
		out, err = os.ReadFile(path)
	} else {
		out, err = exec.CommandContext(ctx, "nsenter", "--net="+netnsPath, "--", "cat", path).Output()
	}
	return err == nil && strings.TrimSpace(string(out)) != "0"
}

// NetlinkHandle opens netlink in the network namespace at path, or in the
// caller's own when path is "", for ClearStaleConntrack.
func NetlinkHandle(path string) (*netlink.Handle, error) {
	if path == "" {
		h, err := netlink.NewHandle()
		if err != nil {
			return nil, fmt.Errorf("open netlink: %w", err)
		}
		return h, nil
	}
	ns, err := netns.GetFromPath(path)
	if err != nil {
		return nil, fmt.Errorf("open network namespace %s: %w", path, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return nil, fmt.Errorf("open netlink in %s: %w", path, err)
	}
	return h, nil
}

// ClearStaleConntrack deletes the conntrack entries the changes left
// stale, in one pass over the table of nl's namespace, and returns how many
// it deleted.
func ClearStaleConntrack(nl *netlink.Handle, changes map[dataplane.ServiceKey]Change) (uint, error) {
	filters := StaleUDPFlows(changes)
	if len(filters) == 0 || nl == nil {
		return 0, nil
	}
	n, err := nl.ConntrackDeleteFilters(netlink.ConntrackTable, netlink.InetFamily(netlink.FAMILY_V4), filters...)
	if err != nil {
		return 0, fmt.Errorf("delete conntrack entries: %w", err)
	}
	return n, nil
}
