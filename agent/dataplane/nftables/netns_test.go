package nftables

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/skep-io/skep/agent/dataplane"
	"github.com/skep-io/skep/agent/dataplane/internal/netnstest"
)

// nftIn runs nft inside the namespace.
func nftIn(t testing.TB, ns string, args ...string) string {
	t.Helper()
	return netnstest.Run(t, append([]string{"nsenter", "--net=" + ns, "--", "nft"}, args...)...)
}

// ruleHandles lists the handles of a chain's rules: a rule rewritten gets
// a new one, a rule left alone keeps its own.
func ruleHandles(t testing.TB, ns, table, chain string) string {
	t.Helper()
	out := nftIn(t, ns, "-a", "list", "chain", "ip", table, chain)
	return strings.Join(regexp.MustCompile(`# handle (\d+)`).FindAllString(out, -1), ",")
}

func wantAnswer(t *testing.T, ns, target, want string) {
	t.Helper()
	got, err := netnstest.Fetch(ns, target)
	if err != nil || got != want {
		t.Fatalf("connect to %s = %q, %v; want %s", target, got, err, want)
	}
}

func wantRefused(t *testing.T, ns, target string) {
	t.Helper()
	start := time.Now()
	_, err := netnstest.Fetch(ns, target)
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("connect to %s: %v, want connection refused", target, err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("connect to %s took %v, want an immediate refusal", target, d)
	}
}

