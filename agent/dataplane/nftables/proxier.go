// Package nftables is skep's nftables dataplane: kube-proxy's nftables
// mode behind the dataplane.Dataplane interface, so that benchmarks against
// the eBPF dataplane compare with what Kubernetes recommends now.
//
// Everything lives in one table, `ip kube-proxy`, laid out as kube-proxy
// lays it out: the service-ips and service-nodeports verdict maps lead to
// per-service chains, which choose an endpoint chain with `numgen random`;
// services without endpoints are in the no-endpoint maps, which reject.
// Each sync is one `nft -f -` transaction, atomic in the kernel. A full
// sync (at start, after a failure, every FullSyncInterval) rewrites the
// table; otherwise only the elements and chains of the service ports that
// changed are written.
//
// Writing through the nft program rather than a Go netlink library: the
// transaction is text that golden tests can read and that a user can feed
// to `nft -c -f` by hand; it is what kube-proxy itself does (through
// knftables, which also runs nft); and nft's parser turns `numgen random
// mod N vmap { ... }` and concatenated map keys into the kernel's
// expressions, which a netlink library makes the caller build by hand.
package nftables

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/skep-io/skep/agent/dataplane"
	"github.com/skep-io/skep/agent/dataplane/internal/changes"
)

// Config configures a Proxier.
type Config struct {
	NodeName string
	// NodeIPs are the addresses node ports answer on. Empty: every local
	// address except loopback (`fib daddr type local`, kube-proxy's
	// default); set: only these (kube-proxy's --nodeport-addresses).
	NodeIPs []netip.Addr
	// ClusterCIDR is the pod network, as kube-proxy's --cluster-cidr:
	// traffic to a ClusterIP from outside it is masqueraded, pods reaching
	// a Local service's external address take the Cluster path. Unset:
	// neither rule is written.
	ClusterCIDR netip.Prefix
	// ServiceCIDRs are the ranges ClusterIPs are given from. Traffic to them
	// that no service translated is refused. Unset: no such rule.
	ServiceCIDRs []netip.Prefix
	// Table is the name of the ip-family table; default DefaultTable.
	Table  string
	Logger *slog.Logger
	// MinSyncInterval is the least time between two writes: changes that
	// arrive closer together are written as one. Default 1s (kube-proxy's
	// --nftables-min-sync-period).
	MinSyncInterval time.Duration
	// CheckInterval is how often the table's presence is checked; if
	// someone deleted it, a full sync writes it again. Default 30s
	// (kube-proxy's --nftables-sync-period).
	CheckInterval time.Duration
	// FullSyncInterval is how often the whole table is rewritten even when
	// nothing is seen missing. Default 1h (kube-proxy's FullSyncPeriod).
	FullSyncInterval time.Duration
	// NetNS is the path of a network namespace (/run/netns/NAME) to program
	// instead of the caller's own. Tests use it.
	NetNS string
}

// staleChainDelay is how long a flushed chain waits before it is deleted,
// kube-proxy's: long enough for kernels before 6.2 to drop the references
// of the map elements deleted with it.
const staleChainDelay = time.Second

// Proxier programs services as kube-proxy's nftables mode does.
type Proxier struct {
	cfg     Config
	log     *slog.Logger
	nft     runner
	layout  layout
	tracker *changes.Tracker
	nl      *netlink.Handle

	// mu is held through a sync; it guards the fields below.
	mu           sync.Mutex
	state        *state
	needFullSync bool
	lastFullSync time.Time

	kick    chan struct{} // asks the loop for a sync
	cancel  context.CancelFunc
	stopped chan struct{} // closed when the loop has returned

	waiters *changes.Waiters // Sync waits for the sync that carries its generation

	initOnce sync.Once
	inited   chan struct{} // closed by the first Sync: nothing is written before a full list
}

var _ dataplane.Dataplane = (*Proxier)(nil)

// ErrClosed is returned by Sync after Close, or after New's ctx ended.
var ErrClosed = errors.New("nftables proxier closed")

// New checks the configuration and that nft runs, and starts the sync
// loop, which runs until ctx ends or Close. Nothing is written before the
// first Sync.
func New(ctx context.Context, cfg Config) (*Proxier, error) {
	cfg, err := withDefaults(cfg)
	if err != nil {
		return nil, err
	}
	nft := runner{netns: cfg.NetNS}
	if _, err := nft.run(ctx, nil, "--version"); err != nil {
		return nil, fmt.Errorf("find nft (Debian package nftables): %w", err)
	}
	nl, err := changes.NetlinkHandle(cfg.NetNS)
	if err != nil {
		return nil, err
	}
	p := newProxier(cfg, nft)
	p.nl = nl
	p.layout.dropInvalid = !changes.ConntrackLiberal(ctx, cfg.NetNS)
	loopCtx, cancel := context.WithCancel(ctx)
	p.cancel = cancel
	go p.loop(loopCtx)
	return p, nil
}

