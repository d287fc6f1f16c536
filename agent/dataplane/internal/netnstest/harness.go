package netnstest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/skep-io/skep/agent/dataplane"
	"github.com/skep-io/skep/agent/dataplane/dataplanetest"
)

// Proxier is what the harnesses drive: either mode's Proxier.
type Proxier interface {
	Sync(ctx context.Context, services map[dataplane.ServiceKey]*dataplane.Service) error
	Close() error
	Cleanup(ctx context.Context) error
}

// NewProxier starts a proxier that programs the namespace at ns and writes
// at once (MinSyncInterval of a nanosecond), as benchmarks want.
type NewProxier func(ctx context.Context, ns string) (Proxier, error)

// DialUDP connects a UDP socket to addr from inside ns and returns ask,
// which sends one datagram and reads the answer within a second. The
// socket keeps its 5-tuple, so a test sees what its conntrack entry does.
func DialUDP(t *testing.T, ns, addr string) (ask func() (string, error)) {
	t.Helper()
	var conn net.Conn
	if err := In(ns, func() (err error) { conn, err = net.Dial("udp4", addr); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return func() (string, error) {
		conn.SetDeadline(time.Now().Add(time.Second))
		if _, err := conn.Write([]byte("?")); err != nil {
			return "", err
		}
		b := make([]byte, 16)
		n, err := conn.Read(b)
		return string(b[:n]), err
	}
}

// NeverHang connects to 10.96.0.10:80 over and over from inside ns while
// write takes its only endpoint (10.244.1.2:8080, which the caller serves)
// away and back flaps times, and fails the test unless every connection
// was answered or refused, some of each: none may hang on rules caught
// half-written.
func NeverHang(t *testing.T, ns string, flaps int, write func(context.Context, map[dataplane.ServiceKey]*dataplane.Service) error) {
	t.Helper()
	ctx := t.Context()
	with := &dataplane.Service{Key: dataplane.ServiceKey{Namespace: "default", Name: "web", Protocol: dataplane.TCP},
		ClusterIP: netip.MustParseAddr("10.96.0.10"), Port: 80,
		Backends: []dataplane.Backend{{Addr: netip.MustParseAddr("10.244.1.2"), Port: 8080, Ready: true, Local: true}}}
	without := &dataplane.Service{Key: with.Key, ClusterIP: with.ClusterIP, Port: with.Port}
	one := func(s *dataplane.Service) map[dataplane.ServiceKey]*dataplane.Service {
		return map[dataplane.ServiceKey]*dataplane.Service{s.Key: s}
	}
	if err := write(ctx, one(with)); err != nil {
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
			In(ns, func() error {
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
	for i := range flaps {
		s := without
		if i%2 == 1 {
			s = with
		}
		if err := write(ctx, one(s)); err != nil {
			stopClient()
			t.Fatal(err)
		}
	}
	stopClient()
	<-clientDone
	t.Logf("while the endpoint came and went %d times: %d connections answered (%d after a lost SYN), %d refused, %d hung",
		flaps, answered, retried, refused, len(hung))
	if len(hung) > 0 || answered == 0 || refused == 0 {
		t.Fatalf("%d connections hung, first %q; want every connection answered or refused, some of each", len(hung), hung[:min(len(hung), 3)])
	}
}

// BenchFullSync times programming n services of two backends (1,000 and
// 10,000) into an empty namespace made with New(b, prefix): one proxier's
// first sync, which it cleans up after.
func BenchFullSync(b *testing.B, prefix string, newProxier NewProxier) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			ns := New(b, prefix)
			svcs := dataplanetest.Services(n)
			for b.Loop() {
				b.StopTimer()
				p, err := newProxier(b.Context(), ns)
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				if err := p.Sync(b.Context(), svcs); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				if err := p.Cleanup(b.Context()); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
		})
	}
}

// BenchPartialSync times one service's backend change among n services
// programmed by p.
func BenchPartialSync(b *testing.B, p Proxier, n int) {
	svcs := dataplanetest.Services(n)
	if err := p.Sync(b.Context(), svcs); err != nil {
		b.Fatal(err)
	}
	k := dataplanetest.Key(n / 2)
	orig := *svcs[k]
	i := 0
	for b.Loop() {
		changed := orig
		changed.Backends = []dataplane.Backend{orig.Backends[0], {Addr: netip.AddrFrom4([4]byte{10, 246, byte(i >> 8), byte(i)}), Port: 8080, Ready: true}}
		i++
		svcs[k] = &changed
		if err := p.Sync(b.Context(), svcs); err != nil {
			b.Fatal(err)
		}
	}
}
