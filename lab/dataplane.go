package lab

import (
	"context"
	"fmt"
)

// Dataplane is the mode the lab's agents run.
func (l *Lab) Dataplane() string { return l.st.Dataplane }

// SwitchDataplane restarts every node's agent with `--dataplane mode`, one
// node after another, as an operator moves a cluster between eBPF and
// iptables. Each agent removes the other mode's programs, pins and chains
// as it starts. A node whose agent is not running (killed) only gets the
// new mode for its next start.
func (l *Lab) SwitchDataplane(ctx context.Context, mode string) error {
	if mode != "ebpf" && mode != "iptables" {
		return fmt.Errorf("dataplane %q: allowed are ebpf, iptables", mode)
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
