// Package proxier is the sync loop the rule-writing dataplanes (iptables,
// nftables) share, as kube-proxy's iptables and nftables proxiers share
// theirs: Sync records the desired state and waits for the write that
// carries it; writes come no closer together than MinSyncInterval; a full
// sync comes at start, after a failure, when the periodic check finds the
// rules gone, and every FullSyncInterval; a failed write is retried; UDP
// conntrack entries a change leaves stale are cleared after the write.
// What a write is stays with each dataplane, behind Dataplane.
package proxier

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/skep-io/skep/agent/dataplane"
	"github.com/skep-io/skep/agent/dataplane/internal/changes"
)

// Dataplane is what one mode writes. Its methods are called from the loop
// only, one at a time; Rewrite and Write with the loop's lock held.
type Dataplane interface {
	// Rewrite reports whether snap calls for a full sync by itself (the
	// iptables mode's switch between commented and bare rules).
	Rewrite(snap changes.Snapshot) bool
	// Write programs snap: every rule when full, else the changed
	// services'. start is when the sync began.
	Write(ctx context.Context, snap changes.Snapshot, full bool, start time.Time) (Result, error)
	// Gone reports whether the periodic check finds the programmed rules
	// removed by someone else (logging what it found), so that a full sync
	// writes them again.
	Gone(ctx context.Context) bool
}

// Housekeeper is a Dataplane with deferred work of its own (the nftables
// mode deletes flushed chains a while after flushing them).
type Housekeeper interface {
	// HousekeepingDelay says, after a sync, how long until deferred work
	// is due; 0: none is pending.
	HousekeepingDelay() time.Duration
	// Housekeep does the deferred work that is due and says when to come
	// back; 0: none is left.
	Housekeep(ctx context.Context) time.Duration
}

// Result is what a successful Write reports.
type Result struct {
	// FullSyncAgain asks for another full sync at once.
	FullSyncAgain bool
	// Attrs go into the "synced" log line after the counts of services
	// and changes.
	Attrs []any
}

// Config configures a Loop.
type Config struct {
	// Mode names the rules in log lines: "iptables", "nftables".
	Mode             string
	Logger           *slog.Logger
	MinSyncInterval  time.Duration
	CheckInterval    time.Duration
	FullSyncInterval time.Duration
	// Closed is what Sync returns once the loop has stopped.
	Closed error
}

// Loop runs one dataplane's syncs.
type Loop struct {
	cfg     Config
	dp      Dataplane
	tracker *changes.Tracker
	waiters *changes.Waiters // Sync waits for the sync that carries its generation
	nl      *netlink.Handle  // for stale conntrack entries; nil: none are cleared

	// mu is held through a sync; it guards the fields below.
	mu           sync.Mutex
	needFullSync bool
	lastFullSync time.Time

	kick    chan struct{} // asks the loop for a sync
	cancel  context.CancelFunc
	stopped chan struct{} // closed when the loop has returned

	initOnce sync.Once
	inited   chan struct{} // closed by the first Sync: nothing is written before a full list
}

// New builds a Loop without starting it; the first sync is a full one.
// Intervals left 0 are kube-proxy's defaults: MinSyncInterval 1s
// (--iptables-min-sync-period, --nftables-min-sync-period), CheckInterval
// 30s (--iptables-sync-period, --nftables-sync-period), FullSyncInterval 1h
// (its FullSyncPeriod).
func New(cfg Config, dp Dataplane) *Loop {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MinSyncInterval == 0 {
		cfg.MinSyncInterval = time.Second
	}
	if cfg.CheckInterval == 0 {
		cfg.CheckInterval = 30 * time.Second
	}
	if cfg.FullSyncInterval == 0 {
		cfg.FullSyncInterval = time.Hour
	}
	return &Loop{
		cfg:          cfg,
		dp:           dp,
		tracker:      changes.NewTracker(),
		waiters:      changes.NewWaiters(),
		needFullSync: true,
		kick:         make(chan struct{}, 1),
		stopped:      make(chan struct{}),
		inited:       make(chan struct{}),
	}
}

// CheckIPv4 says which of the addresses a mode is configured with is not
// IPv4, the only family the rule-writing modes carry.
func CheckIPv4(nodeIPs []netip.Addr, clusterCIDR netip.Prefix, serviceCIDRs []netip.Prefix) error {
	for _, ip := range nodeIPs {
		if !ip.Is4() {
			return fmt.Errorf("node IP %s: only IPv4 is carried", ip)
		}
	}
	if clusterCIDR.IsValid() && !clusterCIDR.Addr().Is4() {
		return fmt.Errorf("cluster CIDR %s: only IPv4 is carried", clusterCIDR)
	}
	for _, cidr := range serviceCIDRs {
		if !cidr.IsValid() || !cidr.Addr().Is4() {
			return fmt.Errorf("service CIDR %s: want an IPv4 prefix", cidr)
		}
	}
	return nil
}

// Tracker is the tracker Sync records into.
func (l *Loop) Tracker() *changes.Tracker { return l.tracker }

// Start starts the loop, which runs until ctx ends or Close. nl is the
// netlink handle stale conntrack entries are deleted through; Close closes it.
func (l *Loop) Start(ctx context.Context, nl *netlink.Handle) {
	l.nl = nl
	loopCtx, cancel := context.WithCancel(ctx)
	l.cancel = cancel
	go l.run(loopCtx)
}

