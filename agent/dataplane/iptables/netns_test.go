package iptables

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/skep-io/skep/agent/dataplane"
	"github.com/skep-io/skep/agent/dataplane/internal/netnstest"
)

// testNetns makes a namespace with its own iptables tables (see netnstest.New).
func testNetns(t testing.TB, backends ...string) string {
	t.Helper()
	return netnstest.New(t, "skep-ipt", backends...)
}

func saveIn(t testing.TB, ns string) string {
	t.Helper()
	return netnstest.Run(t, "nsenter", "--net="+ns, "--", "iptables-save")
}

// TestRealIptables programs a namespace's tables with the real
// iptables-restore and sends real connections through the rules.
func TestRealIptables(t *testing.T) {
	ns := testNetns(t, "10.244.1.2", "10.244.1.3")
	netnstest.ServeTCP(t, ns, "10.244.1.2:8080", "backend-a")
	netnstest.ServeTCP(t, ns, "10.244.1.3:8080", "backend-b")
	netnstest.ServeUDP(t, ns, "10.244.1.2:5353", "udp-a")
	netnstest.ServeUDP(t, ns, "10.244.1.3:5353", "udp-b")

	ctx := t.Context()
	p, err := New(ctx, Config{
		NodeName:        "node-1",
		ClusterCIDR:     netip.MustParsePrefix("10.244.0.0/16"),
		MinSyncInterval: 10 * time.Millisecond,
		CheckInterval:   100 * time.Millisecond,
		NetNS:           ns,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })

	backendA := dataplane.Backend{Addr: addr("10.244.1.2"), Port: 8080, Ready: true, Local: true}
	backendB := dataplane.Backend{Addr: addr("10.244.1.3"), Port: 8080, Ready: true, Local: true}
	web := &dataplane.Service{Key: dataplane.ServiceKey{Namespace: "default", Name: "web", Protocol: dataplane.TCP},
		ClusterIP: addr("10.96.0.10"), Port: 80, NodePort: 30080, Backends: []dataplane.Backend{backendA}}
	empty := &dataplane.Service{Key: dataplane.ServiceKey{Namespace: "default", Name: "empty", Protocol: dataplane.TCP},
		ClusterIP: addr("10.96.0.11"), Port: 80, NodePort: 30081}
	dns := &dataplane.Service{Key: dataplane.ServiceKey{Namespace: "default", Name: "dns", Port: "dns", Protocol: dataplane.UDP},
		ClusterIP: addr("10.96.0.12"), Port: 53, Backends: []dataplane.Backend{
			{Addr: addr("10.244.1.2"), Port: 5353, Ready: true, Local: true},
		}}
	if err := p.Sync(ctx, services(web, empty, dns)); err != nil {
		t.Fatal(err)
	}

	saved := saveIn(t, ns)
	svcChain := newChainNames("KUBE").serviceChain(kindSVC, web.Key)
	for _, want := range []string{
		"-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
		"-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
		"-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING",
		":" + svcChain,
		"-j " + svcChain,
		"--to-destination 10.244.1.2:8080",
		"\"default/empty has no endpoints\"",
		":KUBE-PROXY-CANARY",
	} {
		if !strings.Contains(saved, want) {
			t.Errorf("iptables-save lacks %q:\n%s", want, saved)
		}
	}

	t.Run("ClusterIP", func(t *testing.T) {
		got, err := netnstest.Fetch(ns, "10.96.0.10:80")
		if err != nil || got != "backend-a" {
			t.Fatalf("connect to ClusterIP 10.96.0.10:80 = %q, %v; want backend-a", got, err)
		}
	})
	t.Run("NodePort", func(t *testing.T) {
		got, err := netnstest.Fetch(ns, "198.18.0.2:30080")
		if err != nil || got != "backend-a" {
			t.Fatalf("connect to node port 198.18.0.2:30080 = %q, %v; want backend-a", got, err)
		}
	})
	t.Run("NoEndpointsRejects", func(t *testing.T) {
		for _, target := range []string{"10.96.0.11:80", "198.18.0.2:30081"} {
			start := time.Now()
			_, err := netnstest.Fetch(ns, target)
			if !errors.Is(err, syscall.ECONNREFUSED) {
				t.Errorf("connect to %s: %v, want connection refused", target, err)
			}
			if d := time.Since(start); d > time.Second {
				t.Errorf("connect to %s took %v, want an immediate refusal", target, d)
			}
		}
	})
	t.Run("ReadBack", func(t *testing.T) {
		got, err := p.Services(ctx)
		if err != nil {
			t.Fatal(err)
		}
		byKey := map[dataplane.ServiceKey]dataplane.Service{}
		for _, s := range got {
			byKey[s.Key] = s
		}
		for _, want := range []*dataplane.Service{web, empty, dns} {
			s, ok := byKey[want.Key]
			if !ok {
				t.Errorf("Services() lacks %s: %+v", want.Key, got)
				continue
			}
			if s.ClusterIP != want.ClusterIP || s.Port != want.Port || s.NodePort != want.NodePort {
				t.Errorf("Services() %s = %s:%d node port %d, want %s:%d node port %d",
					want.Key, s.ClusterIP, s.Port, s.NodePort, want.ClusterIP, want.Port, want.NodePort)
			}
			var gotEps, wantEps []string
			for _, b := range s.Backends {
				gotEps = append(gotEps, endpointString(b))
			}
			for _, b := range want.ServingBackends() {
				wantEps = append(wantEps, endpointString(b))
			}
			if !slices.Equal(gotEps, wantEps) {
				t.Errorf("Services() %s endpoints = %v, want %v", want.Key, gotEps, wantEps)
			}
		}
	})
	t.Run("PartialSync", func(t *testing.T) {
		// web moves from a to b: a partial sync rewrites its chains and
		// deletes a's SEP chain.
		web2 := *web
		web2.Backends = []dataplane.Backend{backendB}
		if err := p.Sync(ctx, services(&web2, empty, dns)); err != nil {
			t.Fatal(err)
		}
		got, err := netnstest.Fetch(ns, "10.96.0.10:80")
		if err != nil || got != "backend-b" {
			t.Fatalf("after moving web to b, ClusterIP answers %q, %v; want backend-b", got, err)
		}
		oldSEP := newChainNames("KUBE").endpointChain(web.Key, "10.244.1.2:8080")
		if saved := saveIn(t, ns); strings.Contains(saved, oldSEP) {
			t.Errorf("removed endpoint's chain %s is still there:\n%s", oldSEP, saved)
		}
		web = &web2
	})
	t.Run("UDPConntrackCleared", func(t *testing.T) {
		ask := netnstest.DialUDP(t, ns, "10.96.0.12:53")
		if got, err := ask(); err != nil || got != "udp-a" {
			t.Fatalf("UDP to 10.96.0.12:53 = %q, %v; want udp-a", got, err)
		}
		// The same socket (same 5-tuple) must move to b once a is gone.
		dns2 := *dns
		dns2.Backends = []dataplane.Backend{{Addr: addr("10.244.1.3"), Port: 5353, Ready: true, Local: true}}
		if err := p.Sync(ctx, services(web, empty, &dns2)); err != nil {
			t.Fatal(err)
		}
		if got, err := ask(); err != nil || got != "udp-b" {
			t.Fatalf("after removing udp-a, the same UDP socket got %q, %v; want udp-b", got, err)
		}
	})
	t.Run("RepairsFlushedRules", func(t *testing.T) {
		in := func(args ...string) {
			netnstest.Run(t, append([]string{"nsenter", "--net=" + ns, "--", "iptables"}, args...)...)
		}
		in("-t", "nat", "-D", "OUTPUT", "-m", "comment", "--comment", "kubernetes service portals", "-j", "KUBE-SERVICES")
		in("-t", "mangle", "-X", "KUBE-PROXY-CANARY")
		if _, err := netnstest.Fetch(ns, "10.96.0.10:80"); err == nil {
			t.Fatal("ClusterIP still answers with the OUTPUT jump deleted")
		}
		netnstest.Eventually(t, "ClusterIP answers again after the canary check", func() error {
			got, err := netnstest.Fetch(ns, "10.96.0.10:80")
			if err == nil && got != "backend-b" {
				err = fmt.Errorf("answered %q", got)
			}
			return err
		})
	})
	t.Run("Cleanup", func(t *testing.T) {
		// Someone else's rule in the same tables must survive.
		netnstest.Run(t, "nsenter", "--net="+ns, "--", "iptables", "-t", "nat", "-A", "POSTROUTING", "-s", "10.244.0.0/16", "-j", "RETURN")
		if err := p.Cleanup(ctx); err != nil {
			t.Fatal(err)
		}
		saved := saveIn(t, ns)
		if strings.Contains(saved, "KUBE") {
			t.Errorf("after Cleanup, iptables-save still has KUBE chains or jumps:\n%s", saved)
		}
		if !strings.Contains(saved, "-A POSTROUTING -s 10.244.0.0/16 -j RETURN") {
			t.Errorf("Cleanup removed a rule it did not write:\n%s", saved)
		}
		if err := p.Sync(ctx, services(web)); !errors.Is(err, ErrClosed) {
			t.Errorf("Sync after Cleanup = %v, want ErrClosed", err)
		}
	})
}

