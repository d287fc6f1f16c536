package iptables

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"

	"github.com/skep-io/skep/agent/dataplane/internal/proxier"
)

// runner runs the iptables tools, in the caller's network namespace or in
// the one at netns (through nsenter, so that no goroutine has to move
// between namespaces).
type runner struct {
	netns string
}

func (r runner) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	if r.netns != "" {
		return exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + r.netns, "--", name}, args...)...)
	}
	return exec.CommandContext(ctx, name, args...)
}

// run runs a tool and returns its standard output; a failure carries the
// tool's standard error.
func (r runner) run(ctx context.Context, stdin []byte, name string, args ...string) ([]byte, error) {
	cmd := r.command(ctx, name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), &toolError{cmd: name + " " + strings.Join(args, " "), err: err, stderr: strings.TrimSpace(stderr.String())}
	}
	return stdout.Bytes(), nil
}

// toolError is a failed iptables command with what it printed.
type toolError struct {
	cmd    string
	err    error
	stderr string
}

func (e *toolError) Error() string {
	if e.stderr == "" {
		return fmt.Sprintf("%s: %v", e.cmd, e.err)
	}
	return fmt.Sprintf("%s: %v: %s", e.cmd, e.err, e.stderr)
}

func (e *toolError) Unwrap() error { return e.err }

// exitCode is the exit status of a failed tool, or -1.
func exitCode(err error) int {
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) {
		return exitErr.ExitCode()
	}
	return -1
}

var failedLine = regexp.MustCompile(`line (\d+) failed`)

// restore feeds a payload to iptables-restore without flushing the tables
// it names, so that only the chains it declares change. A failure quotes
// the lines around the one iptables-restore refused.
func (r runner) restore(ctx context.Context, data []byte) error {
	_, err := r.run(ctx, data, "iptables-restore", "--noflush", "--wait")
	if err == nil {
		return nil
	}
	var te *toolError
	if errors.As(err, &te) {
		if m := failedLine.FindStringSubmatch(te.stderr); m != nil {
			n, _ := strconv.Atoi(m[1])
			return fmt.Errorf("%w; near:\n%s", err, proxier.LinesAround(data, n, 2, 0))
		}
	}
	return err
}

// save returns iptables-save's output for one table, or for all when
// table is "".
func (r runner) save(ctx context.Context, table string) ([]byte, error) {
	if table == "" {
		return r.run(ctx, nil, "iptables-save")
	}
	return r.run(ctx, nil, "iptables-save", "-t", table)
}

// iptables runs one iptables command, waiting for the xtables lock.
func (r runner) iptables(ctx context.Context, args ...string) error {
	_, err := r.run(ctx, nil, "iptables", append([]string{"-w"}, args...)...)
	return err
}

// ensureChain creates a chain unless it exists.
func (r runner) ensureChain(ctx context.Context, table, chain string) error {
	if err := r.iptables(ctx, "-t", table, "-S", chain, "1"); err == nil {
		return nil
	}
	if err := r.iptables(ctx, "-t", table, "-N", chain); err != nil {
		return fmt.Errorf("create chain %s/%s: %w", table, chain, err)
	}
	return nil
}

// chainExists reports whether a chain exists; err is set only when that
// cannot be told.
func (r runner) chainExists(ctx context.Context, table, chain string) (bool, error) {
	err := r.iptables(ctx, "-t", table, "-S", chain, "1")
	if err == nil {
		return true, nil
	}
	if exitCode(err) == 1 {
		return false, nil
	}
	return false, err
}

// ensureRule inserts a rule at the top of a built-in chain unless it is
// already there (`iptables -C || iptables -I`), as kube-proxy's EnsureRule.
func (r runner) ensureRule(ctx context.Context, j jump) error {
	rule := append([]string{j.from}, j.spec()...)
	if err := r.iptables(ctx, append([]string{"-t", j.table, "-C"}, rule...)...); err == nil {
		return nil
	} else if exitCode(err) != 1 {
		return fmt.Errorf("check jump %s/%s -> %s: %w", j.table, j.from, j.to, err)
	}
	if err := r.iptables(ctx, append([]string{"-t", j.table, "-I"}, rule...)...); err != nil {
		return fmt.Errorf("insert jump %s/%s -> %s: %w", j.table, j.from, j.to, err)
	}
	return nil
}

// jump is a rule in a built-in chain that sends packets to one of ours.
type jump struct {
	table, from, to string
	args            []string // matches before the comment
	comment         string
}

func (j jump) spec() []string {
	spec := append([]string{}, j.args...)
	spec = append(spec, "-m", "comment", "--comment", j.comment, "-j", j.to)
	return spec
}

// jumps are kube-proxy's jumps from the built-in chains, for our chains.
// (Its health-check and load-balancer-firewall chains have nothing to carry
// here and are not made.)
func (c chainNames) jumps() []jump {
	ctNew := []string{"-m", "conntrack", "--ctstate", "NEW"}
	return []jump{
		{"filter", "INPUT", c.externalServices, ctNew, "kubernetes externally-visible service portals"},
		{"filter", "FORWARD", c.externalServices, ctNew, "kubernetes externally-visible service portals"},
		{"filter", "FORWARD", c.services, ctNew, "kubernetes service portals"},
		{"filter", "OUTPUT", c.services, ctNew, "kubernetes service portals"},
		{"filter", "FORWARD", c.forward, nil, "kubernetes forwarding rules"},
		{"nat", "OUTPUT", c.services, nil, "kubernetes service portals"},
		{"nat", "PREROUTING", c.services, nil, "kubernetes service portals"},
		{"nat", "POSTROUTING", c.postrouting, nil, "kubernetes postrouting rules"},
	}
}
