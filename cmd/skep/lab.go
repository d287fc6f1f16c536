package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/skep-io/skep/agent/dataplane"
	"github.com/skep-io/skep/lab"
)

// labCommand is `skep lab`: a multi-node cluster on this machine, each node
// in a network namespace of its own, for trying skep and for the e2e tests.
func labCommand() *cli.Command {
	name := &cli.StringFlag{Name: "name", Value: lab.DefaultName, Usage: "(lab) the lab's name; labs of different names coexist"}
	dir := &cli.StringFlag{Name: "dir", Usage: "(lab) the lab's state, data and logs (default: " + lab.DefaultRoot + "/<name>)"}
	return &cli.Command{
		Name:  "lab",
		Usage: "a multi-node cluster on this machine: nodes in network namespaces on a bridge, a client namespace outside",
		Subcommands: []*cli.Command{
			{
				Name:  "up",
				Usage: "build a lab and wait until every node is Ready; prints the line that points skep at it",
				Flags: []cli.Flag{name, dir,
					&cli.IntFlag{Name: "nodes", Value: 3, Usage: "(nodes) how many nodes"},
					&cli.StringFlag{Name: "dataplane", Value: "ebpf", Usage: "(networking) the agents' dataplane: ebpf, iptables or nftables"},
					&cli.StringFlag{Name: "images", Usage: "(images) a DIR of OCI image tarballs every node imports (default: _out/images of the repository this binary was built in, as make images writes it)"},
					&cli.BoolFlag{Name: "no-images", Usage: "(images) start the nodes with no images"},
					&cli.StringSliceFlag{Name: "server-arg", Usage: "(advanced) a FLAG added to the server's command line, e.g. --server-arg=--pod-eviction-timeout=20s"},
					&cli.StringSliceFlag{Name: "agent-arg", Usage: "(advanced) a FLAG added to every agent's command line"},
					&cli.DurationFlag{Name: "timeout", Value: 3 * time.Minute, Usage: "(lab) how long to wait for every node to be Ready"},
				},
				Action: labUp,
			},
			{
				Name:  "env",
				Usage: "print the line that points skep at the lab: export SKEPCONFIG=...",
				Flags: []cli.Flag{name, dir},
				Action: func(c *cli.Context) error {
					l, err := openLab(c)
					if err != nil {
						return err
					}
					fmt.Fprintf(c.App.Writer, "export SKEPCONFIG=%s\n", l.AdminConfigPath())
					return nil
				},
			},
			{
				Name:   "status",
				Usage:  "show a lab's server, nodes and addresses (every lab when no --name is given)",
				Flags:  []cli.Flag{&cli.StringFlag{Name: "name", Usage: "(lab) the lab's name; default: every lab"}, dir},
				Action: labStatus,
			},
			{
				Name:      "exec",
				Usage:     "run a command on a node, in its network namespace and cgroup (NODE is node1, <lab>-node1 or client)",
				ArgsUsage: "NODE -- COMMAND [ARG...]",
				Flags:     []cli.Flag{name, dir},
				Action:    labExec,
			},
			{
				Name:  "down",
				Usage: "remove everything the lab made: processes, namespaces, links, bridge, cgroups, BPF pins, mounts, data",
				Flags: []cli.Flag{name, dir},
				Action: func(c *cli.Context) error {
					l, err := openLab(c)
					if err != nil {
						return err
					}
					l.SetProgress(c.App.ErrWriter)
					ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
					defer stop()
					return l.Down(ctx)
				},
			},
		},
	}
}

func openLab(c *cli.Context) (*lab.Lab, error) {
	l, err := lab.Open(c.String("name"), c.String("dir"))
	if errors.Is(err, lab.ErrNoLab) {
		return nil, fmt.Errorf("no lab named %s (%v); skep lab up --name %s makes one", c.String("name"), err, c.String("name"))
	}
	return l, err
}

