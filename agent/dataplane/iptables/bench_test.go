package iptables

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/skep-io/skep/agent/dataplane"
	"github.com/skep-io/skep/agent/dataplane/dataplanetest"
)

// BenchmarkFullSync times programming n services of two backends into
// empty tables: one iptables-restore of everything, plus the jumps.
func BenchmarkFullSync(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			ns := testNetns(b)
			svcs := dataplanetest.Services(n)
			for b.Loop() {
				b.StopTimer()
				p, err := New(b.Context(), Config{MinSyncInterval: time.Nanosecond, NetNS: ns})
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

// BenchmarkPartialSync times one service's backend change among 10,000:
// its SVC and SEP chains plus the entry chains, as kube-proxy writes it.
func BenchmarkPartialSync(b *testing.B) {
	ns := testNetns(b)
	svcs := dataplanetest.Services(10000)
	p, err := New(b.Context(), Config{MinSyncInterval: time.Nanosecond, NetNS: ns})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { p.Close() })
	if err := p.Sync(b.Context(), svcs); err != nil {
		b.Fatal(err)
	}
	k := dataplanetest.Key(5000)
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

// BenchmarkGenerate times building the payload alone for 10,000 services.
func BenchmarkGenerate(b *testing.B) {
	p := goldenProxier()
	p.tracker.Update(dataplanetest.Services(10000))
	snap := p.tracker.Snapshot()
	for b.Loop() {
		pl := p.layout.generate(request{services: snap.Services, comments: false})
		_ = pl.bytes(nil)
	}
}
