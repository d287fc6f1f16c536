package ebpf

import (
	"errors"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

// TestServiceRangeUnreachable: with the service range configured, a
// connect to a cluster IP that no service has fails at once, from the node
// and from a pod behind it, although the node has a default route that
// would carry the SYN away; Cleanup removes the route again.
func TestServiceRangeUnreachable(t *testing.T) {
	lab := newTCLab(t)
	if err := netlink.RouteAdd(&netlink.Route{Gw: net.ParseIP("198.18.0.100")}); err != nil {
		t.Fatalf("node default route: %v", err)
	}
	cfg := lab.nodeConfig(t)
	cfg.ServiceCIDRs = []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12")}
	newDataplane(t, cfg)

	dial := func(from string) {
		t.Helper()
		start := time.Now()
		c, err := net.DialTimeout("tcp4", "10.96.0.99:80", 3*time.Second)
		if err == nil {
			c.Close()
		}
		took := time.Since(start)
		if !errors.Is(err, syscall.ENETUNREACH) && !errors.Is(err, syscall.EHOSTUNREACH) || took > time.Second {
			t.Errorf("connect from %s to unused cluster IP 10.96.0.99:80: %v after %v; want network unreachable at once", from, err, took)
		}
	}
	dial("the node")
	lab.in(t, lab.pod, func() { dial("a pod") })

	if err := Cleanup(cfg); err != nil {
		t.Fatal(err)
	}
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: serviceRouteProtocol}, netlink.RT_FILTER_PROTOCOL)
	if err != nil || len(routes) != 0 {
		t.Errorf("after Cleanup the node still has service range routes %v (%v)", routes, err)
	}
}
