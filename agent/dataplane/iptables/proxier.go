// Package iptables is skep's iptables dataplane: kube-proxy's iptables mode,
// rule for rule, behind the dataplane.Dataplane interface, so that
// benchmarks against the eBPF dataplane compare with what users know.
//
// Each sync is one `iptables-restore --noflush` of only this package's
// chains: the entry chains (KUBE-SERVICES, KUBE-NODEPORTS, ...) whole, and
// the per-service chains (KUBE-SVC-, KUBE-SVL-, KUBE-EXT-, KUBE-SEP-) of the
// services that changed, or of all on a full sync. Rules written by others
// are never touched.
package iptables

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
	// address except loopback (`-m addrtype --dst-type LOCAL`, kube-proxy's
	// default); set: only these (kube-proxy's --nodeport-addresses=primary).
	NodeIPs []netip.Addr
	// ClusterCIDR is the pod network, for masquerade decisions as
	// kube-proxy's --cluster-cidr: traffic to a ClusterIP from outside it is
	// masqueraded, pods reaching a Local service's external address take
	// the Cluster path. Unset: neither rule is written.
	ClusterCIDR netip.Prefix
	// ServiceCIDRs are the ranges ClusterIPs are given from (the server's
	// --service-cidr). Traffic to them that no service rule translated is
	// refused instead of being routed away, so a connection never hangs on
	// a cluster IP this node has not programmed yet. Unset: no such rule.
	ServiceCIDRs []netip.Prefix
	// ChainPrefix replaces "KUBE" in every chain name; upper-case, at most
	// 7 characters. Default DefaultChainPrefix.
	ChainPrefix string
	Logger      *slog.Logger
	// MinSyncInterval is the least time between two writes: changes that
	// arrive closer together are written as one. Default 1s (kube-proxy's
	// --iptables-min-sync-period).
	MinSyncInterval time.Duration
	// CheckInterval is how often the canary chain is checked; if someone
	// flushed the tables, a full sync rewrites everything. Default 30s
	// (kube-proxy's --iptables-sync-period).
	CheckInterval time.Duration
	// FullSyncInterval is how often every chain is rewritten even when
	// nothing is seen missing. Default 1h (kube-proxy's FullSyncPeriod).
	FullSyncInterval time.Duration
	// NetNS is the path of a network namespace (/run/netns/NAME) to program
	// instead of the caller's own. Tests and the lab use it.
	NetNS string
}

// Proxier programs services as kube-proxy's iptables mode does.
type Proxier struct {
	cfg     Config
	log     *slog.Logger
	ipt     runner
	layout  layout
	tracker *changes.Tracker
	nl      *netlink.Handle

	// mu is held through a sync; it guards the fields below.
	mu           sync.Mutex
	needFullSync bool
	lastFullSync time.Time
	commented    bool                // the programmed per-endpoint rules carry comments
	programmed   map[string]struct{} // per-service nat chains in the kernel after the last write

	kick    chan struct{} // asks the loop for a sync
	cancel  context.CancelFunc
	stopped chan struct{} // closed when the loop has returned

	waiters *changes.Waiters // Sync waits for the sync that carries its generation

	initOnce sync.Once
	inited   chan struct{} // closed by the first Sync: nothing is written before a full list
}

var _ dataplane.Dataplane = (*Proxier)(nil)

// ErrClosed is returned by Sync after Close, or after New's ctx ended.
var ErrClosed = errors.New("iptables proxier closed")

// New checks the configuration and starts the sync loop, which runs until
// ctx ends or Close. Nothing is written before the first Sync.
func New(ctx context.Context, cfg Config) (*Proxier, error) {
	if cfg.ChainPrefix == "" {
		cfg.ChainPrefix = DefaultChainPrefix
	}
	if err := validPrefix(cfg.ChainPrefix); err != nil {
		return nil, err
	}
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
	for _, ip := range cfg.NodeIPs {
		if !ip.Is4() {
			return nil, fmt.Errorf("node IP %s: only IPv4 is carried", ip)
		}
	}
	if cfg.ClusterCIDR.IsValid() && !cfg.ClusterCIDR.Addr().Is4() {
		return nil, fmt.Errorf("cluster CIDR %s: only IPv4 is carried", cfg.ClusterCIDR)
	}
	for _, cidr := range cfg.ServiceCIDRs {
		if !cidr.IsValid() || !cidr.Addr().Is4() {
			return nil, fmt.Errorf("service CIDR %s: want an IPv4 prefix", cidr)
		}
	}

	ipt := runner{netns: cfg.NetNS}
	if _, err := ipt.run(ctx, nil, "iptables-restore", "--version"); err != nil {
		return nil, fmt.Errorf("find iptables-restore: %w", err)
	}
	nl, err := changes.NetlinkHandle(cfg.NetNS)
	if err != nil {
		return nil, err
	}

	p := newProxier(cfg, ipt)
	p.nl = nl
	p.layout.dropInvalid = !changes.ConntrackLiberal(ctx, cfg.NetNS)

	loopCtx, cancel := context.WithCancel(ctx)
	p.cancel = cancel
	go p.loop(loopCtx)
	return p, nil
}

