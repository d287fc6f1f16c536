package main

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/skep-io/skep/agent/dataplane"
	"github.com/skep-io/skep/agent/dataplane/ebpf"
	"github.com/skep-io/skep/agent/node"
)

func agentCommand() *cli.Command {
	return &cli.Command{
		Name:  "agent",
		Usage: "run the node agent: join the cluster, program Services into the kernel (eBPF, iptables or nftables)",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "server", EnvVars: []string{"SKEP_SERVER"}, Usage: "(cluster) the API server, https://HOST:6443"},
			&cli.StringFlag{Name: "token", EnvVars: []string{"SKEP_TOKEN"}, Usage: "(cluster) the node-join token: the server's <data-dir>/node-token; it also pins the server's CA"},
			&cli.StringFlag{Name: "ca", Usage: "(cluster) the server's CA certificate, when the token pins none"},
			&cli.StringFlag{Name: "node-name", Usage: "(node) the node's name; default the hostname"},
			&cli.StringFlag{Name: "node-ip", Usage: "(node) the node's InternalIP; default the address of the default route's interface"},
			&cli.StringFlag{Name: "interface", Usage: "(node) the interface with the node IP, where NodePort traffic from outside arrives; default found from --node-ip"},
			&cli.StringFlag{Name: "data-dir", Value: "/var/lib/skep/agent", Usage: "(data) the agent's credential and state"},
			&cli.StringFlag{Name: "dataplane", Value: "ebpf", Usage: "(networking) ebpf, iptables or nftables; starting with one removes the others' state"},
			&cli.StringFlag{Name: "cgroup-root", Value: "/sys/fs/cgroup/unified", Usage: "(networking) the cgroup2 directory whose processes the eBPF socket programs balance"},
			&cli.StringFlag{Name: "cluster-cidr", Value: "10.244.0.0/16", Usage: "(networking) the pod addresses of the whole cluster"},
			&cli.StringFlag{Name: "service-cidr", Value: "10.96.0.0/12", Usage: "(networking) the ClusterIP range, as the server's --service-cidr; a connect to an address in it that no service has fails at once instead of leaving the node; empty: no such guard"},
			&cli.StringFlag{Name: "images", Usage: "(images) a directory of OCI image tarballs (*.tar) to import at start, for nodes with no registry"},
			&cli.StringFlag{Name: "containerd-address", Usage: "(runtime) an existing containerd's socket; default: start one of the agent's own under --data-dir"},
			&cli.StringSliceFlag{Name: "dns-upstream", Usage: "(dns) resolvers for names outside the cluster, ip or ip:port; default: the node's /etc/resolv.conf"},
			&cli.StringFlag{Name: "metrics-bind-address", Value: "127.0.0.1:10249", Usage: "(metrics) where Prometheus metrics are served over HTTP, as kube-proxy's; empty: not served"},
			&cli.IntFlag{Name: "agent-port", Value: 10250, Usage: "(node) port of the agent's HTTPS endpoint on --node-ip, where the API server reads logs, runs exec and imports images; 0: any free port, published in the Node's status"},
			&cli.DurationFlag{Name: "node-lease-duration", Value: 40 * time.Second, Usage: "(node) how long the node's Lease lasts unrenewed; it is renewed every quarter of it"},
			&cli.BoolFlag{Name: "bpf-stats", Usage: "(metrics) keep the kernel's BPF run-time statistics on while the agent runs, so that " +
				"skep_bpf_program_run_time_seconds_total and _runs_total grow: what each eBPF program costs per run. Counting adds two clock " +
				"reads to every run (tens of ns), so it is off unless asked; `skep dataplane stats` turns it on for a window of its own"},
			&cli.DurationFlag{Name: "full-sync-interval", Value: node.DefaultFullSyncInterval, Usage: "(dataplane) how often every Service is reconciled in full; in between only changed Services are written"},
			&cli.BoolFlag{Name: "cleanup", Usage: "remove everything the agent made on this node (pods, containerd, pod network, programs, pins, links, chains), and exit"},
		},
		Action: func(c *cli.Context) error {
			cfg, err := agentConfigFrom(c)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			if c.Bool("cleanup") {
				return node.Cleanup(ctx, cfg)
			}
			if cfg.Server == "" {
				return fmt.Errorf("--server is required: the API server's URL, https://HOST:6443")
			}
			if c.Bool("bpf-stats") {
				if cfg.Dataplane != "ebpf" {
					return fmt.Errorf("--bpf-stats counts the eBPF programs' costs: it needs --dataplane ebpf, not %s", cfg.Dataplane)
				}
				stop, err := ebpf.EnableStats()
				if err != nil {
					return fmt.Errorf("--bpf-stats: %w", err)
				}
				defer stop.Close()
			}
			a, err := node.New(ctx, cfg)
			if err != nil {
				return err
			}
			return a.Run(ctx)
		},
	}
}

