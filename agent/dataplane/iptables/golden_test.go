package iptables

import (
	"flag"
	"net/netip"
	"strings"
	"testing"

	"github.com/skep-io/skep/agent/dataplane"
	"github.com/skep-io/skep/agent/dataplane/internal/golden"
)

// The expected payloads under testdata/ are written by hand from the rules
// kube-proxy's own tests expect (pkg/proxy/iptables/proxier_test.go,
// TestOverallIPTablesRules: the same services, addresses and chain names),
// less what skep's Service has no field for (health check node ports,
// loadBalancerSourceRanges) and with the settings kube-proxy has on this
// machine (--random-fully, no localhost node ports, no nfacct).

// The fixtures are kube-proxy's, shared with the other mode's golden test.
var (
	addr            = golden.Addr
	key             = golden.Key
	ready           = golden.Ready
	services        = golden.Services
	overallServices = golden.OverallServices
)

var updateGolden = flag.Bool("update", false, "rewrite testdata/partial-apply.golden from the generator")

func goldenProxier() *Proxier {
	return newProxier(Config{NodeName: "node-1", ClusterCIDR: netip.MustParsePrefix("10.0.0.0/8")}, runner{})
}

func TestGoldenFullSync(t *testing.T) {
	p := goldenProxier()
	p.tracker.Update(overallServices())
	snap := p.tracker.Snapshot()
	pl := p.layout.generate(request{services: snap.Services, comments: true})
	golden.Check(t, "overall.golden", pl.bytes(nil), false)
}

func TestGoldenPartialSync(t *testing.T) {
	p := goldenProxier()
	svc1 := &dataplane.Service{Key: key("ns1", "svc1"), ClusterIP: addr("172.30.0.41"), Port: 80,
		Backends: []dataplane.Backend{ready("10.180.0.1", false)}}
	svc6 := &dataplane.Service{Key: key("ns6", "svc6"), ClusterIP: addr("172.30.0.46"), Port: 80}

	// As after a first full sync.
	p.tracker.Update(services(svc1, svc6))
	snap := p.tracker.Snapshot()
	pl := p.layout.generate(request{services: snap.Services, comments: true})
	p.programmed = pl.active
	p.tracker.Applied(snap)

	// svc1's endpoint is replaced by two others; svc6 is given again as is.
	svc1b := *svc1
	svc1b.Backends = []dataplane.Backend{ready("10.180.0.11", false), ready("10.180.0.10", false)}
	p.tracker.Update(services(&svc1b, svc6))
	snap = p.tracker.Snapshot()
	if len(snap.Changes) != 1 {
		t.Fatalf("changes = %v, want only ns1/svc1", snap.Changes)
	}
	data, _, err := p.buildPayload(t.Context(), snap, false, true)
	if err != nil {
		t.Fatal(err)
	}
	golden.Check(t, "partial.golden", data, false)
}

// TestChainNamesMatchKubeProxy checks names against the ones kube-proxy's
// tests print for the same service ports and endpoints.
func TestChainNamesMatchKubeProxy(t *testing.T) {
	c := newChainNames("KUBE")
	tests := []struct {
		got, want string
	}{
		{c.serviceChain(kindSVC, key("ns1", "svc1")), "KUBE-SVC-XPGD46QRK7WJZT7O"},
		{c.serviceChain(kindEXT, key("ns2", "svc2")), "KUBE-EXT-GNZBNJ2PO5MGZ6GT"},
		{c.serviceChain(kindSVC, key("ns5", "svc5")), "KUBE-SVC-NUKIZ6OKUXPJNT4C"},
		{c.endpointChain(key("ns1", "svc1"), "10.180.0.1:80"), "KUBE-SEP-SXIVWICOYRO3J4NJ"},
		{c.endpointChain(key("ns4", "svc4"), "10.180.0.5:80"), "KUBE-SEP-C6EBXVWJJZMIWKLZ"},
		{c.endpointChain(key("ns5", "svc5"), "10.180.0.3:80"), "KUBE-SEP-I77PXRDZVX7PMWMN"},
		{newChainNames("SKEP").serviceChain(kindSVL, key("ns1", "svc1")), "SKEP-SVL-XPGD46QRK7WJZT7O"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("chain name = %s, want %s", tt.got, tt.want)
		}
	}
	if p := probability(3); p != "0.3333333333" {
		t.Errorf("probability(3) = %s, want 0.3333333333", p)
	}
}

