package ebpf

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// serviceRouteProtocol tags the unreachable routes of the service range, so
// that Cleanup removes only what this package made.
const serviceRouteProtocol netlink.RouteProtocol = 0xa6

// ensureServiceRoutes makes the service ranges unreachable in the main
// table. The socket programs rewrite a ClusterIP before the kernel looks up
// a route, so a programmed service never meets this route; a connect to a
// cluster IP not programmed yet (or not at all) fails at once with
// ENETUNREACH instead of being routed away, where its SYN would be lost and
// the connect would wait two minutes. (The iptables dataplane cannot use
// this: its nat rules run after the route lookup of the node's own
// connections, so it refuses in filter instead.)
func ensureServiceRoutes(cidrs []netip.Prefix) error {
	for _, cidr := range cidrs {
		if err := netlink.RouteReplace(serviceRoute(cidr)); err != nil {
			return fmt.Errorf("make the service range %s unreachable: %w", cidr, err)
		}
	}
	return nil
}

// removeServiceRoutes deletes the routes ensureServiceRoutes made.
func removeServiceRoutes(cidrs []netip.Prefix) error {
	var errs []error
	for _, cidr := range cidrs {
		err := netlink.RouteDel(serviceRoute(cidr))
		if err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("remove the unreachable route of %s: %w", cidr, err))
		}
	}
	return errors.Join(errs...)
}

func serviceRoute(cidr netip.Prefix) *netlink.Route {
	cidr = cidr.Masked()
	return &netlink.Route{
		Dst:      &net.IPNet{IP: net.IP(cidr.Addr().AsSlice()), Mask: net.CIDRMask(cidr.Bits(), 32)},
		Type:     unix.RTN_UNREACHABLE,
		Protocol: serviceRouteProtocol,
		Table:    unix.RT_TABLE_MAIN,
	}
}
