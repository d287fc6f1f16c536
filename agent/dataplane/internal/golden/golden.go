// Package golden holds what the rule-writing dataplanes' golden tests
// share: kube-proxy's TestOverall*Rules services, which its iptables and
// nftables tests both program, the helpers that spell services, and the
// comparison of generated rules with a file under testdata/.
package golden

import (
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/skep-io/skep/agent/dataplane"
)

// Addr parses an address the test spells out.
func Addr(s string) netip.Addr { return netip.MustParseAddr(s) }

// Key is the key of service ns/name's TCP port "p80".
func Key(ns, name string) dataplane.ServiceKey {
	return dataplane.ServiceKey{Namespace: ns, Name: name, Port: "p80", Protocol: dataplane.TCP}
}

// Ready is a ready endpoint on port 80.
func Ready(ip string, local bool) dataplane.Backend {
	return dataplane.Backend{Addr: Addr(ip), Port: 80, Ready: true, Local: local}
}

// Services keys list by service port.
func Services(list ...*dataplane.Service) map[dataplane.ServiceKey]*dataplane.Service {
	m := map[dataplane.ServiceKey]*dataplane.Service{}
	for _, s := range list {
		m[s.Key] = s
	}
	return m
}

// OverallServices are kube-proxy's TestOverallIPTablesRules and
// TestOverallNFTablesRules services (the same in both), plus a NodePort
// service with Local policy and a local endpoint (ns7) and a LoadBalancer
// without endpoints (ns8).
func OverallServices() map[dataplane.ServiceKey]*dataplane.Service {
	return Services(
		// ClusterIP.
		&dataplane.Service{Key: Key("ns1", "svc1"), ClusterIP: Addr("172.30.0.41"), Port: 80,
			Backends: []dataplane.Backend{Ready("10.180.0.1", false)}},
		// LoadBalancer, Local policy, no local endpoint.
		&dataplane.Service{Key: Key("ns2", "svc2"), ClusterIP: Addr("172.30.0.42"), Port: 80, NodePort: 3001,
			LoadBalancerIPs: []netip.Addr{Addr("1.2.3.4")}, ExternalIPs: []netip.Addr{Addr("192.168.99.22")},
			ExternalPolicyLocal: true,
			Backends:            []dataplane.Backend{Ready("10.180.0.2", false)}},
		// NodePort, Cluster policy.
		&dataplane.Service{Key: Key("ns3", "svc3"), ClusterIP: Addr("172.30.0.43"), Port: 80, NodePort: 3003,
			Backends: []dataplane.Backend{Ready("10.180.0.3", false)}},
		// External IP, two endpoints (listed out of order on purpose).
		&dataplane.Service{Key: Key("ns4", "svc4"), ClusterIP: Addr("172.30.0.44"), Port: 80,
			ExternalIPs: []netip.Addr{Addr("192.168.99.33")},
			Backends:    []dataplane.Backend{Ready("10.180.0.5", true), Ready("10.180.0.4", false)}},
		// LoadBalancer, Cluster policy, ClientIP affinity.
		&dataplane.Service{Key: Key("ns5", "svc5"), ClusterIP: Addr("172.30.0.45"), Port: 80, NodePort: 3002,
			LoadBalancerIPs: []netip.Addr{Addr("5.6.7.8")}, AffinityTimeout: 10800 * time.Second,
			Backends: []dataplane.Backend{Ready("10.180.0.3", false)}},
		// No endpoints.
		&dataplane.Service{Key: Key("ns6", "svc6"), ClusterIP: Addr("172.30.0.46"), Port: 80},
		// NodePort, Local policy, one local and one remote endpoint, and
		// endpoints that must not be used: not ready, terminating.
		&dataplane.Service{Key: Key("ns7", "svc7"), ClusterIP: Addr("172.30.0.47"), Port: 80, NodePort: 3007,
			ExternalPolicyLocal: true,
			Backends: []dataplane.Backend{
				Ready("10.180.0.7", true), Ready("10.180.1.7", false),
				{Addr: Addr("10.180.0.8"), Port: 80, Local: true},
				{Addr: Addr("10.180.0.9"), Port: 80, Local: true, Ready: true, Terminating: true},
			}},
		// LoadBalancer with only a not-ready endpoint: rejected everywhere.
		&dataplane.Service{Key: Key("ns8", "svc8"), ClusterIP: Addr("172.30.0.48"), Port: 80, NodePort: 3008,
			LoadBalancerIPs: []netip.Addr{Addr("5.6.7.9")},
			Backends:        []dataplane.Backend{{Addr: Addr("10.180.0.8"), Port: 80}}},
	)
}

// Check compares generated rules with testdata/name, failing the test at
// the first line that differs; with update it first rewrites the file
// from got (a change to it must then be read against kube-proxy's).
func Check(t *testing.T, name string, got []byte, update bool) {
	t.Helper()
	path := "testdata/" + name
	if update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) == string(want) {
		return
	}
	g, w := strings.Split(string(got), "\n"), strings.Split(string(want), "\n")
	for i := range max(len(g), len(w)) {
		var gl, wl string
		if i < len(g) {
			gl = g[i]
		}
		if i < len(w) {
			wl = w[i]
		}
		if gl != wl {
			t.Fatalf("generated rules differ from %s at line %d:\n got: %s\nwant: %s\n\nwhole output:\n%s", path, i+1, gl, wl, got)
		}
	}
}
