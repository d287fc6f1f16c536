package nftables

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/skep-io/skep/agent/dataplane/internal/netnstest"
)

// TestApplyEqualsFullSync applies random per-Service changes with Apply
// (partial transactions: only the changed services' chains and elements)
// and checks after each that the table equals what a proxier started from
// scratch writes for the whole state.
func TestApplyEqualsFullSync(t *testing.T) {
	newProxier := func(ctx context.Context, ns string) (netnstest.Applier, error) {
		return New(ctx, Config{NodeName: "node-a", NetNS: ns, MinSyncInterval: time.Nanosecond,
			NodeIPs:      []netip.Addr{netip.MustParseAddr(netnstest.NodeIP)},
			ClusterCIDR:  netip.MustParsePrefix("10.244.0.0/16"),
			ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix(netnstest.ServiceRange)}})
	}
	netnstest.CheckIncremental(t, "skep-nft", 150, newProxier, normalizedTable)
}

// normalizedTable is `nft -j list table` of the proxier's table without
// handles: one line per chain, set and map (its elements sorted), one per
// rule with its position in its chain. Chains without rules are left out:
// a partial sync flushes a service's chains and deletes them a while later
// (as kube-proxy does), and an empty chain carries nothing.
func normalizedTable(t testing.TB, ns string) string {
	t.Helper()
	raw := nftIn(t, ns, "-j", "list", "table", "ip", DefaultTable)
	var listing struct {
		Nftables []map[string]map[string]any `json:"nftables"`
	}
	if err := json.Unmarshal([]byte(raw), &listing); err != nil {
		t.Fatalf("decode nft -j list table: %v", err)
	}
	var out []string
	pos := map[string]int{}
	chains := map[string]string{}
	for _, obj := range listing.Nftables {
		for kind, v := range obj {
			delete(v, "handle")
			switch kind {
			case "chain":
				b, _ := json.Marshal(v)
				chains[fmt.Sprint(v["name"])] = string(b)
			case "rule":
				chain := fmt.Sprint(v["chain"])
				pos[chain]++
				b, _ := json.Marshal(v)
				out = append(out, fmt.Sprintf("rule %s#%d %s", chain, pos[chain], b))
			case "set", "map":
				// One line per element, so that a difference names it.
				elems, _ := v["elem"].([]any)
				delete(v, "elem")
				b, _ := json.Marshal(v)
				out = append(out, kind+" "+string(b))
				for _, e := range elems {
					eb, _ := json.Marshal(e)
					out = append(out, fmt.Sprintf("%s %v element %s", kind, v["name"], eb))
				}
			case "metainfo":
			default:
				b, _ := json.Marshal(v)
				out = append(out, kind+" "+string(b))
			}
		}
	}
	for name, desc := range chains {
		if pos[name] > 0 || isBaseChain(desc) {
			out = append(out, "chain "+desc)
		}
	}
	return strings.Join(out, "\n")
}

// isBaseChain reports whether a chain's JSON has a hook: base chains stay
// even when empty.
func isBaseChain(desc string) bool { return strings.Contains(desc, `"hook"`) }
