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
			ServiceCIDRs: ebpfCfg.ServiceCIDRs, Logger: a.log})
	case "nftables":
		return nftables.New(ctx, nftables.Config{NodeName: a.cfg.Name, NodeIPs: ebpfCfg.NodeIPs, ClusterCIDR: a.cfg.ClusterCIDR,
			ServiceCIDRs: ebpfCfg.ServiceCIDRs, Logger: a.log})
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
// ctx ends, from both informers' first list on (syncOnChange), so a
// restart never programs services from half the data.
func (a *Agent) syncServices(ctx context.Context, dp dataplane.Dataplane, svcs, slices *client.Informer) {
	syncOnChange(ctx, time.Minute, func() error {
		want := dataplane.FromKubernetes(typed[*corev1.Service](svcs.List()), typed[*discoveryv1.EndpointSlice](slices.List()), a.cfg.Name)
		start := time.Now()
		if err := dp.Sync(ctx, want); err != nil {
			a.log.Error("sync dataplane", "services", len(want), "err", err)
			return err
		}
		a.metrics.observeSync(len(want), time.Since(start))
		a.log.Debug("synced dataplane", "services", len(want), "took", time.Since(start))
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
