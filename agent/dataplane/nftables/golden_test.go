package nftables

import (
	"flag"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/skep-io/skep/agent/dataplane"
	"github.com/skep-io/skep/agent/dataplane/internal/changes"
	"github.com/skep-io/skep/agent/dataplane/internal/golden"
)

// The expected transactions under testdata/ were generated once with
// -update and then read line by line against the rules kube-proxy's own
// tests expect (pkg/proxy/nftables/proxier_test.go, TestOverallNFTablesRules:
// the same services, addresses and chain names), less what skep's Service
// has no field for (health check node ports, loadBalancerSourceRanges,
// internalTrafficPolicy) and with skep's one addition, the reject of the
// unallocated service range. A change to them must be read the same way.
var update = flag.Bool("update", false, "rewrite testdata/*.golden from the generator")

// The fixtures are kube-proxy's, shared with the other mode's golden test.
var (
	addr            = golden.Addr
	key             = golden.Key
	ready           = golden.Ready
	services        = golden.Services
	overallServices = golden.OverallServices
)

func goldenLayout() *layout {
	return &layout{table: DefaultTable, clusterCIDR: netip.MustParsePrefix("10.0.0.0/8"),
		serviceCIDRs: []netip.Prefix{netip.MustParsePrefix("172.30.0.0/16")}, dropInvalid: true}
}

// normalized passes services through the tracker, as a sync does: sorted
// backends and addresses.
func normalized(svcs map[dataplane.ServiceKey]*dataplane.Service) map[dataplane.ServiceKey]*dataplane.Service {
	tr := changes.NewTracker()
	tr.Update(svcs)
	return tr.Snapshot().Services
}

// checkGolden compares a transaction with testdata/name, or rewrites it
// under -update.
func checkGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	golden.Check(t, name, got, *update)
}

var t0 = time.Date(2026, 12, 2, 14, 0, 0, 0, time.UTC)

func TestGoldenFullSync(t *testing.T) {
	tx, st := goldenLayout().fullSync(newState(), normalized(overallServices()), leftovers{}, t0)
	checkGolden(t, "full.golden", tx.bytes())
	if len(st.staleChains) != 0 || len(tx.conflicts) != 0 {
		t.Errorf("first full sync: stale chains %v, conflicts %v; want none", st.staleChains, tx.conflicts)
	}
}

// TestGoldenFullSyncRemovesLeftovers: a full sync after a restart finds
// chains and sets of services that are gone, flushes the chains (deleted
// later) and deletes the sets; a set whose timeout changed is made anew.
func TestGoldenFullSyncRemovesLeftovers(t *testing.T) {
	svc5 := overallServices()[key("ns5", "svc5")]
	ep := netip.MustParseAddrPort("10.180.0.3:80")
	gone := netip.MustParseAddrPort("10.180.0.99:80")
	found := leftovers{
		chains: []string{
			serviceChain(clusterChainPrefix, key("old", "gone")),
			endpointChain(key("old", "gone"), gone),
			serviceChain(clusterChainPrefix, svc5.Key),
		},
		sets: map[string]time.Duration{
			affinitySet(svc5.Key, ep):             time.Minute, // svc5's, with another timeout
			affinitySet(key("old", "gone"), gone): time.Hour,
		},
	}
	tx, st := goldenLayout().fullSync(newState(), normalized(services(svc5)), found, t0)
	checkGolden(t, "leftovers.golden", tx.bytes())
	if due := st.dueStaleChains(t0); len(due) != 2 {
		t.Errorf("stale chains = %v, want the two of old/gone", due)
	}
}

// TestGoldenPartialSync: one service's endpoint is replaced by two others;
// the transaction touches its chains and nothing of the other services,
// writes no fixed object, and leaves the old endpoint's chain flushed for
// deletion.
func TestGoldenPartialSync(t *testing.T) {
	l := goldenLayout()
	all := normalized(overallServices())
	_, st := l.fullSync(newState(), all, leftovers{}, t0)

	svc1 := *all[key("ns1", "svc1")]
	svc1.Backends = []dataplane.Backend{ready("10.180.0.11", false), ready("10.180.0.10", false)}
	tx := l.partialSync(st, normalized(services(&svc1)), t0.Add(time.Second))
	checkGolden(t, "partial.golden", tx.bytes())
	old := endpointChain(svc1.Key, netip.MustParseAddrPort("10.180.0.1:80"))
	if _, ok := st.staleChains[old]; !ok {
		t.Errorf("stale chains = %v, want %s", st.staleChains, old)
	}
}

