package nftables

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/skep-io/skep/agent/dataplane"
	"github.com/skep-io/skep/agent/dataplane/internal/netnstest"
)

// TestEndpointsComingAndGoingNeverHang connects to a Service over and over
// while its only endpoint comes and goes with every sync, each sync an
// incremental one that moves the service between @service-ips and
// @no-endpoint-services: every connection is answered or refused, none is
// left hanging on a table caught half-written.
func TestEndpointsComingAndGoingNeverHang(t *testing.T) {
	ns := netnstest.New(t, "skep-nft", "10.244.1.2")
	netnstest.ServeTCP(t, ns, "10.244.1.2:8080", "backend-a")
	ctx := t.Context()
	p, err := New(ctx, Config{NodeName: "node-1", ClusterCIDR: netip.MustParsePrefix("10.244.0.0/16"),
		ServiceCIDRs:    []netip.Prefix{netip.MustParsePrefix(netnstest.ServiceRange)},
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

	var mu sync.Mutex
	var answered, refused int
	var hung []string
	clientCtx, stopClient := context.WithCancel(ctx)
	clientDone := make(chan struct{})
	go func() {
		defer close(clientDone)
		for clientCtx.Err() == nil {
			var err error
			netnstest.In(ns, func() error {
				var c net.Conn
				if c, err = net.DialTimeout("tcp4", "10.96.0.10:80", 2500*time.Millisecond); err == nil {
					c.Close()
				}
				return nil
			})
			mu.Lock()
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
	for i := range 200 {
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
	t.Logf("while the endpoint came and went 200 times: %d connections answered, %d refused, %d hung", answered, refused, len(hung))
	if len(hung) > 0 || answered == 0 || refused == 0 {
		t.Fatalf("%d connections hung, first %q; want every connection answered or refused, some of each", len(hung), hung[:min(len(hung), 3)])
	}
}