// TestCleanupWithoutProxier removes what a proxier left, from the
// package-level Cleanup run inside the namespace, prefix and all.
func TestCleanupWithoutProxier(t *testing.T) {
	ns := testNetns(t)
	ctx := t.Context()
	p, err := New(ctx, Config{ChainPrefix: "SKEPT", MinSyncInterval: time.Millisecond, NetNS: ns})
	if err != nil {
		t.Fatal(err)
	}
	web := &dataplane.Service{Key: dataplane.ServiceKey{Namespace: "default", Name: "web", Protocol: dataplane.TCP},
		ClusterIP: addr("10.96.0.10"), Port: 80, NodePort: 30080, ExternalPolicyLocal: true, AffinityTimeout: time.Minute,
		Backends: []dataplane.Backend{{Addr: addr("10.244.1.2"), Port: 8080, Ready: true, Local: true}}}
	if err := p.Sync(ctx, services(web)); err != nil {
		t.Fatal(err)
	}
	p.Close() // leaves the rules
	if saved := saveIn(t, ns); !strings.Contains(saved, "SKEPT-SVL-") {
		t.Fatalf("rules gone after Close:\n%s", saved)
	}
	if err := netnstest.In(ns, func() error { return Cleanup(ctx, "SKEPT") }); err != nil {
		t.Fatal(err)
	}
	if saved := saveIn(t, ns); strings.Contains(saved, "SKEPT") {
		t.Errorf("after Cleanup, iptables-save still has SKEPT chains or jumps:\n%s", saved)
	}
	// Cleanup of nothing is not an error.
	if err := netnstest.In(ns, func() error { return Cleanup(ctx, "SKEPT") }); err != nil {
		t.Errorf("second Cleanup: %v", err)
	}
}
