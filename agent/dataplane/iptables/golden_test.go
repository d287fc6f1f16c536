package iptables

import (
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/skep-io/skep/agent/dataplane"
)

// The expected payloads under testdata/ are written by hand from the rules
// kube-proxy's own tests expect (pkg/proxy/iptables/proxier_test.go,
// TestOverallIPTablesRules: the same services, addresses and chain names),
// less what skep's Service has no field for (health check node ports,
// loadBalancerSourceRanges) and with the settings kube-proxy has on this
// machine (--random-fully, no localhost node ports, no nfacct).

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

func key(ns, name string) dataplane.ServiceKey {
	return dataplane.ServiceKey{Namespace: ns, Name: name, Port: "p80", Protocol: dataplane.TCP}
}

func ready(ip string, local bool) dataplane.Backend {
	return dataplane.Backend{Addr: addr(ip), Port: 80, Ready: true, Local: local}
}

func services(list ...*dataplane.Service) map[dataplane.ServiceKey]*dataplane.Service {
	m := map[dataplane.ServiceKey]*dataplane.Service{}
	for _, s := range list {
		m[s.Key] = s
	}
	return m
}

// overallServices are kube-proxy's TestOverallIPTablesRules services, plus
// a NodePort service with Local policy and a local endpoint (ns7) and a
// LoadBalancer without endpoints (ns8).
func overallServices() map[dataplane.ServiceKey]*dataplane.Service {
	return services(
		// ClusterIP.
		&dataplane.Service{Key: key("ns1", "svc1"), ClusterIP: addr("172.30.0.41"), Port: 80,
			Backends: []dataplane.Backend{ready("10.180.0.1", false)}},
		// LoadBalancer, Local policy, no local endpoint.
		&dataplane.Service{Key: key("ns2", "svc2"), ClusterIP: addr("172.30.0.42"), Port: 80, NodePort: 3001,
			LoadBalancerIPs: []netip.Addr{addr("1.2.3.4")}, ExternalIPs: []netip.Addr{addr("192.168.99.22")},
			ExternalPolicyLocal: true,
			Backends:            []dataplane.Backend{ready("10.180.0.2", false)}},
		// NodePort, Cluster policy.
		&dataplane.Service{Key: key("ns3", "svc3"), ClusterIP: addr("172.30.0.43"), Port: 80, NodePort: 3003,
			Backends: []dataplane.Backend{ready("10.180.0.3", false)}},
		// External IP, two endpoints (listed out of order on purpose).
		&dataplane.Service{Key: key("ns4", "svc4"), ClusterIP: addr("172.30.0.44"), Port: 80,
			ExternalIPs: []netip.Addr{addr("192.168.99.33")},
			Backends:    []dataplane.Backend{ready("10.180.0.5", true), ready("10.180.0.4", false)}},
		// LoadBalancer, Cluster policy, ClientIP affinity.
		&dataplane.Service{Key: key("ns5", "svc5"), ClusterIP: addr("172.30.0.45"), Port: 80, NodePort: 3002,
			LoadBalancerIPs: []netip.Addr{addr("5.6.7.8")}, AffinityTimeout: 10800 * time.Second,
			Backends: []dataplane.Backend{ready("10.180.0.3", false)}},
		// No endpoints.
		&dataplane.Service{Key: key("ns6", "svc6"), ClusterIP: addr("172.30.0.46"), Port: 80},
		// NodePort, Local policy, one local and one remote endpoint, and
		// endpoints that must not be used: not ready, terminating.
		&dataplane.Service{Key: key("ns7", "svc7"), ClusterIP: addr("172.30.0.47"), Port: 80, NodePort: 3007,
			ExternalPolicyLocal: true,
			Backends: []dataplane.Backend{
				ready("10.180.0.7", true), ready("10.180.1.7", false),
				{Addr: addr("10.180.0.8"), Port: 80, Local: true},
				{Addr: addr("10.180.0.9"), Port: 80, Local: true, Ready: true, Terminating: true},
			}},
		// LoadBalancer with only a not-ready endpoint: REJECT everywhere.
		&dataplane.Service{Key: key("ns8", "svc8"), ClusterIP: addr("172.30.0.48"), Port: 80, NodePort: 3008,
			LoadBalancerIPs: []netip.Addr{addr("5.6.7.9")},
			Backends:        []dataplane.Backend{{Addr: addr("10.180.0.8"), Port: 80}}},
	)
}

func goldenProxier() *Proxier {
	return newProxier(Config{NodeName: "node-1", ClusterCIDR: netip.MustParsePrefix("10.0.0.0/8")}, runner{})
}

func readGolden(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// diffLines reports the first differing line of two payloads.
func diffLines(t *testing.T, got, want string) {
	t.Helper()
	if got == want {
		return
	}
	g, w := strings.Split(got, "\n"), strings.Split(want, "\n")
	for i := 0; i < max(len(g), len(w)); i++ {
		var gl, wl string
		if i < len(g) {
			gl = g[i]
		}
		if i < len(w) {
			wl = w[i]
		}
		if gl != wl {
			t.Fatalf("payload differs at line %d:\n got: %s\nwant: %s\n\nwhole payload:\n%s", i+1, gl, wl, got)
		}
	}
}

func TestGoldenFullSync(t *testing.T) {
	p := goldenProxier()
	p.tracker.Update(overallServices())
	snap := p.tracker.Snapshot()
	pl := p.layout.generate(request{services: snap.Services, comments: true})
	diffLines(t, string(pl.bytes(nil)), readGolden(t, "overall.golden"))
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
	diffLines(t, string(data), readGolden(t, "partial.golden"))
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
