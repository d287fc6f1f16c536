package node

import (
	"context"
	"time"

	"github.com/skep-io/skep/controlplane/api"
	"github.com/skep-io/skep/controlplane/client"
)

// retryFailedSync is how soon a sync that failed runs again.
const retryFailedSync = time.Second

// syncOnChange runs sync once the informers hold their first list (so a
// restart never acts on half the data), then after each change to them
// and at the latest resync after the last run, until ctx ends. There is
// no waiting for a burst to settle: a change is acted on at once, and what
// arrives during a run is taken in by the next one (one wake-up is held),
// so a burst costs a run per run's duration. A run that fails is tried
// again after retryFailedSync; sync reports its own errors.
func syncOnChange(ctx context.Context, resync time.Duration, sync func() error, informers ...*client.Informer) {
	kick := make(chan struct{}, 1)
	poke := func() {
		select {
		case kick <- struct{}{}:
		default:
		}
	}
	h := client.Handlers{OnAdd: func(api.Object) { poke() }, OnUpdate: func(_, _ api.Object) { poke() }, OnDelete: func(api.Object) { poke() }}
	for _, inf := range informers {
		inf.AddHandlers(h)
	}
	if !client.WaitForSync(ctx, informers...) {
		return
	}
	timer := time.NewTimer(resync)
	defer timer.Stop()
	for {
		if err := sync(); err != nil {
			time.AfterFunc(retryFailedSync, poke)
		}
		timer.Reset(resync)
		select {
		case <-ctx.Done():
			return
		case <-kick:
		case <-timer.C:
		}
	}
}
