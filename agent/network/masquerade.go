package network

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
)

// The chains this package owns. Each is reached by one jump rule from a
// built-in chain, so removing the jump and the chain removes everything.
const (
	masqueradeChain = "SKEP-POD-MASQ" // nat: pod traffic leaving the cluster CIDR is masqueraded
	forwardChain    = "SKEP-POD-FWD"  // filter: pod traffic is forwarded even under a DROP policy
)

// ownedChain is a chain of ours, its table and the built-in chain that jumps
// to it.
type ownedChain struct{ table, parent, chain string }

func ownedChains() []ownedChain {
	return []ownedChain{
		{"nat", "POSTROUTING", masqueradeChain},
		{"filter", "FORWARD", forwardChain},
	}
}

// ensureIptables writes this package's chains (replacing their rules) and
// adds each jump once. It runs iptables, so it acts on the calling thread's
// network namespace.
func ensureIptables(ctx context.Context, podCIDR, clusterCIDR netip.Prefix) error {
	// iptables-restore --noflush flushes only the chains it declares, so the
	// payload replaces exactly our rules and leaves everybody else's alone.
	var b strings.Builder
	fmt.Fprintf(&b, "*nat\n:%s - [0:0]\n", masqueradeChain)
	fmt.Fprintf(&b, "-A %s -s %s ! -d %s -m comment --comment \"skep: pod traffic leaving the cluster\" -j MASQUERADE\n",
		masqueradeChain, podCIDR, clusterCIDR)
	b.WriteString("COMMIT\n")
	fmt.Fprintf(&b, "*filter\n:%s - [0:0]\n", forwardChain)
	fmt.Fprintf(&b, "-A %s -s %s -m comment --comment \"skep: from pods\" -j ACCEPT\n", forwardChain, clusterCIDR)
	fmt.Fprintf(&b, "-A %s -d %s -m comment --comment \"skep: to pods\" -j ACCEPT\n", forwardChain, clusterCIDR)
	b.WriteString("COMMIT\n")
	if err := runIptables(ctx, b.String(), "iptables-restore", "-w", "5", "--noflush"); err != nil {
		return fmt.Errorf("write pod chains: %w", err)
	}
	for _, c := range ownedChains() {
		// -C fails when the rule is missing (and on other errors, which -A
		// then reports). Appending, not inserting: the jump to SKEP-POD-FWD
		// matters only where nothing earlier in FORWARD decided, and other
		// components' rules (the iptables dataplane's) keep precedence.
		if runIptables(ctx, "", "iptables", "-w", "5", "-t", c.table, "-C", c.parent, "-j", c.chain) == nil {
			continue
		}
		if err := runIptables(ctx, "", "iptables", "-w", "5", "-t", c.table, "-A", c.parent, "-j", c.chain); err != nil {
			return fmt.Errorf("add jump from %s to %s: %w", c.parent, c.chain, err)
		}
	}
	return nil
}

// removeIptables deletes the jumps and this package's chains. Missing ones
// are not an error.
func removeIptables(ctx context.Context) error {
	var errs []error
	for _, c := range ownedChains() {
		for runIptables(ctx, "", "iptables", "-w", "5", "-t", c.table, "-C", c.parent, "-j", c.chain) == nil {
			if err := runIptables(ctx, "", "iptables", "-w", "5", "-t", c.table, "-D", c.parent, "-j", c.chain); err != nil {
				errs = append(errs, fmt.Errorf("delete jump from %s to %s: %w", c.parent, c.chain, err))
				break
			}
		}
		if runIptables(ctx, "", "iptables", "-w", "5", "-t", c.table, "-S", c.chain) != nil {
			continue // no such chain
		}
		if err := runIptables(ctx, "", "iptables", "-w", "5", "-t", c.table, "-F", c.chain); err != nil {
			errs = append(errs, fmt.Errorf("flush chain %s: %w", c.chain, err))
			continue
		}
		if err := runIptables(ctx, "", "iptables", "-w", "5", "-t", c.table, "-X", c.chain); err != nil {
			errs = append(errs, fmt.Errorf("delete chain %s: %w", c.chain, err))
		}
	}
	return errors.Join(errs...)
}

// runIptables runs an iptables command with stdin, returning its stderr in
// the error.
func runIptables(ctx context.Context, stdin string, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return nil
}
