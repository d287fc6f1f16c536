package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// keepState saves, at the moment a check gives up, what a person would
// look at on the node and in the pod: the pod's output and sockets, the
// node's rules with their counters, its conntrack table, routes and
// neighbours, and the agent's metrics. A flaky failure is then read from
// the state it failed in, not from a lab torn down minutes later.
func (cl *cluster) keepState(t *testing.T, node, pod string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "skep-e2e-state-")
	if err != nil {
		t.Log(err)
		return
	}
	save := func(name string, out []byte) {
		_ = os.WriteFile(filepath.Join(dir, name), out, 0o644)
	}
	skep := func(args ...string) []byte {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, skepBinary, args...)
		cmd.Env = append(os.Environ(), "SKEPCONFIG="+cl.lab.AdminConfigPath())
		out, err := cmd.CombinedOutput()
		if err != nil {
			out = append(out, fmt.Sprintf("\n(%v)\n", err)...)
		}
		return out
	}
	if pod != "" {
		save(pod+".log", skep("logs", pod))
		save(pod+".sockets", skep("exec", pod, "--", "netstat", "-tun"))
	}
	for _, c := range []struct{ file, cmd string }{
		{"iptables-save", "iptables-save -c"},
		{"nft", "nft list ruleset"},
		{"conntrack", "conntrack -L"},
		{"routes", "ip route; ip neigh"},
		{"metrics", "curl -s --max-time 3 http://127.0.0.1:10249/metrics | grep -v '^#'"},
	} {
		var out bytes.Buffer
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		_, err := cl.lab.Exec(ctx, node, []string{"sh", "-c", c.cmd}, nil, &out, &out)
		cancel()
		if err != nil {
			fmt.Fprintf(&out, "\n(%v)\n", err)
		}
		save(node+"."+c.file, out.Bytes())
	}
	what := node
	if pod != "" {
		what += " and pod " + pod
	}
	t.Logf("the state of %s when the check gave up is kept in %s", what, dir)
}
