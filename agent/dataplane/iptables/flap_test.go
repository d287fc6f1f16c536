package iptables

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/skep-io/skep/agent/dataplane"
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
	with := &dataplane.Service{Key: dataplane.ServiceKey{Namespace: "default", Name: "web", Protocol: dataplane.TCP},
		ClusterIP: addr("10.96.0.10"), Port: 80,
		Backends: []dataplane.Backend{{Addr: addr("10.244.1.2"), Port: 8080, Ready: true, Local: true}}}
	without := &dataplane.Service{Key: with.Key, ClusterIP: with.ClusterIP, Port: with.Port}
	if err := p.Sync(ctx, services(with)); err != nil {
		t.Fatal(err)
	}

	// A lost SYN is sent again after 1 s, and after 3 s more: a connect that
	// is still waiting at 2.5 s lost two, the second one to a stale entry.
	var mu sync.Mutex
	var answered, refused, retried int
	var hung []string
	clientCtx, stopClient := context.WithCancel(ctx)
	clientDone := make(chan struct{})
	go func() {
		defer close(clientDone)
		for clientCtx.Err() == nil {
			start := time.Now()
			var err error
			netnstest.In(ns, func() error {
				var c net.Conn
				if c, err = net.DialTimeout("tcp4", "10.96.0.10:80", 2500*time.Millisecond); err == nil {
					c.Close()
				}
				return nil
			})
			mu.Lock()
			if time.Since(start) > 500*time.Millisecond && err == nil {
				retried++
			}
			switch {
			case err == nil:
				answered++
			case errors.Is(err, syscall.ECONNREFUSED):
				refused++
			default:
				hung = append(hung, err.Error())
			}
			mu.Unlock()
		}
	}()
	for i := range 300 {
		s := without
		if i%2 == 1 {
			s = with
		}
		if err := p.Sync(ctx, services(s)); err != nil {
			stopClient()
			t.Fatal(err)
		}
	}
	stopClient()
	<-clientDone
	t.Logf("while the endpoint came and went 300 times: %d connections answered (%d after a lost SYN), %d refused, %d hung",
		answered, retried, refused, len(hung))
	if len(hung) > 0 || answered == 0 || refused == 0 {
		t.Fatalf("%d connections hung, first %q; want every connection answered or refused, some of each", len(hung), hung[:min(len(hung), 3)])
	}
}
