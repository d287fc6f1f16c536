package iptables

import (
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/skep-io/skep/agent/dataplane/internal/netnstest"
)

// TestEndpointsComingAndGoingNeverHang connects to a Service over and over
// while its only endpoint comes and goes with every sync: each connection
// is answered or refused, none is left hanging. Without the service-range
// rule, a SYN that nat reads before a sync and filter after it (the tables
// are committed one at a time) is routed away untranslated, and its
// conntrack entry keeps the retransmissions from being translated too: the
// connection hangs until the client gives up (two minutes for connect).
func TestEndpointsComingAndGoingNeverHang(t *testing.T) {
	cidrs := []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12")}
	if os.Getenv("SKEP_TEST_NO_SERVICE_CIDR") != "" { // to see this test fail
		cidrs = nil
	}
	ns := testNetns(t, "10.244.1.2")
	netnstest.ServeTCP(t, ns, "10.244.1.2:8080", "backend-a")
	ctx := t.Context()
	p, err := New(ctx, Config{NodeName: "node-1", ClusterCIDR: netip.MustParsePrefix("10.244.0.0/16"), ServiceCIDRs: cidrs,
		MinSyncInterval: time.Millisecond, CheckInterval: time.Hour, NetNS: ns})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	netnstest.NeverHang(t, ns, 300, p.Sync)
}
