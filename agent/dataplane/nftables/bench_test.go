package nftables

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/skep-io/skep/agent/dataplane"
	"github.com/skep-io/skep/agent/dataplane/dataplanetest"
	"github.com/skep-io/skep/agent/dataplane/internal/netnstest"
)

// BenchmarkFullSync times programming n services of two backends into an
// empty namespace: one nft transaction of everything.
func BenchmarkFullSync(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			ns := netnstest.New(b, "skep-nft")
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

// BenchmarkPartialSync times one service's backend change among n: its
// chains and nothing else, as kube-proxy writes it.
func BenchmarkPartialSync(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			ns := netnstest.New(b, "skep-nft")
			svcs := dataplanetest.Services(n)
			p, err := New(b.Context(), Config{MinSyncInterval: time.Nanosecond, NetNS: ns})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { p.Close() })
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
		})
	}
}

// BenchmarkGenerate times building a full transaction alone for 10,000
// services.
func BenchmarkGenerate(b *testing.B) {
	l := goldenLayout()
	svcs := normalized(dataplanetest.Services(10000))
	for b.Loop() {
		tx, _ := l.fullSync(newState(), svcs, leftovers{}, t0)
		_ = tx.bytes()
	}
}