// newProxier builds a Proxier without starting anything (tests use it to
// generate payloads).
func newProxier(cfg Config, ipt runner) *Proxier {
	if cfg.ChainPrefix == "" {
		cfg.ChainPrefix = DefaultChainPrefix
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Proxier{
		cfg: cfg,
		log: cfg.Logger.With("dataplane", "iptables", "node", cfg.NodeName),
		ipt: ipt,
		layout: layout{
			chains:       newChainNames(cfg.ChainPrefix),
			clusterCIDR:  cfg.ClusterCIDR.Masked(),
			serviceCIDRs: cfg.ServiceCIDRs,
			nodeIPs:      cfg.NodeIPs,
			// iptables has had --random-fully since 1.6.2; kube-proxy
			// uses it wherever it exists.
			randomFully: true,
			dropInvalid: true,
		},
		tracker:      changes.NewTracker(),
		needFullSync: true,
		programmed:   map[string]struct{}{},
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
	select {
	case p.kick <- struct{}{}:
	default: // a sync is already asked for; it will take this state
	}
	return p.waiters.Wait(ctx, gen, p.stopped, ErrClosed)
}

// loop runs syncs when asked, no closer together than MinSyncInterval, a
// full one when the canary chain disappears or FullSyncInterval passes, and
// retries after a failure.
func (p *Proxier) loop(ctx context.Context) {
	defer close(p.stopped)
	select {
	case <-p.inited:
	case <-ctx.Done():
		return
	}
	check := time.NewTicker(p.cfg.CheckInterval)
	defer check.Stop()
	var retry <-chan time.Time
	var last time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.kick:
		case <-retry:
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
			p.log.Error("sync iptables rules", "err", err)
			retry = time.After(max(p.cfg.MinSyncInterval, 2*time.Second))
		} else {
			retry = nil
		}
	}
}

// fullSyncDue reports whether the periodic check calls for a full sync: it
// is time for one, or the canary chain is gone (someone flushed the tables).
func (p *Proxier) fullSyncDue(ctx context.Context) bool {
	p.mu.Lock()
	due := p.needFullSync || time.Since(p.lastFullSync) >= p.cfg.FullSyncInterval
	p.mu.Unlock()
	if due {
		return true
	}
	ok, err := p.ipt.chainExists(ctx, "mangle", p.layout.chains.canary)
	if err != nil {
		p.log.Warn("check canary chain", "err", err)
		return false
	}
	if !ok {
		p.log.Info("canary chain gone, rewriting all rules", "chain", p.layout.chains.canary)
		p.mu.Lock()
		p.needFullSync = true
		p.mu.Unlock()
	}
	return !ok
}

// syncOnce writes what changed, or everything on a full sync.
func (p *Proxier) syncOnce(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	start := time.Now()
	snap := p.tracker.Snapshot()
	full := p.needFullSync || time.Since(p.lastFullSync) >= p.cfg.FullSyncInterval
	comments := countEndpoints(snap.Services) <= largeClusterEndpointsThreshold
	if comments != p.commented {
		full = true // keep every chain in one style
	}
	if !full && len(snap.Changes) == 0 {
		p.waiters.Publish(snap.Gen, nil)
		return nil
	}

	data, active, err := p.buildPayload(ctx, snap, full, comments)
	if err == nil {
		err = p.ipt.restore(ctx, data)
	}
	if err == nil && full {
		err = p.ensureJumps(ctx)
	}
	if err != nil {
		// The tables may hold part of what was meant; only a full sync
		// can say what they hold afterwards.
		p.needFullSync = true
		err = fmt.Errorf("write rules: %w", err)
		p.waiters.Publish(snap.Gen, err)
		return err
	}

	p.programmed = active
	p.commented = comments
	p.needFullSync = false
	if full {
		p.lastFullSync = time.Now()
	}
	p.tracker.Applied(snap)
	p.log.Info("synced iptables rules", "full", full, "services", len(snap.Services),
		"changed", len(snap.Changes), "bytes", len(data), "elapsed", time.Since(start))

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

// buildPayload generates the payload of one sync and the per-service chains
// it leaves. A full sync rewrites every service's chains and also deletes
// per-service chains of our prefix that an earlier run left behind.
func (p *Proxier) buildPayload(ctx context.Context, snap changes.Snapshot, full, comments bool) ([]byte, map[string]struct{}, error) {
	req := request{services: snap.Services, comments: comments}
	existing := p.programmed
	if full {
		existing = make(map[string]struct{}, len(p.programmed))
		for name := range p.programmed {
			existing[name] = struct{}{}
		}
		out, err := p.ipt.save(ctx, "nat")
		if err != nil {
			return nil, nil, fmt.Errorf("list nat chains: %w", err)
		}
		for _, name := range savedChains(out) {
			if p.layout.chains.isServiceChain(name) {
				existing[name] = struct{}{}
			}
		}
	} else {
		req.rewrite = make(map[dataplane.ServiceKey]bool, len(snap.Changes))
		for k := range snap.Changes {
			req.rewrite[k] = true
		}
	}
	pl := p.layout.generate(req)
	var stale []string
	for name := range existing {
		if _, ok := pl.active[name]; !ok {
			stale = append(stale, name)
		}
	}
	sortStrings(stale)
	return pl.bytes(stale), pl.active, nil
}

// ensureJumps makes the jumps from the built-in chains and the canary.
func (p *Proxier) ensureJumps(ctx context.Context) error {
	for _, j := range p.layout.chains.jumps() {
		if err := p.ipt.ensureRule(ctx, j); err != nil {
			return err
		}
	}
	return p.ipt.ensureChain(ctx, "mangle", p.layout.chains.canary)
}

// Close stops the sync loop and leaves the rules in place, so that
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

// Cleanup stops the proxier and removes every chain and jump it made.
func (p *Proxier) Cleanup(ctx context.Context) error {
	p.Close()
	return cleanup(ctx, p.ipt, p.layout.chains)
}
