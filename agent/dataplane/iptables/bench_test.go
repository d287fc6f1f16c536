package iptables

import (
	"context"
	"testing"
	"time"

	"github.com/skep-io/skep/agent/dataplane/dataplanetest"
	"github.com/skep-io/skep/agent/dataplane/internal/netnstest"
)

func benchProxier(ctx context.Context, ns string) (netnstest.Proxier, error) {
	return New(ctx, Config{MinSyncInterval: time.Nanosecond, NetNS: ns})
}

// BenchmarkFullSync times programming n services of two backends into
// empty tables: one iptables-restore of everything, plus the jumps.
func BenchmarkFullSync(b *testing.B) {
	netnstest.BenchFullSync(b, "skep-ipt", benchProxier)
}

// BenchmarkPartialSync times one service's backend change among 10,000:
// its SVC and SEP chains plus the entry chains, as kube-proxy writes it.
func BenchmarkPartialSync(b *testing.B) {
	p, err := benchProxier(b.Context(), testNetns(b))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { p.Close() })
	netnstest.BenchPartialSync(b, p, 10000)
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