func labUp(c *cli.Context) error {
	bin, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find this binary, which the lab's nodes run: %w", err)
	}
	if bin, err = filepath.EvalSymlinks(bin); err != nil {
		return fmt.Errorf("find this binary, which the lab's nodes run: %w", err)
	}
	cfg := lab.Config{
		Name: c.String("name"), Dir: c.String("dir"), Nodes: c.Int("nodes"), Dataplane: c.String("dataplane"), Binary: bin,
		ServerArgs: c.StringSlice("server-arg"), AgentArgs: c.StringSlice("agent-arg"), ReadyTimeout: c.Duration("timeout"),
		Progress: c.App.ErrWriter,
	}
	if cfg.Nodes < 1 {
		return fmt.Errorf("--nodes %d: a lab has at least one node", cfg.Nodes)
	}
	if err := dataplane.CheckMode(cfg.Dataplane); err != nil {
		return fmt.Errorf("--%w", err)
	}
	switch {
	case c.Bool("no-images") && c.String("images") != "":
		return errors.New("invalid flag use; --images and --no-images exclude each other")
	case c.Bool("no-images"):
	case c.String("images") != "":
		cfg.ImagesDir = c.String("images")
	default:
		if cfg.ImagesDir, err = defaultImagesDir(bin); err != nil {
			return err
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	start := time.Now()
	l, err := lab.Up(ctx, cfg)
	if err != nil {
		return err
	}
	w := c.App.ErrWriter
	fmt.Fprintf(w, "lab %s is up in %s: %d nodes (%s), server %s, client %s\n",
		l.Name(), time.Since(start).Round(100*time.Millisecond), len(l.Nodes()), cfg.Dataplane, l.ServerURL(), l.ClientIP())
	flag := ""
	if l.Name() != lab.DefaultName {
		flag = " --name " + l.Name()
	}
	fmt.Fprintf(w, "try: skep get nodes -o wide; skep lab exec%s node1 -- ip addr; skep lab exec%s client -- curl ...; skep lab down%s\n", flag, flag, flag)
	fmt.Fprintf(c.App.Writer, "export SKEPCONFIG=%s\n", l.AdminConfigPath())
	return nil
}

// defaultImagesDir is lab.DefaultImagesDir, its error naming the flags
// that choose otherwise.
func defaultImagesDir(bin string) (string, error) {
	dir, err := lab.DefaultImagesDir(bin)
	if err != nil {
		return "", fmt.Errorf("--images: %w, name a directory of OCI tarballs with --images DIR, or start without images with --no-images", err)
	}
	return dir, nil
}

func labExec(c *cli.Context) error {
	args := c.Args().Slice()
	if len(args) > 0 && args[0] == "--" {
		args = args[1:]
	}
	if len(args) > 1 && args[1] == "--" {
		args = append(args[:1], args[2:]...)
	}
	if len(args) < 2 {
		return errors.New("usage: skep lab exec NODE -- COMMAND [ARG...]")
	}
	l, err := openLab(c)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	code, err := l.Exec(ctx, args[0], args[1:], os.Stdin, c.App.Writer, c.App.ErrWriter)
	if err != nil {
		return err
	}
	if code != 0 {
		return cli.Exit("", code)
	}
	return nil
}

func labStatus(c *cli.Context) error {
	names := []string{c.String("name")}
	if names[0] == "" {
		if c.String("dir") != "" {
			names[0] = lab.DefaultName
		} else {
			var err error
			if names, err = lab.List(); err != nil {
				return err
			}
			if len(names) == 0 {
				fmt.Fprintf(c.App.Writer, "no labs (under %s); skep lab up makes one\n", lab.DefaultRoot)
				return nil
			}
		}
	}
	sort.Strings(names)
	for i, name := range names {
		l, err := lab.Open(name, c.String("dir"))
		if err != nil {
			return err
		}
		if i > 0 {
			fmt.Fprintln(c.App.Writer)
		}
		printLabStatus(c, l)
	}
	return nil
}

func printLabStatus(c *cli.Context, l *lab.Lab) {
	w := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
	defer w.Flush()
	running := func(ok bool) string {
		if ok {
			return "running"
		}
		return "stopped"
	}
	fmt.Fprintf(w, "lab %s\t%s\n", l.Name(), l.Dir())
	fmt.Fprintf(w, "server\t%s\t%s\n", l.ServerURL(), running(l.ServerRunning()))
	fmt.Fprintf(w, "network\t%s on %s\tLoadBalancer pool %s\n", l.BridgeIP(), l.Bridge(), l.LBPool())
	fmt.Fprintf(w, "config\texport SKEPCONFIG=%s\n", l.AdminConfigPath())
	ready, err := l.Ready(c.Context)
	fmt.Fprintf(w, "NODE\tIP\tAGENT\tREADY\tNETNS\n")
	for _, n := range l.Nodes() {
		r := "unknown"
		if err == nil {
			r = fmt.Sprint(ready[n])
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", n, l.NodeIP(n), running(l.AgentRunning(n)), r, l.Netns(n))
	}
	fmt.Fprintf(w, "%s\t%s\t\t\t%s\n", lab.ClientName, l.ClientIP(), l.Netns(lab.ClientName))
	if err != nil {
		fmt.Fprintf(w, "(the API server does not answer: %v)\n", err)
	}
}