// withDefaults fills in defaults and says what is wrong with cfg.
func withDefaults(cfg Config) (Config, error) {
	if cfg.Table == "" {
		cfg.Table = DefaultTable
	}
	if err := validTable(cfg.Table); err != nil {
		return cfg, err
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
	for _, ip := range cfg.NodeIPs {
		if !ip.Is4() {
			return cfg, fmt.Errorf("node IP %s: only IPv4 is carried", ip)
		}
	}
	if cfg.ClusterCIDR.IsValid() && !cfg.ClusterCIDR.Addr().Is4() {
		return cfg, fmt.Errorf("cluster CIDR %s: only IPv4 is carried", cfg.ClusterCIDR)
	}
	for _, cidr := range cfg.ServiceCIDRs {
		if !cidr.IsValid() || !cidr.Addr().Is4() {
			return cfg, fmt.Errorf("service CIDR %s: want an IPv4 prefix", cidr)
		}
	}
	return cfg, nil
}

// newProxier builds a Proxier without starting anything (tests use it to
// generate transactions).
func newProxier(cfg Config, nft runner) *Proxier {
	if cfg.Table == "" {
		cfg.Table = DefaultTable
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Proxier{
		cfg: cfg,
		log: cfg.Logger.With("dataplane", "nftables", "node", cfg.NodeName),
		nft: nft,
		layout: layout{
			table:        cfg.Table,
			clusterCIDR:  cfg.ClusterCIDR.Masked(),
			serviceCIDRs: cfg.ServiceCIDRs,
			nodeIPs:      cfg.NodeIPs,
			dropInvalid:  true,
		},
		tracker:      changes.NewTracker(),
		state:        newState(),
		needFullSync: true,
		kick:         make(chan struct{}, 1),
		stopped:      make(chan struct{}),
		waiters:      changes.NewWaiters(),
		inited:       make(chan struct{}),
	}
}

// Sync records the desired state and returns once a write carrying it has
// been made (or failed). Calls that arrive while a write waits for
// MinSyncInterval are carried by the same write.
func (p *Proxier) Sync(ctx context.Context, services map[dataplane.ServiceKey]*dataplane.Service) error {
	gen := p.tracker.Update(services)
	p.initOnce.Do(func() { close(p.inited) })
	p.poke()
	return p.waiters.Wait(ctx, gen, p.stopped, ErrClosed)
}

func (p *Proxier) poke() {
	select {
	case p.kick <- struct{}{}:
	default: // a sync is already asked for; it will take this state
	}
}

// loop runs syncs when asked, no closer together than MinSyncInterval, a
// full one when the table disappears or FullSyncInterval passes, retries
// after a failure, and deletes flushed chains once they may go.
func (p *Proxier) loop(ctx context.Context) {
	defer close(p.stopped)
	select {
	case <-p.inited:
	case <-ctx.Done():
		return
	}
	check := time.NewTicker(p.cfg.CheckInterval)
	defer check.Stop()
	var retry, housekeeping <-chan time.Time
	var last time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.kick:
		case <-retry:
		case <-housekeeping:
			housekeeping = nil
			p.deleteStaleChains(ctx)
			if p.hasStaleChains() { // flushed by a later sync: not due yet
				housekeeping = time.After(staleChainDelay)
			}
			continue
		case <-check.C:
			if !p.fullSyncDue(ctx) {
				continue
			}
		}
		if wait := p.cfg.MinSyncInterval - time.Since(last); wait > 0 {
			select {
			case <-time.After(wait):
			case <-ctx.Done():
				return
			}
		}
		last = time.Now()
		if err := p.syncOnce(ctx); err != nil {
			p.log.Error("sync nftables rules", "err", err)
			retry = time.After(max(p.cfg.MinSyncInterval, 2*time.Second))
		} else {
			retry = nil
		}
		if housekeeping == nil && p.hasStaleChains() {
			housekeeping = time.After(staleChainDelay + 100*time.Millisecond)
		}
	}
}

func (p *Proxier) hasStaleChains() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.state.staleChains) > 0
}

// fullSyncDue reports whether the periodic check calls for a full sync: it
// is time for one, or the table is gone.
func (p *Proxier) fullSyncDue(ctx context.Context) bool {
	p.mu.Lock()
	due := p.needFullSync || time.Since(p.lastFullSync) >= p.cfg.FullSyncInterval
	p.mu.Unlock()
	if due {
		return true
	}
	ok, err := p.nft.tableExists(ctx, p.cfg.Table)
	if err != nil {
		p.log.Warn("check nftables table", "err", err)
		return false
	}
	if !ok {
		p.log.Info("table gone, rewriting it", "table", p.cfg.Table)
		p.mu.Lock()
		p.needFullSync = true
		p.mu.Unlock()
	}
	return !ok
}