// TestRealNftables programs a namespace's table with the real nft and
// sends real connections through it.
func TestRealNftables(t *testing.T) {
	ns := netnstest.New(t, "skep-nft", "10.244.1.2", "10.244.1.3")
	netnstest.ServeTCP(t, ns, "10.244.1.2:8080", "backend-a")
	netnstest.ServeTCP(t, ns, "10.244.1.3:8080", "backend-b")
	netnstest.ServeUDP(t, ns, "10.244.1.2:5353", "udp-a")
	netnstest.ServeUDP(t, ns, "10.244.1.3:5353", "udp-b")

	ctx := t.Context()
	p, err := New(ctx, Config{
		NodeName:    "node-1",
		ClusterCIDR: netip.MustParsePrefix("10.244.0.0/16"),
		// As the agent: node ports on the node's address alone
		// (@nodeport-ips); TestRestartRemovesLeftovers has them on every
		// local address (fib daddr type local).
		NodeIPs:         []netip.Addr{addr(netnstest.NodeIP)},
		ServiceCIDRs:    []netip.Prefix{netip.MustParsePrefix(netnstest.ServiceRange)},
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
		ClusterIP: addr("10.96.0.10"), Port: 80, NodePort: 30080, ExternalIPs: []netip.Addr{addr("203.0.113.10")},
		Backends: []dataplane.Backend{backendA}}
	empty := &dataplane.Service{Key: dataplane.ServiceKey{Namespace: "default", Name: "empty", Protocol: dataplane.TCP},
		ClusterIP: addr("10.96.0.11"), Port: 80, NodePort: 30081}
	dns := &dataplane.Service{Key: dataplane.ServiceKey{Namespace: "default", Name: "dns", Port: "dns", Protocol: dataplane.UDP},
		ClusterIP: addr("10.96.0.12"), Port: 53, Backends: []dataplane.Backend{
			{Addr: addr("10.244.1.2"), Port: 5353, Ready: true, Local: true},
		}}
	sticky := &dataplane.Service{Key: dataplane.ServiceKey{Namespace: "default", Name: "sticky", Protocol: dataplane.TCP},
		ClusterIP: addr("10.96.0.13"), Port: 80, AffinityTimeout: time.Hour, Backends: []dataplane.Backend{backendA, backendB}}
	all := func() map[dataplane.ServiceKey]*dataplane.Service { return services(web, empty, dns, sticky) }
	if err := p.Sync(ctx, all()); err != nil {
		t.Fatal(err)
	}

	listing := nftIn(t, ns, "list", "table", "ip", "kube-proxy")
	for _, want := range []string{
		"map service-ips {",
		"map service-nodeports {",
		"map no-endpoint-services {",
		"10.96.0.10 . tcp . 80 : goto " + serviceChain(clusterChainPrefix, web.Key),
		"tcp . 30080 : goto " + serviceChain(externalChainPrefix, web.Key),
		`10.96.0.11 . tcp . 80 comment "default/empty" : goto reject-chain`,
		"numgen random mod 2 vmap",
		"flags dynamic,timeout",
		"dnat to 10.244.1.2:8080",
		"ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports",
		"ct state invalid drop",
	} {
		if !strings.Contains(listing, want) {
			t.Errorf("nft list table lacks %q:\n%s", want, listing)
		}
	}

	t.Run("ClusterIP", func(t *testing.T) { wantAnswer(t, ns, "10.96.0.10:80", "backend-a") })
	t.Run("NodePort", func(t *testing.T) {
		wantAnswer(t, ns, netnstest.NodeIP+":30080", "backend-a")
		// Not on loopback, which is not a node IP.
		if got, err := netnstest.Fetch(ns, "127.0.0.1:30080"); err == nil {
			t.Errorf("node port 30080 answered on 127.0.0.1 (%q); want it on the node IP alone", got)
		}
	})
	t.Run("ExternalIP", func(t *testing.T) { wantAnswer(t, ns, "203.0.113.10:80", "backend-a") })
	t.Run("NoEndpointsRejects", func(t *testing.T) {
		wantRefused(t, ns, "10.96.0.11:80")
		wantRefused(t, ns, netnstest.NodeIP+":30081")
	})
	t.Run("UnknownClusterIPRefused", func(t *testing.T) {
		wantRefused(t, ns, "10.96.5.5:80")  // no service at this address
		wantRefused(t, ns, "10.96.0.10:81") // a service's address, another port
	})
	t.Run("ClientIPAffinity", func(t *testing.T) {
		first, err := netnstest.Fetch(ns, "10.96.0.13:80")
		if err != nil {
			t.Fatal(err)
		}
		for range 20 {
			if got, err := netnstest.Fetch(ns, "10.96.0.13:80"); err != nil || got != first {
				t.Fatalf("with ClientIP affinity the same client got %q, %v after %s", got, err, first)
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
		for _, want := range []*dataplane.Service{web, empty, dns, sticky} {
			s, ok := byKey[want.Key]
			if !ok {
				t.Errorf("Services() lacks %s: %+v", want.Key, got)
				continue
			}
			if s.ClusterIP != want.ClusterIP || s.Port != want.Port || s.NodePort != want.NodePort ||
				!slices.Equal(s.ExternalIPs, want.ExternalIPs) || s.AffinityTimeout != want.AffinityTimeout {
				t.Errorf("Services() %s = %s:%d node port %d external %v affinity %v, want %s:%d node port %d external %v affinity %v",
					want.Key, s.ClusterIP, s.Port, s.NodePort, s.ExternalIPs, s.AffinityTimeout,
					want.ClusterIP, want.Port, want.NodePort, want.ExternalIPs, want.AffinityTimeout)
			}
			var gotEps, wantEps []string
			for _, b := range s.Backends {
				gotEps = append(gotEps, netip.AddrPortFrom(b.Addr, b.Port).String())
			}
			for _, b := range want.ServingBackends() {
				wantEps = append(wantEps, netip.AddrPortFrom(b.Addr, b.Port).String())
			}
			if !slices.Equal(gotEps, wantEps) {
				t.Errorf("Services() %s endpoints = %v, want %v", want.Key, gotEps, wantEps)
			}
		}
	})
	t.Run("PartialSync", func(t *testing.T) {
		// web moves from a to b: only web's chains are rewritten, and a's
		// endpoint chain goes a second later.
		stickyChain := serviceChain(clusterChainPrefix, sticky.Key)
		before := ruleHandles(t, ns, "kube-proxy", stickyChain)
		web2 := *web
		web2.Backends = []dataplane.Backend{backendB}
		web = &web2
		if err := p.Sync(ctx, all()); err != nil {
			t.Fatal(err)
		}
		wantAnswer(t, ns, "10.96.0.10:80", "backend-b")
		if after := ruleHandles(t, ns, "kube-proxy", stickyChain); after != before {
			t.Errorf("a change of web rewrote sticky's chain: rule handles %s, before %s", after, before)
		}
		oldChain := endpointChain(web.Key, netip.MustParseAddrPort("10.244.1.2:8080"))
		netnstest.Eventually(t, "the removed endpoint's chain is deleted", func() error {
			if chains := nftIn(t, ns, "list", "chains", "ip"); strings.Contains(chains, oldChain) {
				return fmt.Errorf("%s is still there", oldChain)
			}
			return nil
		})
	})
	t.Run("UDPConntrackCleared", func(t *testing.T) {
		ask := netnstest.DialUDP(t, ns, "10.96.0.12:53")
		if got, err := ask(); err != nil || got != "udp-a" {
			t.Fatalf("UDP to 10.96.0.12:53 = %q, %v; want udp-a", got, err)
		}
		// The same socket (same 5-tuple) must move to b once a is gone.
		dns2 := *dns
		dns2.Backends = []dataplane.Backend{{Addr: addr("10.244.1.3"), Port: 5353, Ready: true, Local: true}}
		dns = &dns2
		if err := p.Sync(ctx, all()); err != nil {
			t.Fatal(err)
		}
		if got, err := ask(); err != nil || got != "udp-b" {
			t.Fatalf("after removing udp-a, the same UDP socket got %q, %v; want udp-b", got, err)
		}
	})
	t.Run("RepairsDeletedTable", func(t *testing.T) {
		nftIn(t, ns, "delete", "table", "ip", "kube-proxy")
		netnstest.Eventually(t, "ClusterIP answers again after the table check", func() error {
			got, err := netnstest.Fetch(ns, "10.96.0.10:80")
			if err == nil && got != "backend-b" {
				err = fmt.Errorf("answered %q", got)
			}
			return err
		})
	})
	t.Run("Cleanup", func(t *testing.T) {
		// Someone else's table must survive.
		nftIn(t, ns, "add", "table", "ip", "other")
		if err := p.Cleanup(ctx); err != nil {
			t.Fatal(err)
		}
		tables := nftIn(t, ns, "list", "tables")
		if strings.Contains(tables, "kube-proxy") {
			t.Errorf("after Cleanup, nft still lists table kube-proxy:\n%s", tables)
		}
		if !strings.Contains(tables, "table ip other") {
			t.Errorf("Cleanup removed a table it did not make:\n%s", tables)
		}
		if err := p.Sync(ctx, all()); !errors.Is(err, ErrClosed) {
			t.Errorf("Sync after Cleanup = %v, want ErrClosed", err)
		}
	})
}

// TestRestartRemovesLeftovers: a new proxier finds the table an earlier
// one left (Close keeps it, so traffic flows while the agent restarts),
// keeps serving from it, and its first sync removes the chains and sets of
// services that went meanwhile. Then the package-level Cleanup, run inside
// the namespace, deletes the table.
func TestRestartRemovesLeftovers(t *testing.T) {
	ns := netnstest.New(t, "skep-nft", "10.244.1.2")
	netnstest.ServeTCP(t, ns, "10.244.1.2:8080", "backend-a")
	ctx := t.Context()
	cfg := Config{Table: "skep-test", MinSyncInterval: time.Millisecond, NetNS: ns,
		ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix(netnstest.ServiceRange)}}
	be := dataplane.Backend{Addr: addr("10.244.1.2"), Port: 8080, Ready: true, Local: true}
	web := &dataplane.Service{Key: dataplane.ServiceKey{Namespace: "default", Name: "web", Protocol: dataplane.TCP},
		ClusterIP: addr("10.96.0.10"), Port: 80, NodePort: 30080, ExternalPolicyLocal: true, Backends: []dataplane.Backend{be}}
	gone := &dataplane.Service{Key: dataplane.ServiceKey{Namespace: "default", Name: "gone", Protocol: dataplane.TCP},
		ClusterIP: addr("10.96.0.20"), Port: 80, AffinityTimeout: time.Minute, Backends: []dataplane.Backend{be}}

	p, err := New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Sync(ctx, services(web, gone)); err != nil {
		t.Fatal(err)
	}
	p.Close()
	wantAnswer(t, ns, "10.96.0.10:80", "backend-a") // after Close

	p2, err := New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p2.Close() })
	if err := p2.Sync(ctx, services(web)); err != nil {
		t.Fatal(err)
	}
	wantAnswer(t, ns, "10.96.0.10:80", "backend-a")
	wantAnswer(t, ns, netnstest.NodeIP+":30080", "backend-a") // any local address: fib daddr type local
	wantRefused(t, ns, "10.96.0.20:80")
	goneChain := serviceChain(clusterChainPrefix, gone.Key)
	netnstest.Eventually(t, "the gone service's chains and set are deleted", func() error {
		listing := nftIn(t, ns, "list", "table", "ip", "skep-test")
		if strings.Contains(listing, "default/gone") {
			return fmt.Errorf("the table still has %s or its endpoint chain or affinity set:\n%s", goneChain, listing)
		}
		return nil
	})

	p2.Close()
	if err := netnstest.In(ns, func() error { return Cleanup(ctx, "skep-test") }); err != nil {
		t.Fatal(err)
	}
	if tables := nftIn(t, ns, "list", "tables"); strings.Contains(tables, "skep-test") {
		t.Errorf("after Cleanup, nft still lists the table:\n%s", tables)
	}
	// Cleanup of nothing is not an error.
	if err := netnstest.In(ns, func() error { return Cleanup(ctx, "skep-test") }); err != nil {
		t.Errorf("second Cleanup: %v", err)
	}
}