// Sync records the desired state and returns once a write carrying it has
// been made (or failed). Calls that arrive while a write waits for
// MinSyncInterval are carried by the same write.
func (l *Loop) Sync(ctx context.Context, services map[dataplane.ServiceKey]*dataplane.Service) error {
	gen := l.tracker.Update(services)
	l.initOnce.Do(func() { close(l.inited) })
	l.poke()
	return l.waiters.Wait(ctx, gen, l.stopped, l.cfg.Closed)
}

// Apply records a change of some service ports (nil: removed) and returns
// once a write carrying it has been made (or failed). The write is a
// partial one unless a full sync is due. Before the first Sync there is no
// complete state to change: it returns dataplane.ErrNeedFullSync.
func (l *Loop) Apply(ctx context.Context, changed map[dataplane.ServiceKey]*dataplane.Service) error {
	select {
	case <-l.inited:
	default:
		return dataplane.ErrNeedFullSync
	}
	gen := l.tracker.Apply(changed)
	l.poke()
	return l.waiters.Wait(ctx, gen, l.stopped, l.cfg.Closed)
}

func (l *Loop) poke() {
	select {
	case l.kick <- struct{}{}:
	default: // a sync is already asked for; it will take this state
	}
}

// Close stops the loop, if it was started, and closes the netlink handle.
func (l *Loop) Close() {
	if l.cancel != nil {
		l.cancel()
		<-l.stopped
	}
	if l.nl != nil {
		l.nl.Close()
		l.nl = nil
	}
}

// run runs syncs when asked, no closer together than MinSyncInterval, a
// full one when the rules disappear or FullSyncInterval passes, retries
// after a failure, and the dataplane's housekeeping when it is due.
func (l *Loop) run(ctx context.Context) {
	defer close(l.stopped)
	select {
	case <-l.inited:
	case <-ctx.Done():
		return
	}
	hk, _ := l.dp.(Housekeeper)
	check := time.NewTicker(l.cfg.CheckInterval)
	defer check.Stop()
	var retry, housekeeping <-chan time.Time
	var last time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-l.kick:
		case <-retry:
		case <-housekeeping:
			housekeeping = after(hk.Housekeep(ctx))
			continue
		case <-check.C:
			if !l.fullSyncDue(ctx) {
				continue
			}
		}
		if wait := l.cfg.MinSyncInterval - time.Since(last); wait > 0 {
			select {
			case <-time.After(wait):
			case <-ctx.Done():
				return
			}
		}
		last = time.Now()
		if err := l.syncOnce(ctx); err != nil {
			l.cfg.Logger.Error("sync "+l.cfg.Mode+" rules", "err", err)
			retry = time.After(max(l.cfg.MinSyncInterval, 2*time.Second))
		} else {
			retry = nil
		}
		if housekeeping == nil && hk != nil {
			housekeeping = after(hk.HousekeepingDelay())
		}
	}
}

// after is time.After, or nil (a channel that never fires) for 0.
func after(d time.Duration) <-chan time.Time {
	if d == 0 {
		return nil
	}
	return time.After(d)
}

// fullSyncDue reports whether the periodic check calls for a full sync: it
// is time for one, or the rules are gone.
func (l *Loop) fullSyncDue(ctx context.Context) bool {
	l.mu.Lock()
	due := l.needFullSync || time.Since(l.lastFullSync) >= l.cfg.FullSyncInterval
	l.mu.Unlock()
	if due {
		return true
	}
	if !l.dp.Gone(ctx) {
		return false
	}
	l.mu.Lock()
	l.needFullSync = true
	l.mu.Unlock()
	return true
}

// syncOnce writes what changed, or everything on a full sync.
func (l *Loop) syncOnce(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	start := time.Now()
	snap := l.tracker.Snapshot()
	full := l.needFullSync || time.Since(l.lastFullSync) >= l.cfg.FullSyncInterval
	full = full || l.dp.Rewrite(snap)
	if !full && len(snap.Changes) == 0 {
		l.waiters.Publish(snap.Gen, nil)
		return nil
	}

	res, err := l.dp.Write(ctx, snap, full, start)
	if err != nil {
		// The kernel may hold part of what was meant; only a full sync
		// can say what it holds afterwards.
		l.needFullSync = true
		err = fmt.Errorf("write rules: %w", err)
		l.waiters.Publish(snap.Gen, err)
		return err
	}
	l.needFullSync = res.FullSyncAgain
	if res.FullSyncAgain {
		l.poke()
	}
	if full {
		l.lastFullSync = time.Now()
	}
	l.tracker.Applied(snap)
	attrs := append([]any{"full", full, "services", len(snap.Services), "changed", len(snap.Changes)}, res.Attrs...)
	l.cfg.Logger.Info("synced "+l.cfg.Mode+" rules", append(attrs, "elapsed", time.Since(start))...)

	// After the rules, so that new flows can no longer pick the removed
	// endpoints when their old entries go; before Sync returns, so that
	// its caller sees the change whole.
	if n, err := changes.ClearStaleConntrack(l.nl, snap.Changes); err != nil {
		l.cfg.Logger.Warn("clear stale UDP conntrack entries", "err", err)
	} else if n > 0 {
		l.cfg.Logger.Debug("deleted stale UDP conntrack entries", "count", n)
	}
	if res.FullSyncAgain {
		// The write is not what the state asks for yet; those waiting for
		// it are answered by the full sync that follows at once.
		return nil
	}
	l.waiters.Publish(snap.Gen, nil)
	return nil
}