// syncOnce writes what changed, or everything on a full sync, in one
// transaction.
func (p *Proxier) syncOnce(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	start := time.Now()
	p.deleteStaleChainsLocked(ctx, start)
	snap := p.tracker.Snapshot()
	full := p.needFullSync || time.Since(p.lastFullSync) >= p.cfg.FullSyncInterval
	if !full && len(snap.Changes) == 0 {
		p.waiters.Publish(snap.Gen, nil)
		return nil
	}

	tx, next, err := p.plan(ctx, snap, full, start)
	var data []byte
	if err == nil {
		data = tx.bytes()
		err = p.nft.apply(ctx, data)
	}
	if err != nil {
		// The table may hold part of what was meant, or the state part of
		// what was planned; only a full sync can say what it holds.
		p.needFullSync = true
		err = fmt.Errorf("write rules: %w", err)
		p.waiters.Publish(snap.Gen, err)
		return err
	}
	p.state = next
	p.needFullSync = tx.wantFullSync
	if tx.wantFullSync {
		p.poke()
	}
	if full {
		p.lastFullSync = time.Now()
	}
	p.tracker.Applied(snap)
	for _, id := range tx.conflicts {
		p.log.Warn("two service ports claim one address and port; the first in name order has it",
			"map", id.container, "key", id.key)
	}
	p.log.Info("synced nftables rules", "full", full, "services", len(snap.Services),
		"changed", len(snap.Changes), "chains", tx.wroteChains, "stale", tx.flushedStaleChains,
		"bytes", len(data), "elapsed", time.Since(start))

	// After the rules, so that new flows can no longer pick the removed
	// endpoints when their old entries go; before Sync returns, so that
	// its caller sees the change whole.
	if n, err := changes.ClearStaleConntrack(p.nl, snap.Changes); err != nil {
		p.log.Warn("clear stale UDP conntrack entries", "err", err)
	} else if n > 0 {
		p.log.Debug("deleted stale UDP conntrack entries", "count", n)
	}
	p.waiters.Publish(snap.Gen, nil)
	return nil
}

// plan builds the transaction of one sync and the state it leaves. A full
// sync first lists what the table holds, to remove what an earlier run
// left there.
func (p *Proxier) plan(ctx context.Context, snap changes.Snapshot, full bool, now time.Time) (*transaction, *state, error) {
	if full {
		found, err := p.nft.findLeftovers(ctx, p.cfg.Table)
		if err != nil {
			return nil, nil, fmt.Errorf("list the table: %w", err)
		}
		tx, next := p.layout.fullSync(p.state, snap.Services, found, now)
		return tx, next, nil
	}
	changed := make(map[dataplane.ServiceKey]*dataplane.Service, len(snap.Changes))
	for k, c := range snap.Changes {
		changed[k] = c.Current
	}
	return p.layout.partialSync(p.state, changed, now), p.state, nil
}

func (p *Proxier) deleteStaleChains(ctx context.Context) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.deleteStaleChainsLocked(ctx, time.Now())
}

// deleteStaleChainsLocked deletes, in one transaction of their own, the
// chains flushed at least staleChainDelay before now. They leave the state
// either way: should the delete fail, the next full sync finds them again.
func (p *Proxier) deleteStaleChainsLocked(ctx context.Context, now time.Time) {
	due := p.state.dueStaleChains(now.Add(-staleChainDelay))
	if len(due) == 0 {
		return
	}
	tx := &transaction{table: p.cfg.Table}
	for _, name := range due {
		tx.line(&tx.chains, "delete chain ip", p.cfg.Table, name)
		delete(p.state.staleChains, name)
	}
	if err := p.nft.apply(ctx, tx.bytes()); err != nil {
		p.log.Warn("delete stale nftables chains", "chains", len(due), "err", err)
	}
}

// Close stops the sync loop and leaves the table in place, so that
// services keep answering while the agent restarts.
func (p *Proxier) Close() error {
	if p.cancel != nil {
		p.cancel()
		<-p.stopped
	}
	if p.nl != nil {
		p.nl.Close()
		p.nl = nil
	}
	return nil
}

// Cleanup stops the proxier and deletes its table.
func (p *Proxier) Cleanup(ctx context.Context) error {
	p.Close()
	return p.nft.deleteTable(ctx, p.cfg.Table)
}

// TableExists reports whether the caller's network namespace has the table
// a proxier makes; an empty name means DefaultTable.
func TableExists(ctx context.Context, table string) (bool, error) {
	if table == "" {
		table = DefaultTable
	}
	return runner{}.tableExists(ctx, table)
}

// Cleanup deletes the table a proxier made in the caller's network
// namespace, and everything in it. It needs no Proxier: `skep agent
// --cleanup` and a switch to another dataplane call it. An empty table
// name means DefaultTable; a missing table is not an error.
func Cleanup(ctx context.Context, table string) error {
	if table == "" {
		table = DefaultTable
	}
	if err := validTable(table); err != nil {
		return err
	}
	return runner{}.deleteTable(ctx, table)
}
