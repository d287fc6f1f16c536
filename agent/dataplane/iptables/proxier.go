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
	"time"

	"github.com/skep-io/skep/agent/dataplane"
	"github.com/skep-io/skep/agent/dataplane/internal/changes"
	"github.com/skep-io/skep/agent/dataplane/internal/proxier"
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
	loop    *proxier.Loop
	tracker *changes.Tracker // the loop's

	// Written by the loop only, with its lock held.
	commented  bool                // the programmed per-endpoint rules carry comments
	programmed map[string]struct{} // per-service nat chains in the kernel after the last write
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
	// The loop fills in the intervals left 0.
	if err := proxier.CheckIPv4(cfg.NodeIPs, cfg.ClusterCIDR, cfg.ServiceCIDRs); err != nil {
		return nil, err
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
	p.layout.dropInvalid = !changes.ConntrackLiberal(ctx, cfg.NetNS)
	p.loop.Start(ctx, nl)
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
	p := &Proxier{
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
		programmed: map[string]struct{}{},
	}
	p.loop = proxier.New(proxier.Config{
		Mode: "iptables", Logger: p.log, Closed: ErrClosed,
		MinSyncInterval: cfg.MinSyncInterval, CheckInterval: cfg.CheckInterval, FullSyncInterval: cfg.FullSyncInterval,
	}, rules{p})
	p.tracker = p.loop.Tracker()
	return p
}

// Sync records the desired state and returns once a write carrying it has
// been made (or failed). Calls that arrive while a write waits for
// MinSyncInterval are carried by the same write.
func (p *Proxier) Sync(ctx context.Context, services map[dataplane.ServiceKey]*dataplane.Service) error {
	return p.loop.Sync(ctx, services)
}

// Apply records a change of some service ports (nil: removed) and returns
// once a write carrying it has been made: a partial sync of those
// services' chains, unless a full one is due.
func (p *Proxier) Apply(ctx context.Context, changed map[dataplane.ServiceKey]*dataplane.Service) error {
	return p.loop.Apply(ctx, changed)
}

// rules is what the sync loop writes with: the Proxier, with the methods
// of proxier.Dataplane kept out of its exported API.
type rules struct{ *Proxier }

// Rewrite: every chain is kept in one style, all commented or all bare.
func (r rules) Rewrite(snap changes.Snapshot) bool {
	return r.wantComments(snap) != r.commented
}

func (r rules) wantComments(snap changes.Snapshot) bool {
	return countEndpoints(snap.Services) <= largeClusterEndpointsThreshold
}

// Gone reports whether the canary chain is gone (someone flushed the tables).
func (r rules) Gone(ctx context.Context) bool {
	ok, err := r.ipt.chainExists(ctx, "mangle", r.layout.chains.canary)
	if err != nil {
		r.log.Warn("check canary chain", "err", err)
		return false
	}
	if !ok {
		r.log.Info("canary chain gone, rewriting all rules", "chain", r.layout.chains.canary)
	}
	return !ok
}

// Write writes what changed, or everything on a full sync.
func (r rules) Write(ctx context.Context, snap changes.Snapshot, full bool, _ time.Time) (proxier.Result, error) {
	comments := r.wantComments(snap)
	data, active, err := r.buildPayload(ctx, snap, full, comments)
	if err == nil {
		err = r.ipt.restore(ctx, data)
	}
	if err == nil && full {
		err = r.ensureJumps(ctx)
	}
	if err != nil {
		return proxier.Result{}, err
	}
	r.programmed = active
	r.commented = comments
	return proxier.Result{Attrs: []any{"bytes", len(data)}}, nil
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
	p.loop.Close()
	return nil
}

// Cleanup stops the proxier and removes every chain and jump it made.
func (p *Proxier) Cleanup(ctx context.Context) error {
	p.Close()
	return cleanup(ctx, p.ipt, p.layout.chains)
}