func TestChainPrefix(t *testing.T) {
	for _, tt := range []struct {
		prefix string
		ok     bool
	}{{"KUBE", true}, {"SKEP2", true}, {"ABCDEFG", true}, {"ABCDEFGH", false}, {"kube", false}, {"", false}, {"K-8", false}} {
		if err := validPrefix(tt.prefix); (err == nil) != tt.ok {
			t.Errorf("validPrefix(%q) = %v, want ok=%v", tt.prefix, err, tt.ok)
		}
	}
}

// TestLargeClusterDropsComments: past kube-proxy's threshold the
// per-endpoint rules carry no comment.
func TestLargeClusterDropsComments(t *testing.T) {
	p := goldenProxier()
	p.tracker.Update(services(&dataplane.Service{Key: key("ns1", "svc1"), ClusterIP: addr("172.30.0.41"), Port: 80,
		Backends: []dataplane.Backend{ready("10.180.0.1", false)}}))
	pl := p.layout.generate(request{services: p.tracker.Snapshot().Services, comments: false})
	got := string(pl.bytes(nil))
	for _, want := range []string{
		"-A KUBE-SEP-SXIVWICOYRO3J4NJ -s 10.180.0.1 -j KUBE-MARK-MASQ\n",
		"-A KUBE-SEP-SXIVWICOYRO3J4NJ -m tcp -p tcp -j DNAT --to-destination 10.180.0.1:80\n",
		"-A KUBE-SVC-XPGD46QRK7WJZT7O -j KUBE-SEP-SXIVWICOYRO3J4NJ\n",
		`-A KUBE-SERVICES -m comment --comment "ns1/svc1:p80 cluster IP"`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("payload lacks %q:\n%s", want, got)
		}
	}
}

// TestGoldenPartialApply is the restore input of a partial sync made from
// a change set (Apply): a Local NodePort/LoadBalancer service loses one of
// its endpoints, and another service is removed. Only the first's chains
// (SVC, SVL, EXT, its SEPs) are rewritten, the removed one's are deleted,
// the entry chains (KUBE-SERVICES, KUBE-NODEPORTS, ...) are written whole;
// the third service's chains do not appear.
func TestGoldenPartialApply(t *testing.T) {
	p := goldenProxier()
	ext := &dataplane.Service{Key: key("ns1", "ext"), ClusterIP: addr("172.30.0.41"), Port: 80, NodePort: 30080,
		LoadBalancerIPs: []netip.Addr{addr("1.2.3.4")}, ExternalPolicyLocal: true,
		Backends: []dataplane.Backend{ready("10.180.0.1", true), ready("10.180.1.1", false)}}
	gone := &dataplane.Service{Key: key("ns2", "gone"), ClusterIP: addr("172.30.0.42"), Port: 80,
		Backends: []dataplane.Backend{ready("10.180.0.2", false)}}
	other := &dataplane.Service{Key: key("ns3", "other"), ClusterIP: addr("172.30.0.43"), Port: 80,
		Backends: []dataplane.Backend{ready("10.180.0.3", false)}}

	// As after a first full sync.
	p.tracker.Update(services(ext, gone, other))
	snap := p.tracker.Snapshot()
	pl := p.layout.generate(request{services: snap.Services, comments: true})
	p.programmed = pl.active
	p.tracker.Applied(snap)

	ext2 := *ext
	ext2.Backends = ext.Backends[:1]
	p.tracker.Apply(map[dataplane.ServiceKey]*dataplane.Service{ext.Key: &ext2, gone.Key: nil})
	snap = p.tracker.Snapshot()
	if len(snap.Changes) != 2 || len(snap.Services) != 2 {
		t.Fatalf("changes = %v over %d services, want ext and gone over 2", snap.Changes, len(snap.Services))
	}
	data, _, err := p.buildPayload(t.Context(), snap, false, true)
	if err != nil {
		t.Fatal(err)
	}
	golden.Check(t, "partial-apply.golden", data, *updateGolden)
}
