package nftables

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/skep-io/skep/agent/dataplane/internal/proxier"
)

// runner runs nft, in the caller's network namespace or in the one at
// netns (through nsenter, so that no goroutine has to move between
// namespaces).
type runner struct {
	netns string
}

func (r runner) command(ctx context.Context, args ...string) *exec.Cmd {
	if r.netns != "" {
		return exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + r.netns, "--", "nft"}, args...)...)
	}
	return exec.CommandContext(ctx, "nft", args...)
}

// errNotFound is what nft says when the table (or an object) is missing.
var errNotFound = errors.New("no such file or directory")

// run runs nft and returns its standard output; a failure carries what nft
// printed on standard error.
func (r runner) run(ctx context.Context, stdin []byte, args ...string) ([]byte, error) {
	cmd := r.command(ctx, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if strings.Contains(msg, "No such file or directory") {
			err = fmt.Errorf("%w: %w", errNotFound, err)
		}
		return stdout.Bytes(), fmt.Errorf("nft %s: %w: %s", strings.Join(args, " "), err, msg)
	}
	return stdout.Bytes(), nil
}

var failedLine = regexp.MustCompile(`/dev/stdin:(\d+):`)

// apply runs a transaction with `nft -f -`: all of it or, on any error,
// nothing. A failure quotes the lines nft refused.
func (r runner) apply(ctx context.Context, tx []byte) error {
	_, err := r.run(ctx, tx, "-f", "-")
	if err == nil {
		return nil
	}
	if m := failedLine.FindStringSubmatch(err.Error()); m != nil {
		n, _ := strconv.Atoi(m[1])
		return fmt.Errorf("%w; near:\n%s", err, proxier.LinesAround(tx, n, 2, 300))
	}
	return err
}

// jsonObjects is nft's JSON output: a list of one-key objects.
type jsonObjects struct {
	Nftables []map[string]json.RawMessage `json:"nftables"`
}

// listObjects runs `nft -j ARGS` and returns the objects of kind (chain,
// set, map, rule) of our table, each decoded into a new T.
func listObjects[T any](ctx context.Context, r runner, table, kind string, args ...string) ([]T, error) {
	out, err := r.run(ctx, nil, append([]string{"-j"}, args...)...)
	if err != nil {
		return nil, err
	}
	var objs jsonObjects
	if err := json.Unmarshal(out, &objs); err != nil {
		return nil, fmt.Errorf("decode nft -j %s: %w", strings.Join(args, " "), err)
	}
	var res []T
	for _, o := range objs.Nftables {
		raw, ok := o[kind]
		if !ok {
			continue
		}
		var head struct {
			Family, Table string
		}
		if json.Unmarshal(raw, &head) != nil || head.Family != "ip" || head.Table != table {
			continue
		}
		var v T
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, fmt.Errorf("decode nft %s: %w", kind, err)
		}
		res = append(res, v)
	}
	return res, nil
}

// findLeftovers lists the per-service chains and affinity sets in the
// table; none when there is no table.
func (r runner) findLeftovers(ctx context.Context, table string) (leftovers, error) {
	var found leftovers
	exists, err := r.tableExists(ctx, table)
	if err != nil || !exists {
		return found, err
	}
	chains, err := listObjects[struct{ Name string }](ctx, r, table, "chain", "list", "chains", "ip")
	if err != nil {
		return found, fmt.Errorf("list chains: %w", err)
	}
	for _, c := range chains {
		if isServiceChain(c.Name) {
			found.chains = append(found.chains, c.Name)
		}
	}
	// Terse: without the elements, which affinity sets may have many of.
	sets, err := listObjects[struct {
		Name    string
		Timeout int
	}](ctx, r, table, "set", "-t", "list", "sets", "ip")
	if err != nil {
		return found, fmt.Errorf("list sets: %w", err)
	}
	found.sets = map[string]time.Duration{}
	for _, s := range sets {
		if isAffinitySet(s.Name) {
			found.sets[s.Name] = time.Duration(s.Timeout) * time.Second
		}
	}
	return found, nil
}

// tableExists reports whether our table is there. It asks for the
// service-ips map without its elements: nft 1.0's `list tables` reads the
// whole ruleset first, a quarter of a second at 1,000 services, while
// this costs milliseconds at any size. A table without that map is taken
// for missing, which is right for its purpose: a full sync rewrites it.
func (r runner) tableExists(ctx context.Context, table string) (bool, error) {
	_, err := r.run(ctx, nil, "-t", "list", "map", "ip", table, serviceIPsMap)
	if errors.Is(err, errNotFound) {
		return false, nil
	}
	return err == nil, err
}

// deleteTable removes the table and everything in it; a missing table is
// not an error, nor a missing nft (nothing can have made the table then).
func (r runner) deleteTable(ctx context.Context, table string) error {
	_, err := r.run(ctx, nil, "delete", "table", "ip", table)
	if errors.Is(err, errNotFound) || errors.Is(err, exec.ErrNotFound) {
		return nil
	}
	return err
}
