package nftables

import (
	"net/netip"
	"testing"
	"time"

	"github.com/skep-io/skep/agent/dataplane/internal/netnstest"
)

// TestEndpointsComingAndGoingNeverHang connects to a Service over and over
// while its only endpoint comes and goes with every sync, each sync an
// incremental one that moves the service between @service-ips and
// @no-endpoint-services: every connection is answered or refused, none is
// left hanging on a table caught half-written.
func TestEndpointsComingAndGoingNeverHang(t *testing.T) {
	ns := netnstest.New(t, "skep-nft", "10.244.1.2")
	netnstest.ServeTCP(t, ns, "10.244.1.2:8080", "backend-a")
	ctx := t.Context()
	p, err := New(ctx, Config{NodeName: "node-1", ClusterCIDR: netip.MustParsePrefix("10.244.0.0/16"),
		ServiceCIDRs:    []netip.Prefix{netip.MustParsePrefix(netnstest.ServiceRange)},
		MinSyncInterval: time.Millisecond, CheckInterval: time.Hour, NetNS: ns})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	netnstest.NeverHang(t, ns, 200, p.Sync)
}
