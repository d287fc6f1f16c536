package main

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/skep-io/skep/agent/dataplane"
	"github.com/skep-io/skep/agent/dataplane/ebpf"
	"github.com/skep-io/skep/agent/dataplane/iptables"
	"github.com/skep-io/skep/agent/dataplane/nftables"
)

func dataplaneCommand() *cli.Command {
	return &cli.Command{
		Name:  "dataplane",
		Usage: "inspect what this node's dataplane holds",
		Subcommands: []*cli.Command{{
			Name:  "services",
			Usage: "the services programmed on this node: frontend → backends, read back from the eBPF maps, the iptables chains or the nftables table",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "node-name", Usage: "the node whose pins to read (eBPF); default the hostname"},
				&cli.StringFlag{Name: "dataplane", Usage: "ebpf, iptables or nftables; default: whichever this node has"},
			},
			Action: func(c *cli.Context) error {
				node := c.String("node-name")
				if node == "" {
					hn, _ := os.Hostname()
					node = strings.ToLower(hn)
				}
				svcs, conns, mode, err := readDataplane(c.Context, node, c.String("dataplane"))
				if err != nil {
					return err
				}
				return printDataplane(c.App.Writer, mode, svcs, conns)
			},
		}, {
			Name: "stats",
			Usage: "what each eBPF program of this node costs per run, from the kernel's own counters (run_time_ns / run_cnt): " +
				"enables BPF statistics for --window, reads the programs before and after, and shows the difference",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "node-name", Usage: "the node whose pins to read; default the hostname"},
				&cli.DurationFlag{Name: "window", Value: 5 * time.Second, Usage: "how long to count; 0: show the totals the kernel counted so far, " +
					"while statistics were enabled by others (kernel.bpf_stats_enabled=1, the agent's --bpf-stats)"},
			},
			Action: func(c *cli.Context) error {
				node := c.String("node-name")
				if node == "" {
					hn, _ := os.Hostname()
					node = strings.ToLower(hn)
				}
				if c.Duration("window") < 0 {
					return fmt.Errorf("--window %s: must be 0 or positive", c.Duration("window"))
				}
				stats, err := readProgramStats(c.Context, node, c.Duration("window"))
				if err != nil {
					return err
				}
				return printProgramStats(c.App.Writer, stats, c.Duration("window"))
			},
		}},
	}
}