// TestRecoversFromFailedWrite: a transaction that nft refuses (here
// because someone else put an element in our map) changes nothing, Sync
// says so, and the next sync rewrites the table whole, whatever the
// desired state has become meanwhile: a chain the failed write meant to
// make, and the next state no longer wants, is not looked for.
func TestRecoversFromFailedWrite(t *testing.T) {
	ns := netnstest.New(t, "skep-nft", "10.244.1.2", "10.244.1.3")
	netnstest.ServeTCP(t, ns, "10.244.1.2:8080", "backend-a")
	netnstest.ServeTCP(t, ns, "10.244.1.3:8080", "backend-b")
	ctx := t.Context()
	p, err := New(ctx, Config{MinSyncInterval: time.Millisecond, CheckInterval: time.Hour, NetNS: ns,
		ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix(netnstest.ServiceRange)}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	web := &dataplane.Service{Key: dataplane.ServiceKey{Namespace: "default", Name: "web", Protocol: dataplane.TCP},
		ClusterIP: addr("10.96.0.10"), Port: 80,
		Backends: []dataplane.Backend{{Addr: addr("10.244.1.2"), Port: 8080, Ready: true, Local: true}}}
	if err := p.Sync(ctx, services(web)); err != nil {
		t.Fatal(err)
	}

	nftIn(t, ns, "add", "element", "ip", "kube-proxy", "service-nodeports", "{ tcp . 30099 : drop }")
	toB := *web
	toB.NodePort = 30099
	toB.Backends = []dataplane.Backend{{Addr: addr("10.244.1.3"), Port: 8080, Ready: true, Local: true}}
	if err := p.Sync(ctx, services(&toB)); err == nil {
		t.Fatal("Sync with an element of ours taken by someone else succeeded; want nft's refusal")
	}
	wantAnswer(t, ns, "10.96.0.10:80", "backend-a") // the failed write changed nothing

	if err := p.Sync(ctx, services(web)); err != nil {
		t.Fatalf("the full sync after a failed write: %v", err)
	}
	wantAnswer(t, ns, "10.96.0.10:80", "backend-a")
	if err := p.Sync(ctx, services(&toB)); err != nil {
		t.Fatalf("the same change once the table is ours again: %v", err)
	}
	wantAnswer(t, ns, "10.96.0.10:80", "backend-b")
	wantAnswer(t, ns, netnstest.NodeIP+":30099", "backend-b")
}

// TestRemakesBaseChains: a table whose base chains an earlier version made
// with another priority (which nft cannot change in place) is taken over
// by a new proxier's first sync.
func TestRemakesBaseChains(t *testing.T) {
	ns := netnstest.New(t, "skep-nft", "10.244.1.2")
	netnstest.ServeTCP(t, ns, "10.244.1.2:8080", "backend-a")
	nftIn(t, ns, "add", "table", "ip", "kube-proxy")
	nftIn(t, ns, "add", "chain", "ip", "kube-proxy", "nat-output", "{ type nat hook output priority 0 ; }")
	nftIn(t, ns, "add", "rule", "ip", "kube-proxy", "nat-output", "counter")
	ctx := t.Context()
	p, err := New(ctx, Config{MinSyncInterval: time.Millisecond, NetNS: ns})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	web := &dataplane.Service{Key: dataplane.ServiceKey{Namespace: "default", Name: "web", Protocol: dataplane.TCP},
		ClusterIP: addr("10.96.0.10"), Port: 80,
		Backends: []dataplane.Backend{{Addr: addr("10.244.1.2"), Port: 8080, Ready: true, Local: true}}}
	if err := p.Sync(ctx, services(web)); err != nil {
		t.Fatal(err)
	}
	wantAnswer(t, ns, "10.96.0.10:80", "backend-a")
	if chain := nftIn(t, ns, "list", "chain", "ip", "kube-proxy", "nat-output"); !strings.Contains(chain, "priority dstnat") && !strings.Contains(chain, "priority -100") {
		t.Errorf("nat-output after the first sync:\n%s\nwant priority dstnat (-100)", chain)
	}
}

// TestReadBackOverall writes the golden full transaction with the real nft
// and reads every service port back from the kernel's listing: addresses,
// node port, policy, affinity, serving endpoints and, under Local policy,
// which are local. (External and load balancer addresses come back as
// one list: the maps do not tell them apart.)
func TestReadBackOverall(t *testing.T) {
	ns := netnstest.New(t, "skep-nft")
	want := normalized(overallServices())
	tx, _ := goldenLayout().fullSync(newState(), want, leftovers{}, t0)
	if err := (runner{netns: ns}).apply(t.Context(), tx.bytes()); err != nil {
		t.Fatal(err)
	}
	p := newProxier(Config{NodeName: "node-1"}, runner{netns: ns})
	got, err := p.Services(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Errorf("read back %d service ports, want %d: %+v", len(got), len(want), got)
	}
	for _, g := range got {
		w := want[g.Key]
		if w == nil {
			t.Errorf("read back %s, which was not written", g.Key)
			continue
		}
		external := slices.Concat(w.ExternalIPs, w.LoadBalancerIPs)
		slices.SortFunc(external, netip.Addr.Compare)
		gotExternal := slices.Clone(g.ExternalIPs)
		slices.SortFunc(gotExternal, netip.Addr.Compare)
		if g.ClusterIP != w.ClusterIP || g.Port != w.Port || g.NodePort != w.NodePort || !slices.Equal(gotExternal, external) ||
			g.AffinityTimeout != w.AffinityTimeout {
			t.Errorf("%s read back as %s:%d node port %d external %v affinity %v; want %s:%d node port %d external %v affinity %v",
				g.Key, g.ClusterIP, g.Port, g.NodePort, gotExternal, g.AffinityTimeout, w.ClusterIP, w.Port, w.NodePort, external, w.AffinityTimeout)
		}
		// Local policy shows only where there is a local endpoint to
		// lead to, or the short cuts of an external chain.
		if w.ExternalPolicyLocal != g.ExternalPolicyLocal && len(w.ServingBackends()) > 0 {
			t.Errorf("%s read back with Local policy %v, want %v", g.Key, g.ExternalPolicyLocal, w.ExternalPolicyLocal)
		}
		var gotEps, wantEps []string
		for _, b := range g.Backends {
			gotEps = append(gotEps, fmt.Sprintf("%s local=%v", netip.AddrPortFrom(b.Addr, b.Port), b.Local))
		}
		for _, b := range w.ServingBackends() {
			gotLocal := b.Local && w.ExternalPolicyLocal // only a local chain tells
			wantEps = append(wantEps, fmt.Sprintf("%s local=%v", netip.AddrPortFrom(b.Addr, b.Port), gotLocal))
		}
		if !slices.Equal(gotEps, wantEps) {
			t.Errorf("%s endpoints read back as %v, want %v", g.Key, gotEps, wantEps)
		}
	}
}