func agentConfigFrom(c *cli.Context) (node.Config, error) {
	cfg := node.Config{
		Server: strings.TrimRight(c.String("server"), "/"), JoinToken: strings.TrimSpace(c.String("token")), CAFile: c.String("ca"),
		Name: c.String("node-name"), DataDir: c.String("data-dir"), Dataplane: c.String("dataplane"),
		CgroupRoot: c.String("cgroup-root"), Interface: c.String("interface"), Logger: newLogger(),
		LeaseDuration: c.Duration("node-lease-duration"), ImagesDir: c.String("images"), ContainerdAddress: c.String("containerd-address"), DNSUpstreams: c.StringSlice("dns-upstream"),
		AgentPort: c.Int("agent-port"), MetricsAddr: c.String("metrics-bind-address"),
		FullSyncInterval: c.Duration("full-sync-interval"),
	}
	if cfg.FullSyncInterval < time.Second {
		return cfg, fmt.Errorf("--full-sync-interval %s: must be at least 1s", cfg.FullSyncInterval)
	}
	if cfg.AgentPort < 0 || cfg.AgentPort > 65535 {
		return cfg, fmt.Errorf("--agent-port %d: must be 0 to 65535", cfg.AgentPort)
	}
	if cfg.MetricsAddr != "" {
		if _, _, err := net.SplitHostPort(cfg.MetricsAddr); err != nil {
			return cfg, fmt.Errorf("--metrics-bind-address %q: want host:port: %w", cfg.MetricsAddr, err)
		}
	}
	if err := dataplane.CheckMode(cfg.Dataplane); err != nil {
		return cfg, fmt.Errorf("--%w", err)
	}
	if cfg.Name == "" {
		hn, err := os.Hostname()
		if err != nil {
			return cfg, fmt.Errorf("--node-name: none given and no hostname: %w", err)
		}
		cfg.Name = strings.ToLower(hn)
	}
	var err error
	if cfg.ClusterCIDR, err = netip.ParsePrefix(c.String("cluster-cidr")); err != nil {
		return cfg, fmt.Errorf("--cluster-cidr %q: %w", c.String("cluster-cidr"), err)
	}
	if s := c.String("service-cidr"); s != "" {
		if cfg.ServiceCIDR, err = netip.ParsePrefix(s); err != nil || !cfg.ServiceCIDR.Addr().Is4() {
			return cfg, fmt.Errorf("--service-cidr %q: must be an IPv4 prefix such as 10.96.0.0/12", s)
		}
	}
	if s := c.String("node-ip"); s != "" {
		if cfg.NodeIP, err = netip.ParseAddr(s); err != nil || !cfg.NodeIP.Is4() {
			return cfg, fmt.Errorf("--node-ip %q: must be an IPv4 address", s)
		}
	} else if !c.Bool("cleanup") {
		ip, ifc, err := node.DefaultNodeIP()
		if err != nil {
			return cfg, err
		}
		cfg.NodeIP = ip
		if cfg.Interface == "" {
			cfg.Interface = ifc
		}
	}
	if _, err := os.Stat(filepath.Join(cfg.CgroupRoot, "cgroup.procs")); err != nil {
		return cfg, fmt.Errorf("--cgroup-root %s: not a cgroup2 directory: %w", cfg.CgroupRoot, err)
	}
	return cfg, nil
}
