package nftables

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/skep-io/skep/agent/dataplane/dataplanetest"
	"github.com/skep-io/skep/agent/dataplane/internal/netnstest"
)

func benchProxier(ctx context.Context, ns string) (netnstest.Proxier, error) {
	return New(ctx, Config{MinSyncInterval: time.Nanosecond, NetNS: ns})
}

// BenchmarkFullSync times programming n services of two backends into an
// empty namespace: one nft transaction of everything.
func BenchmarkFullSync(b *testing.B) {
	netnstest.BenchFullSync(b, "skep-nft", benchProxier)
}

// BenchmarkPartialSync times one service's backend change among n: its
// chains and nothing else, as kube-proxy writes it.
func BenchmarkPartialSync(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			p, err := benchProxier(b.Context(), netnstest.New(b, "skep-nft"))
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { p.Close() })
			netnstest.BenchPartialSync(b, p, n)
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
