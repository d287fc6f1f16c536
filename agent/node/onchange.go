package node

import (
	"context"
	"time"

	"github.com/skep-io/skep/controlplane/api"
	"github.com/skep-io/skep/controlplane/client"
)

// retryFailedSync is how soon a sync that failed runs again.
const retryFailedSync = time.Second

// kicker wakes a sync loop (run) when what it syncs from changed. It holds
// one wake-up: any number of kicks during a run make one more run.
type kicker chan struct{}

func newKicker() kicker { return make(kicker, 1) }

func (k kicker) kick() {
	select {
	case k <- struct{}{}:
	default:
	}
}

// handlers kick on every event of an informer.
func (k kicker) handlers() client.Handlers {
	return client.Handlers{OnAdd: func(api.Object) { k.kick() }, OnUpdate: func(_, _ api.Object) { k.kick() }, OnDelete: func(api.Object) { k.kick() }}
}

// run calls sync once the informers hold their first list (so a restart
// never acts on half the data), then after each kick and every resync,
// until ctx ends; sync's argument is true on the first run and when the
// resync period brought the run. There is no waiting for a burst to
// settle: a change is acted on at once, and what arrives during a run is
// taken in by the next one, so a burst costs a run per run's duration. A
// run that fails is tried again after retryFailedSync; sync reports its
// own errors.
func (k kicker) run(ctx context.Context, resync time.Duration, sync func(resync bool) error, informers ...*client.Informer) {
	if !client.WaitForSync(ctx, informers...) {
		return
	}
	ticker := time.NewTicker(resync)
	defer ticker.Stop()
	resynced := true
	for {
		if err := sync(resynced); err != nil {
			time.AfterFunc(retryFailedSync, k.kick)
		}
		resynced = false
		select {
		case <-ctx.Done():
			return
		case <-k:
		case <-ticker.C:
			resynced = true
		}
	}
}
