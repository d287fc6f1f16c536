package main

import (
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/skep-io/skep/agent/dataplane"
	"github.com/skep-io/skep/bench/pods"
	"github.com/skep-io/skep/bench/programming"
	"github.com/skep-io/skep/bench/propagation"
	"github.com/skep-io/skep/bench/setup"
)

// controlPlaneBenchCommands are the benchmarks of programming and
// propagating state: sync, propagation, pods.
func controlPlaneBenchCommands() []*cli.Command {
	return []*cli.Command{
		{
			Name:  "sync",
			Usage: "time to program N services in each dataplane from a cold start and to change one among N; agent heap and kernel state",
			Flags: append(reportFlags(),
				&cli.StringFlag{Name: "sizes", Value: "1000,10000,30000", Usage: "(scale) numbers of services, comma-separated"},
				&cli.StringFlag{Name: "modes", Value: "ebpf,iptables,nftables", Usage: "(variants) dataplanes to measure; ratios are to the first"},
				&cli.DurationFlag{Name: "timeout", Value: 30 * time.Minute, Usage: "(bounds) the longest one measurement (one mode, one size) may take; iptables takes minutes at 30,000"},
			),
			Action: benchSync,
		},
		{
			Name:  "propagation",
			Usage: "time from an API write of a Service, and of a backend change, until every node carries it: a lab's real agents and N simulated agents",
			Flags: append(reportFlags(), skepFlag(),
				&cli.StringFlag{Name: "agents", Value: "3,100,200,1000", Usage: "(scale) numbers of simulated agents (goroutines watching one skep server over HTTPS as agents do), comma-separated; \"\" for none"},
				&cli.StringFlag{Name: "nats", Value: "embedded,external", Usage: "(variants) the store of the simulated agents' server: embedded (skep server's own NATS, the default) and/or external (a nats-server process, --nats-url)"},
				&cli.IntFlag{Name: "lab-nodes", Value: 3, Usage: "(scale) nodes of the lab whose agents program eBPF maps; 0: no lab"},
				&cli.StringFlag{Name: "lab-name", Value: "skep-bench", Usage: "(lab) the lab's name; it must not exist yet"},
				&cli.DurationFlag{Name: "timeout", Value: time.Minute, Usage: "(bounds) the longest every node may take to carry one change"},
				&cli.StringFlag{Name: "work-dir", Hidden: true, Usage: "(debug) keep the simulated agents' server's data and log in DIR"},
				&cli.BoolFlag{Name: "verbose", Hidden: true, Usage: "(debug) log what the simulated agents' informers report"},
			),
			Action: benchPropagation,
		},
		{
			Name:  "pods",
			Usage: "pod start latency (create → Running) on a lab, and scheduler throughput with simulated nodes",
			Flags: append(reportFlags(), skepFlag(),
				&cli.IntFlag{Name: "pods", Value: 50, Usage: "(scale) pods started on the lab per round"},
				&cli.Float64Flag{Name: "rate", Value: 5, Usage: "(scale) pods created per second on the lab"},
				&cli.IntFlag{Name: "lab-nodes", Value: 3, Usage: "(scale) nodes of the lab; 0: no pod start latency"},
				&cli.StringFlag{Name: "lab-name", Value: "skep-bench", Usage: "(lab) the lab's name; it must not exist yet"},
				&cli.StringFlag{Name: "images", Usage: "(lab) a DIR of OCI image tarballs with skep/echo (default: _out/images, as make images writes it)"},
				&cli.IntFlag{Name: "sched-nodes", Value: 1000, Usage: "(scale) simulated nodes of the scheduler trial; 0: no scheduler trial"},
				&cli.IntFlag{Name: "sched-pods", Value: 10000, Usage: "(scale) pending pods the scheduler binds per round"},
				&cli.BoolFlag{Name: "no-fsync", Usage: "(scheduler) the store acknowledges writes before they reach the disk, as skep server --no-fsync"},
				&cli.DurationFlag{Name: "timeout", Value: 5 * time.Minute, Usage: "(bounds) the longest one round of either trial may take"},
			),
			Action: benchPods,
		},
	}
}

func benchSync(c *cli.Context) error {
	sizes, err := parseSizes("sizes", c.String("sizes"))
	if err != nil {
		return err
	}
	n, err := rounds(c)
	if err != nil {
		return err
	}
	modes := splitList(c.String("modes"))
	if len(modes) == 0 {
		return fmt.Errorf("--modes %q: name at least one of %s", c.String("modes"), strings.Join(dataplane.Modes, ", "))
	}
	ctx, stop := benchContext(c)
	defer stop()
	rep := newBenchReport("skep-bench sync: programming N services of 2 backends", modes[0])
	rep.NName = "services"
	rep.LogY = []string{programming.MetricSync, programming.MetricChange, programming.MetricApply}
	rep.Notes = []string{
		"sync_s: a cold start to every service programmed (ebpf: load and attach the programs, write the maps; " +
			"iptables: kube-proxy's rule layout in one iptables-restore; nftables: kube-proxy's nftables layout in one nft transaction), each mode in a fresh pin directory or network namespace. " +
			"change_ms: the sync after one service's backend changed among N (the middle one), given the whole desired state (Sync). " +
			"apply_ms: the same change given as the one changed Service (Apply), as the agent programs changes: eBPF writes that Service's map entries only, " +
			"iptables and nftables make kube-proxy's partial sync (the changed Service's chains, plus the dispatch chains or elements); the median of 11. " +
			"heap_MiB: Go heap the dataplane keeps after both syncs. bpf_map_MiB: memory the kernel charges for the node's eBPF maps (memlock in map info): the LRU maps " +
			"(conntrack, affinity, reverse NAT) are preallocated to capacity, the service, backend and name maps grow with their entries. " +
			"iptables_rules: rules in the namespace after the syncs. " +
			"nft_rules, nft_elements: rules, and elements of the verdict maps and sets, of the nftables table after the syncs.",
	}
	err = programming.Run(ctx, programming.Config{
		Sizes: sizes, Rounds: n, Modes: modes, Timeout: c.Duration("timeout"), Progress: c.App.ErrWriter,
	}, rep)
	return finishReport(c, rep, err)
}

