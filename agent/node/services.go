package node

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/skep-io/skep/agent/dataplane"
	"github.com/skep-io/skep/agent/dataplane/ebpf"
	"github.com/skep-io/skep/agent/dataplane/iptables"
	"github.com/skep-io/skep/agent/dataplane/nftables"
	"github.com/skep-io/skep/agent/dataplane/servicetracker"
	"github.com/skep-io/skep/controlplane/api"
	"github.com/skep-io/skep/controlplane/client"
)

// newDataplane starts the chosen dataplane and removes everything the
// other modes left on this node, so a switch leaves no stale rules or
// programs behind.
func (a *Agent) newDataplane(ctx context.Context) (dataplane.Dataplane, error) {
	mode := a.cfg.Dataplane
	if mode == "" {
		mode = dataplane.Modes[0]
	}
	if err := dataplane.CheckMode(mode); err != nil {
		return nil, fmt.Errorf("--%w", err)
	}
	ebpfCfg := ebpfConfig(a.cfg, a.log)
	cleanups := map[string]func() error{
		"ebpf":     func() error { return ebpf.Cleanup(ebpfCfg) },
		"iptables": func() error { return iptables.Cleanup(ctx, iptables.DefaultChainPrefix) },
		"nftables": func() error { return nftables.Cleanup(ctx, nftables.DefaultTable) },
	}
	for _, other := range dataplane.Modes {
		if other == mode {
			continue
		}
		if err := cleanups[other](); err != nil {
			a.log.Warn("remove the state of another dataplane", "dataplane", other, "err", err)
		}
	}
	switch mode {
	case "iptables":
		return iptables.New(ctx, iptables.Config{NodeName: a.cfg.Name, NodeIPs: ebpfCfg.NodeIPs, ClusterCIDR: a.cfg.ClusterCIDR,
			ServiceCIDRs: ebpfCfg.ServiceCIDRs, Logger: a.log, FullSyncInterval: a.cfg.FullSyncInterval})
	case "nftables":
		return nftables.New(ctx, nftables.Config{NodeName: a.cfg.Name, NodeIPs: ebpfCfg.NodeIPs, ClusterCIDR: a.cfg.ClusterCIDR,
			ServiceCIDRs: ebpfCfg.ServiceCIDRs, Logger: a.log, FullSyncInterval: a.cfg.FullSyncInterval})
	}
	return ebpf.New(ctx, ebpfCfg)
}

// ebpfConfig is the eBPF dataplane of the node cfg describes.
func ebpfConfig(cfg Config, log *slog.Logger) ebpf.Config {
	c := ebpf.Config{NodeName: cfg.Name, CgroupPath: cfg.CgroupRoot, Interface: cfg.Interface, Logger: log}
	if cfg.ServiceCIDR.IsValid() {
		c.ServiceCIDRs = []netip.Prefix{cfg.ServiceCIDR}
	}
	if cfg.NodeIP.IsValid() {
		c.NodeIPs = []netip.Addr{cfg.NodeIP}
	}
	return c
}

// syncServices keeps the dataplane carrying the cluster's Services until
// ctx ends. It waits for both informers' first list, so a restart never
// programs services from half the data, then makes a full sync; after
// that, each event marks its Service changed, and only the changed
// Services are compiled and applied. A full sync comes again every
// cfg.FullSyncInterval and after a failed write.
func (a *Agent) syncServices(ctx context.Context, dp dataplane.Dataplane, svcs, slices *client.Informer) {
	k := newKicker()
	tr := servicetracker.New(a.cfg.Name, k.kick)
	svcs.AddHandlers(client.Handlers{
		OnAdd:    func(o api.Object) { tr.ServiceChanged(o.(*corev1.Service)) },
		OnUpdate: func(_, o api.Object) { tr.ServiceChanged(o.(*corev1.Service)) },
		OnDelete: func(o api.Object) { tr.ServiceDeleted(o.GetNamespace(), o.GetName()) },
	})
	slices.AddHandlers(client.Handlers{
		OnAdd:    func(o api.Object) { tr.SliceChanged(o.(*discoveryv1.EndpointSlice)) },
		OnUpdate: func(_, o api.Object) { tr.SliceChanged(o.(*discoveryv1.EndpointSlice)) },
		OnDelete: func(o api.Object) { tr.SliceDeleted(o.GetNamespace(), o.GetName()) },
	})
	every := a.cfg.FullSyncInterval
	if every <= 0 {
		every = DefaultFullSyncInterval
	}
	full := true
	k.run(ctx, every, func(resync bool) error {
		full = full || resync
		start := time.Now()
		var (
			err   error
			count int
			kind  = "partial"
		)
		if full {
			kind = "full"
			want := tr.All()
			count = len(want)
			err = dp.Sync(ctx, want)
		} else if changed := tr.Changes(); len(changed) > 0 {
			count = len(changed)
			err = dp.Apply(ctx, changed)
		}
		if err != nil {
			a.log.Error("sync dataplane", "kind", kind, "services", count, "err", err)
			// What the kernel holds is uncertain; only a full sync
			// can say.
			full = true
			return err
		}
		if count > 0 {
			if full {
				a.metrics.observeSync(count, time.Since(start))
			} else {
				a.metrics.observeApply(time.Since(start))
			}
			a.log.Debug("synced dataplane", "kind", kind, "services", count, "took", time.Since(start))
		}
		full = false
		return nil
	}, svcs, slices)
}

func typed[T any](objs []api.Object) []T {
	out := make([]T, 0, len(objs))
	for _, o := range objs {
		out = append(out, any(o).(T))
	}
	return out
}
