package node

import (
	"context"
	"errors"
	"fmt"

	"github.com/skep-io/skep/agent/dataplane/ebpf"
	"github.com/skep-io/skep/agent/dataplane/iptables"

	"github.com/skep-io/skep/controlplane/client"
)

// Run runs the agent until ctx ends. The dataplane's programs and rules
// stay in place when it returns, so Services keep answering while the
// agent restarts.
func (a *Agent) Run(ctx context.Context) error {
	if _, err := a.register(ctx); err != nil {
		return err
	}
	a.log.Info("node registered", "ip", a.cfg.NodeIP, "dataplane", a.cfg.Dataplane)
	go a.keepLease(ctx)

	dp, err := a.newDataplane(ctx)
	if err != nil {
		return fmt.Errorf("start the %s dataplane: %w", a.cfg.Dataplane, err)
	}
	defer dp.Close()

	svcs := client.NewInformer(a.c, servicesR, client.InformerOptions{Logger: a.log})
	eps := client.NewInformer(a.c, endpointsR, client.InformerOptions{Logger: a.log})
	go svcs.Run(ctx)
	go eps.Run(ctx)
	a.syncServices(ctx, dp, svcs, eps)
	return nil
}

// CleanupDataplanes removes every program, pin, link and chain either
// dataplane made on this node: `skep agent --cleanup`.
func CleanupDataplanes(ctx context.Context, cfg Config) error {
	return errors.Join(
		ebpf.Cleanup(ebpf.Config{NodeName: cfg.Name, CgroupPath: cfg.CgroupRoot, Interface: cfg.Interface, Logger: cfg.Logger}),
		iptables.Cleanup(ctx, iptables.DefaultChainPrefix),
	)
}