func benchPropagation(c *cli.Context) error {
	agents := []int{} // none, where propagation.Config's nil means the default
	if strings.TrimSpace(c.String("agents")) != "" {
		var err error
		if agents, err = parseSizes("agents", c.String("agents")); err != nil {
			return err
		}
	}
	n, err := rounds(c)
	if err != nil {
		return err
	}
	bin, err := skepBinary(c)
	if err != nil {
		return err
	}
	cfg := propagation.Config{
		Binary: bin, Agents: agents, LabNodes: c.Int("lab-nodes"), WorkDir: c.String("work-dir"),
		NATS:    splitList(c.String("nats")),
		Options: setup.Options{LabName: c.String("lab-name"), Rounds: n, Timeout: c.Duration("timeout"), Progress: c.App.ErrWriter},
	}
	if c.Bool("verbose") {
		cfg.Logger = slog.New(slog.NewTextHandler(c.App.ErrWriter, nil))
	}
	ctx, stop := benchContext(c)
	defer stop()
	rep := newBenchReport("skep-bench propagation: API write to every node carrying it", "")
	rep.NName = "nodes"
	rep.Notes = []string{
		"service_*: from the create of a Service (its Endpoints already there) until the node carries it; " +
			"endpoints_*: from an update that moves its backend to another address until the node carries the new one. " +
			"p50 and p99 are across the nodes of one trial, then the median across rounds. " +
			"lab: real agents, a node carries it when its pinned eBPF maps balance the ClusterIP to the backend (polled every 1 ms). " +
			"sim-*-nats: goroutines that join one skep server with credentials of their own and, as an agent does, keep four watches " +
			"over HTTPS (Services, Endpoints, Nodes, their Pods) and renew a Lease every 10 s; one carries a change when its informer delivered it. " +
			"The server stores in its embedded NATS (skep server's default, fsync on every write) or in a separate nats-server " +
			"(Debian's, JetStream with its default flush interval) reached with --nats-url.",
	}
	return finishReport(c, rep, propagation.Run(ctx, cfg, rep))
}

func benchPods(c *cli.Context) error {
	n, err := rounds(c)
	if err != nil {
		return err
	}
	if c.Int("pods") < 1 || c.Float64("rate") <= 0 {
		return fmt.Errorf("--pods %d --rate %g: want at least one pod at a positive rate", c.Int("pods"), c.Float64("rate"))
	}
	cfg := pods.Config{
		LabNodes: c.Int("lab-nodes"), Pods: c.Int("pods"), Rate: c.Float64("rate"),
		SchedulerNodes: c.Int("sched-nodes"), SchedulerPods: c.Int("sched-pods"), NoFsync: c.Bool("no-fsync"),
		Options: setup.Options{LabName: c.String("lab-name"), Rounds: n, Timeout: c.Duration("timeout"), Progress: c.App.ErrWriter},
	}
	if cfg.SchedulerNodes == 0 {
		cfg.SchedulerNodes = -1 // none, where pods.Config's zero means the default
	}
	if cfg.SchedulerNodes > 0 && cfg.SchedulerPods < 1 {
		return fmt.Errorf("--sched-pods %d: at least 1", cfg.SchedulerPods)
	}
	if cfg.LabNodes > 0 {
		if cfg.Binary, err = skepBinary(c); err != nil {
			return err
		}
		if cfg.ImagesDir, err = imagesDir(c, cfg.Binary); err != nil {
			return err
		}
	}
	ctx, stop := benchContext(c)
	defer stop()
	rep := newBenchReport("skep-bench pods: pod start latency and scheduler throughput", "")
	rep.NName = "pods"
	rep.Notes = []string{
		fmt.Sprintf("start_*: %d pods of one echo-server container created at %g/s on a lab, "+
			"from just before each create until a watch of the API saw the pod Running "+
			"(scheduler, agent, containerd, status write, watch), p50 and p99 across the pods of a round; N is the pods per round.", cfg.Pods, cfg.Rate),
		fmt.Sprintf("scheduled_per_s: %d pending pods (100m CPU, 128Mi, 100 ReplicaSets) bound onto %d simulated Ready nodes "+
			"by the scheduler in-process, through the real API server and a NATS JetStream store (fsync %s), "+
			"timed from the scheduler's start (its first list included) to the last binding; N is the pods.",
			cfg.SchedulerPods, cfg.SchedulerNodes, map[bool]string{true: "off", false: "on, as skep server"}[cfg.NoFsync]),
	}
	return finishReport(c, rep, pods.Run(ctx, cfg, rep))
}
