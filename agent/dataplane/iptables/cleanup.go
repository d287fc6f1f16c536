package iptables

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// builtinChains are the chains of the kernel that our jumps sit in.
var builtinChains = map[string]bool{
	"PREROUTING": true, "INPUT": true, "FORWARD": true, "OUTPUT": true, "POSTROUTING": true,
}

// Cleanup removes every chain a proxier with this prefix made in the
// caller's network namespace, and every jump to them from the built-in
// chains, whoever wrote those jumps and however. It needs no Proxier:
// `skep agent --cleanup` and a switch to the eBPF dataplane call it.
// An empty prefix means DefaultChainPrefix.
func Cleanup(ctx context.Context, chainPrefix string) error {
	if chainPrefix == "" {
		chainPrefix = DefaultChainPrefix
	}
	if err := validPrefix(chainPrefix); err != nil {
		return err
	}
	return cleanup(ctx, runner{}, newChainNames(chainPrefix))
}

// cleanup writes one iptables-restore per table that deletes the jumps to
// our chains, flushes them and deletes them.
func cleanup(ctx context.Context, ipt runner, c chainNames) error {
	out, err := ipt.save(ctx, "")
	if err != nil {
		return fmt.Errorf("list rules: %w", err)
	}
	var errs []error
	for table, lines := range savedTables(out) {
		var ours []string
		for _, line := range lines {
			if strings.HasPrefix(line, ":") {
				if name, _, ok := strings.Cut(line[1:], " "); ok && c.isOwnChain(table, name) {
					ours = append(ours, name)
				}
			}
		}
		if len(ours) == 0 {
			continue
		}
		var b ruleBuffer
		b.line("*" + table)
		for _, name := range ours {
			b.line(":" + name + " - [0:0]") // flushes it
		}
		for _, line := range lines {
			r, ok := parseRule(line)
			if !ok || !builtinChains[r.chain] {
				continue
			}
			if target := r.flags["-j"]; c.isOwnChain(table, target) {
				b.line("-D " + r.chain + " " + r.spec)
			}
		}
		for _, name := range ours {
			b.line("-X", name)
		}
		b.line("COMMIT")
		if err := ipt.restore(ctx, b.Bytes()); err != nil {
			errs = append(errs, fmt.Errorf("remove chains of table %s: %w", table, err))
		}
	}
	return errors.Join(errs...)
}