// readProgramStats reads the counters of node's programs; with a window,
// it enables BPF statistics for that long and returns what they counted in
// it.
func readProgramStats(ctx context.Context, node string, window time.Duration) ([]ebpf.ProgramStats, error) {
	cfg := ebpf.Config{NodeName: node}
	if _, err := os.Stat(filepath.Join(ebpf.DefaultPinRoot, node)); err != nil {
		return nil, fmt.Errorf("no eBPF dataplane of node %s here: %s does not exist (is the agent running with --dataplane ebpf --node-name %s?)",
			node, filepath.Join(ebpf.DefaultPinRoot, node), node)
	}
	if window == 0 {
		return ebpf.ReadProgramStats(cfg)
	}
	stop, err := ebpf.EnableStats()
	if err != nil {
		return nil, err
	}
	defer stop.Close()
	before, err := ebpf.ReadProgramStats(cfg)
	if err != nil {
		return nil, err
	}
	select {
	case <-time.After(window):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	after, err := ebpf.ReadProgramStats(cfg)
	if err != nil {
		return nil, err
	}
	return ebpf.SubStats(after, before), nil
}

// printProgramStats writes one line per program: runs, the mean cost of a
// run, and the total.
func printProgramStats(w interface{ Write([]byte) (int, error) }, stats []ebpf.ProgramStats, window time.Duration) error {
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	over := "since loaded, while statistics were enabled"
	if window > 0 {
		over = "in " + window.String()
	}
	fmt.Fprintf(tw, "PROGRAM\tRUNS (%s)\tNS/RUN\tTOTAL\n", over)
	for _, s := range stats {
		per := "-"
		if s.RunCount > 0 {
			per = fmt.Sprintf("%.0f", s.NsPerRun())
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", s.Name, s.RunCount, per, s.RunTime)
	}
	return tw.Flush()
}

// connCounts are the new connections the dataplane counted per backend of
// each service port; nil where it counts none (iptables, nftables).
type connCounts map[dataplane.ServiceKey]map[netip.AddrPort]uint64

func readDataplane(ctx context.Context, node, mode string) ([]dataplane.Service, connCounts, string, error) {
	pins := filepath.Join(ebpf.DefaultPinRoot, node)
	if mode == "" {
		mode = detectMode(ctx, pins)
	}
	switch mode {
	case "ebpf":
		if _, err := os.Stat(pins); err != nil {
			return nil, nil, mode, fmt.Errorf("no eBPF dataplane of node %s here: %s does not exist (is the agent running with --node-name %s?)", node, pins, node)
		}
		stats, err := ebpf.ReadServices(ebpf.Config{NodeName: node})
		if err != nil {
			return nil, nil, mode, err
		}
		svcs := make([]dataplane.Service, len(stats))
		conns := connCounts{}
		for i, s := range stats {
			svcs[i] = s.Service
			conns[s.Key] = s.Connections
		}
		return svcs, conns, mode, nil
	case "iptables":
		p, err := iptables.New(ctx, iptables.Config{NodeName: node})
		if err != nil {
			return nil, nil, mode, err
		}
		defer p.Close()
		s, err := p.Services(ctx)
		return s, nil, mode, err
	case "nftables":
		p, err := nftables.New(ctx, nftables.Config{NodeName: node})
		if err != nil {
			return nil, nil, mode, err
		}
		defer p.Close()
		s, err := p.Services(ctx)
		return s, nil, mode, err
	}
	return nil, nil, mode, fmt.Errorf("--%w", dataplane.CheckMode(mode))
}

// detectMode is the dataplane this node has: eBPF where its pins are,
// nftables where its table is, iptables otherwise.
func detectMode(ctx context.Context, pins string) string {
	if _, err := os.Stat(pins); err == nil {
		return "ebpf"
	}
	if ok, err := nftables.TableExists(ctx, nftables.DefaultTable); err == nil && ok {
		return "nftables"
	}
	return "iptables"
}

// printDataplane writes one line per service port. Each backend carries
// what is worth knowing about it: not serving, and, where the dataplane
// counts them, the new connections sent to it.
func printDataplane(w interface{ Write([]byte) (int, error) }, mode string, svcs []dataplane.Service, conns connCounts) error {
	sort.Slice(svcs, func(i, j int) bool { return svcs[i].Key.String() < svcs[j].Key.String() })
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	fmt.Fprintf(tw, "SERVICE (%s)\tFRONTENDS\tBACKENDS\tAFFINITY\n", mode)
	for _, s := range svcs {
		var fronts []string
		proto := strings.ToLower(string(s.Key.Protocol))
		fronts = append(fronts, fmt.Sprintf("%s:%d/%s", s.ClusterIP, s.Port, proto))
		if s.NodePort != 0 {
			fronts = append(fronts, fmt.Sprintf("<node>:%d/%s", s.NodePort, proto))
		}
		for _, ip := range append(append([]netip.Addr{}, s.LoadBalancerIPs...), s.ExternalIPs...) {
			fronts = append(fronts, fmt.Sprintf("%s:%d/%s", ip, s.Port, proto))
		}
		var backs []string
		for _, b := range s.Backends {
			var notes []string
			if !b.Serving() {
				notes = append(notes, "not serving")
			}
			if conns != nil {
				notes = append(notes, fmt.Sprintf("%d conns", conns[s.Key][netip.AddrPortFrom(b.Addr, b.Port)]))
			}
			back := fmt.Sprintf("%s:%d", b.Addr, b.Port)
			if len(notes) > 0 {
				back += " (" + strings.Join(notes, ", ") + ")"
			}
			backs = append(backs, back)
		}
		aff := "None"
		if s.AffinityTimeout > 0 {
			aff = "ClientIP " + s.AffinityTimeout.String()
		}
		if len(backs) == 0 {
			backs = []string{"<none: refused>"}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", s.Key, strings.Join(fronts, ","), strings.Join(backs, ","), aff)
	}
	return tw.Flush()
}