// TestGoldenPartialSyncEndpointsGone: a LoadBalancer service with Local
// policy and affinity loses its endpoints, and a Service sharing its
// ClusterIP on another port keeps it in @cluster-ips.
func TestGoldenPartialSyncEndpointsGone(t *testing.T) {
	l := goldenLayout()
	svc5 := overallServices()[key("ns5", "svc5")]
	svc5.ExternalPolicyLocal = true
	svc5.Backends = []dataplane.Backend{ready("10.180.0.3", true)}
	other := *svc5
	other.Key.Port = "p443"
	other.Port = 443
	other.NodePort = 3443
	_, st := l.fullSync(newState(), normalized(services(svc5, &other)), leftovers{}, t0)

	empty := *svc5
	empty.Backends = nil
	tx := l.partialSync(st, normalized(services(&empty)), t0.Add(time.Second))
	checkGolden(t, "endpoints-gone.golden", tx.bytes())

	// And back: the no-endpoint elements go, the chains and set come back.
	tx = l.partialSync(st, normalized(services(svc5)), t0.Add(2*time.Second))
	checkGolden(t, "endpoints-back.golden", tx.bytes())
	if len(st.staleChains) != 0 {
		t.Errorf("stale chains after the endpoints came back = %v, want none", st.staleChains)
	}
}

// TestPartialSyncRemovedService: a removed service's elements go, except
// the ClusterIP another port of its Service still has.
func TestPartialSyncRemovedService(t *testing.T) {
	l := goldenLayout()
	a := &dataplane.Service{Key: key("ns", "a"), ClusterIP: addr("172.30.0.9"), Port: 80,
		Backends: []dataplane.Backend{ready("10.180.0.1", false)}}
	b := *a
	b.Key.Port, b.Port = "p443", 443
	_, st := l.fullSync(newState(), normalized(services(a, &b)), leftovers{}, t0)
	tx := l.partialSync(st, map[dataplane.ServiceKey]*dataplane.Service{a.Key: nil}, t0)
	got := string(tx.bytes())
	want := "delete element ip kube-proxy service-ips { 172.30.0.9 . tcp . 80 }\n"
	if !strings.HasPrefix(got, want) || strings.Contains(got, "cluster-ips") || strings.Contains(got, "add ") {
		t.Errorf("removing one port of two: transaction\n%s\nwant it to start with %q, add nothing and keep @cluster-ips", got, want)
	}
}

// TestChainNamesMatchKubeProxy checks names against the ones kube-proxy's
// tests print for the same service ports and endpoints.
func TestChainNamesMatchKubeProxy(t *testing.T) {
	tests := []struct{ got, want string }{
		{serviceChain(clusterChainPrefix, key("ns1", "svc1")), "service-ULMVA6XW-ns1/svc1/tcp/p80"},
		{endpointChain(key("ns1", "svc1"), netip.MustParseAddrPort("10.180.0.1:80")), "endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80"},
		{serviceChain(externalChainPrefix, key("ns2", "svc2")), "external-42NFTM6N-ns2/svc2/tcp/p80"},
		{endpointChain(key("ns2", "svc2"), netip.MustParseAddrPort("10.180.0.2:80")), "endpoint-SGOXE6O3-ns2/svc2/tcp/p80__10.180.0.2/80"},
		{serviceChain(clusterChainPrefix, key("ns3", "svc3")), "service-4AT6LBPK-ns3/svc3/tcp/p80"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("chain name = %s, want %s", tt.got, tt.want)
		}
	}
	if k, ok := parseChainKey("endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80"); !ok || k != key("ns1", "svc1") {
		t.Errorf("parseChainKey = %v, %v; want ns1/svc1:p80/TCP", k, ok)
	}
}

