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
	"time"

	"github.com/skep-io/skep/agent/dataplane"
	"github.com/skep-io/skep/agent/dataplane/internal/changes"
	"github.com/skep-io/skep/agent/dataplane/internal/proxier"
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
	loop    *proxier.Loop
	tracker *changes.Tracker // the loop's

	// state is read and written by the loop only (in a sync, with its
	// lock held, or in its housekeeping).
	state *state
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
	p.layout.dropInvalid = !changes.ConntrackLiberal(ctx, cfg.NetNS)
	p.loop.Start(ctx, nl)
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
	// The loop fills in the intervals left 0.
	return cfg, proxier.CheckIPv4(cfg.NodeIPs, cfg.ClusterCIDR, cfg.ServiceCIDRs)
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
	p := &Proxier{
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
		state: newState(),
	}
	p.loop = proxier.New(proxier.Config{
		Mode: "nftables", Logger: p.log, Closed: ErrClosed,
		MinSyncInterval: cfg.MinSyncInterval, CheckInterval: cfg.CheckInterval, FullSyncInterval: cfg.FullSyncInterval,
	}, table{p})
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

// table is what the sync loop writes with: the Proxier, with the methods
// of proxier.Dataplane and proxier.Housekeeper kept out of its exported API.
type table struct{ *Proxier }

// Rewrite: nothing in a snapshot calls for a full sync by itself.
func (t table) Rewrite(changes.Snapshot) bool { return false }

// Gone reports whether the table is gone.
func (t table) Gone(ctx context.Context) bool {
	ok, err := t.nft.tableExists(ctx, t.cfg.Table)
	if err != nil {
		t.log.Warn("check nftables table", "err", err)
		return false
	}
	if !ok {
		t.log.Info("table gone, rewriting it", "table", t.cfg.Table)
	}
	return !ok
}

// Write writes what changed, or everything on a full sync, in one
// transaction, after deleting the flushed chains that are due.
func (t table) Write(ctx context.Context, snap changes.Snapshot, full bool, start time.Time) (proxier.Result, error) {
	t.deleteStaleChains(ctx, start)
	tx, next, err := t.plan(ctx, snap, full, start)
	var data []byte
	if err == nil {
		data = tx.bytes()
		err = t.nft.apply(ctx, data)
	}
	if err != nil {
		// The state may hold part of what was planned; the full sync
		// the loop asks for next lists what the table holds.
		return proxier.Result{}, err
	}
	t.state = next
	for _, id := range tx.conflicts {
		t.log.Warn("two service ports claim one address and port; the first in name order has it",
			"map", id.container, "key", id.key)
	}
	return proxier.Result{
		FullSyncAgain: tx.wantFullSync,
		Attrs:         []any{"chains", tx.wroteChains, "stale", tx.flushedStaleChains, "bytes", len(data)},
	}, nil
}

// HousekeepingDelay says when the chains a sync flushed may be deleted.
func (t table) HousekeepingDelay() time.Duration {
	if len(t.state.staleChains) > 0 {
		return staleChainDelay + 100*time.Millisecond
	}
	return 0
}

// Housekeep deletes the flushed chains that are due; chains flushed by a
// later sync are not due yet, and are come back for.
func (t table) Housekeep(ctx context.Context) time.Duration {
	t.deleteStaleChains(ctx, time.Now())
	if len(t.state.staleChains) > 0 {
		return staleChainDelay
	}
	return 0
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

// deleteStaleChains deletes, in one transaction of their own, the chains
// flushed at least staleChainDelay before now. They leave the state either
// way: should the delete fail, the next full sync finds them again.
func (p *Proxier) deleteStaleChains(ctx context.Context, now time.Time) {
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
	p.loop.Close()
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
