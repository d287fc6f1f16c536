// Command skep is the binary every node runs: the control plane (server),
// the node agent (agent), the lab, and the client verbs (apply, get,
// delete, ...). The benchmarks are cmd/skep-bench, so that their plotting
// stays out of this binary.
package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/skep-io/skep/agent/containerlog"
	"github.com/urfave/cli/v2"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	// The agent runs this binary as the containers' log driver too.
	containerlog.RunIfDriver()
	app := &cli.App{
		Name:    "skep",
		Usage:   "a small Kubernetes-style orchestrator with an eBPF service dataplane",
		Version: version,
		Commands: []*cli.Command{
			serverCommand(),
			agentCommand(),
			dataplaneCommand(),
			labCommand(),
			applyCommand(),
			createCommand(),
			getCommand(),
			describeCommand(),
			deleteCommand(),
			scaleCommand(),
			logsCommand(),
			execCommand(),
			imageCommand(),
			rolloutCommand(),
			cordonCommand(),
			uncordonCommand(),
			drainCommand(),
			versionCommand(),
		},
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "config", Usage: "(client) the client config to use; default $SKEPCONFIG, then ~/.skep/config"},
		},
	}
	if err := app.Run(hoistFlags(app, os.Args)); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

// hoistFlags moves a verb's flags ahead of its arguments, so that
// `skep get pods -o wide` works as it does with kubectl: urfave/cli stops
// reading flags at the first argument. Everything after "--" stays put.
func hoistFlags(app *cli.App, args []string) []string {
	if len(args) < 2 {
		return args
	}
	cmd := app.Command(args[1])
	depth := 2 // program and verb
	// Verbs with subcommands (`skep rollout status`): hoist within the
	// subcommand named next.
	for cmd != nil && len(cmd.Subcommands) > 0 {
		if len(args) <= depth {
			return args
		}
		cmd = cmd.Command(args[depth])
		depth++
	}
	if cmd == nil {
		return args
	}
	boolean := map[string]bool{}
	for _, f := range cmd.Flags {
		if _, ok := f.(*cli.BoolFlag); ok {
			for _, n := range f.Names() {
				boolean[n] = true
			}
		}
	}
	var flags, positional []string
	rest := args[depth:]
	for i := 0; i < len(rest); i++ {
		a := rest[i]
		if a == "--" {
			positional = append(positional, rest[i:]...)
			break
		}
		if !strings.HasPrefix(a, "-") || a == "-" {
			positional = append(positional, a)
			continue
		}
		flags = append(flags, a)
		name := strings.TrimLeft(a, "-")
		if !strings.Contains(name, "=") && !boolean[name] && i+1 < len(rest) {
			flags = append(flags, rest[i+1])
			i++
		}
	}
	out := append(append([]string{}, args[:depth]...), flags...)
	return append(out, positional...)
}
