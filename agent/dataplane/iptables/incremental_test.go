package iptables

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/skep-io/skep/agent/dataplane/internal/netnstest"
)

// TestApplyEqualsFullSync applies random per-Service changes with Apply
// (partial syncs: only the changed services' chains and the entry chains)
// and checks after each that iptables-save of the namespace equals what a
// proxier started from scratch writes for the whole state.
func TestApplyEqualsFullSync(t *testing.T) {
	newProxier := func(ctx context.Context, ns string) (netnstest.Applier, error) {
		return New(ctx, Config{NodeName: "node-a", NetNS: ns, MinSyncInterval: time.Nanosecond,
			NodeIPs:      []netip.Addr{netip.MustParseAddr(netnstest.NodeIP)},
			ClusterCIDR:  netip.MustParsePrefix("10.244.0.0/16"),
			ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix(netnstest.ServiceRange)}})
	}
	netnstest.CheckIncremental(t, "skep-ipt", 150, newProxier, normalizedSave)
}

// normalizedSave is iptables-save of the namespace without counters, one
// line per chain and per rule, each rule with its position in its chain.
func normalizedSave(t testing.TB, ns string) string {
	t.Helper()
	tables := savedTables([]byte(saveIn(t, ns)))
	var out []string
	for table, lines := range tables {
		pos := map[string]int{}
		for _, l := range lines {
			switch {
			case strings.HasPrefix(l, ":"):
				name, policy, _ := strings.Cut(l[1:], " ")
				policy, _, _ = strings.Cut(policy, " ")
				out = append(out, fmt.Sprintf("%s chain %s %s", table, name, policy))
			case strings.HasPrefix(l, "-A "):
				chain, spec, _ := strings.Cut(l[3:], " ")
				pos[chain]++
				out = append(out, fmt.Sprintf("%s %s#%d %s", table, chain, pos[chain], spec))
			}
		}
	}
	return strings.Join(out, "\n")
}