func TestTableName(t *testing.T) {
	for _, tt := range []struct {
		name string
		ok   bool
	}{{"kube-proxy", true}, {"skep", true}, {"skep-test-1", true}, {"Kube", false}, {"", false}, {"1kube", false}, {"a b", false}} {
		if err := validTable(tt.name); (err == nil) != tt.ok {
			t.Errorf("validTable(%q) = %v, want ok=%v", tt.name, err, tt.ok)
		}
	}
}

// TestPartialSyncClusterIPHandedOver: one Service goes and another comes
// with its ClusterIP within one sync; the element is deleted and added
// again with the new chain, in that order, and @cluster-ips is left alone.
func TestPartialSyncClusterIPHandedOver(t *testing.T) {
	l := goldenLayout()
	a := &dataplane.Service{Key: key("ns", "a"), ClusterIP: addr("172.30.0.9"), Port: 80,
		Backends: []dataplane.Backend{ready("10.180.0.1", false)}}
	b := &dataplane.Service{Key: key("ns", "b"), ClusterIP: addr("172.30.0.9"), Port: 80,
		Backends: []dataplane.Backend{ready("10.180.0.2", false)}}
	_, st := l.fullSync(newState(), normalized(services(a)), leftovers{}, t0)
	changed := normalized(services(b))
	changed[a.Key] = nil
	got := string(l.partialSync(st, changed, t0).bytes())
	del := "delete element ip kube-proxy service-ips { 172.30.0.9 . tcp . 80 }\n"
	add := "add element ip kube-proxy service-ips { 172.30.0.9 . tcp . 80 : goto " + serviceChain(clusterChainPrefix, b.Key) + " }\n"
	if i, j := strings.Index(got, del), strings.Index(got, add); i < 0 || j < i || strings.Contains(got, "cluster-ips") {
		t.Errorf("handing 172.30.0.9:80 from a to b: transaction\n%s\nwant %q, then %q, and nothing of @cluster-ips", got, del, add)
	}
	if owners := st.elements[elemID{clusterIPsSet, "172.30.0.9"}].owners; len(owners) != 1 {
		t.Errorf("owners of 172.30.0.9 in @cluster-ips = %v, want b alone", owners)
	}
}

// TestConflictingServicesFirstWins: two service ports claiming one
// address and port (which the API server's allocator never hands out)
// do not make the transaction fail; the first in name order has it.
func TestConflictingServicesFirstWins(t *testing.T) {
	a := &dataplane.Service{Key: key("ns", "a"), ClusterIP: addr("172.30.0.9"), Port: 80,
		Backends: []dataplane.Backend{ready("10.180.0.1", false)}}
	b := &dataplane.Service{Key: key("ns", "b"), ClusterIP: addr("172.30.0.9"), Port: 80,
		Backends: []dataplane.Backend{ready("10.180.0.2", false)}}
	tx, st := goldenLayout().fullSync(newState(), normalized(services(a, b)), leftovers{}, t0)
	got := string(tx.bytes())
	if !strings.Contains(got, "172.30.0.9 . tcp . 80 : goto "+serviceChain(clusterChainPrefix, a.Key)) ||
		strings.Contains(got, "172.30.0.9 . tcp . 80 : goto "+serviceChain(clusterChainPrefix, b.Key)) {
		t.Errorf("transaction\n%s\nwant 172.30.0.9:80 to lead to a's chain alone", got)
	}
	if len(tx.conflicts) != 1 {
		t.Errorf("conflicts = %v, want the one of b", tx.conflicts)
	}

	// a goes: the element is deleted, and a full sync is asked for, which
	// gives it to b.
	ptx := goldenLayout().partialSync(st, map[dataplane.ServiceKey]*dataplane.Service{a.Key: nil}, t0)
	if !ptx.wantFullSync {
		t.Errorf("a, holding an element b wants, went; the partial sync asks for no full sync:\n%s", ptx.bytes())
	}
}
