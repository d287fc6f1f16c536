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

	"github.com/urfave/cli/v2"

	"github.com/skep-io/skep/agent/dataplane"
	"github.com/skep-io/skep/agent/dataplane/ebpf"
	"github.com/skep-io/skep/agent/dataplane/iptables"
)

func dataplaneCommand() *cli.Command {
	return &cli.Command{
		Name:  "dataplane",
		Usage: "inspect what this node's dataplane holds",
		Subcommands: []*cli.Command{{
			Name:  "services",
			Usage: "the services programmed on this node: frontend → backends, read back from the eBPF maps or the iptables chains",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "node-name", Usage: "the node whose pins to read (eBPF); default the hostname"},
				&cli.StringFlag{Name: "dataplane", Usage: "ebpf or iptables; default: whichever this node has"},
			},
			Action: func(c *cli.Context) error {
				node := c.String("node-name")
				if node == "" {
					hn, _ := os.Hostname()
					node = strings.ToLower(hn)
				}
				svcs, mode, err := readDataplane(c.Context, node, c.String("dataplane"))
				if err != nil {
					return err
				}
				return printDataplane(c.App.Writer, mode, svcs)
			},
		}},
	}
}

func readDataplane(ctx context.Context, node, mode string) ([]dataplane.Service, string, error) {
	pins := filepath.Join(ebpf.DefaultPinRoot, node)
	if mode == "" {
		mode = "iptables"
		if _, err := os.Stat(pins); err == nil {
			mode = "ebpf"
		}
	}
	switch mode {
	case "ebpf":
		if _, err := os.Stat(pins); err != nil {
			return nil, mode, fmt.Errorf("no eBPF dataplane of node %s here: %s does not exist (is the agent running with --node-name %s?)", node, pins, node)
		}
		s, err := ebpf.ReadServices(ebpf.Config{NodeName: node})
		return s, mode, err
	case "iptables":
		p, err := iptables.New(ctx, iptables.Config{NodeName: node})
		if err != nil {
			return nil, mode, err
		}
		defer p.Close()
		s, err := p.Services(ctx)
		return s, mode, err
	}
	return nil, mode, fmt.Errorf("--dataplane %q: allowed are ebpf, iptables", mode)
}

func printDataplane(w interface{ Write([]byte) (int, error) }, mode string, svcs []dataplane.Service) error {
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
			mark := ""
			if !b.Serving() {
				mark = " (not serving)"
			}
			backs = append(backs, fmt.Sprintf("%s:%d%s", b.Addr, b.Port, mark))
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
