package lab

import (
	"context"

	"github.com/skep-io/skep/agent/dataplane"
)

// Dataplane is the mode the lab's agents run.
func (l *Lab) Dataplane() string { return l.st.Dataplane }

// SwitchDataplane restarts every node's agent with `--dataplane mode`, one
// node after another, as an operator moves a cluster between eBPF,
// iptables and nftables. Each agent removes the other modes' programs,
// pins, chains and table as it starts. A node whose agent is not running (killed) only gets the
// new mode for its next start.
func (l *Lab) SwitchDataplane(ctx context.Context, mode string) error {
	if err := dataplane.CheckMode(mode); err != nil {
		return err
	}
	l.st.Dataplane = mode
	if err := l.st.save(); err != nil {
		return err
	}
	for i := range l.st.Nodes {
		n := &l.st.Nodes[i]
		if n.Agent == nil || !n.Agent.running() {
			continue
		}
		if err := l.StopAgent(ctx, n.Name); err != nil {
			return err
		}
		if err := l.StartAgent(ctx, n.Name); err != nil {
			return err
		}
		l.progress("%s: agent restarted with --dataplane %s", n.Name, mode)
	}
	return nil
}
