package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/skep-io/skep/bench/pods"
	"github.com/skep-io/skep/bench/programming"
	"github.com/skep-io/skep/bench/propagation"
	"github.com/skep-io/skep/bench/report"
)

// benchCommand is `skep bench`: the benchmarks that back skep's claims,
// each running its variants interleaved and writing a report (CSV, a
// Markdown table, PNG charts) under --out.
func benchCommand() *cli.Command {
	return &cli.Command{
		Name:        "bench",
		Usage:       "measure skep against iptables and against itself at scale; writes CSV, a Markdown table and charts",
		Subcommands: append(controlPlaneBenchCommands(), trafficBenchCommands()...),
	}
}

// controlPlaneBenchCommands are the benchmarks of programming and
// propagating state: sync, propagation, pods.
func controlPlaneBenchCommands() []*cli.Command {
	return []*cli.Command{
		{
			Name:  "sync",
			Usage: "time to program N services in each dataplane from a cold start and to change one among N; agent heap and kernel state",
			Flags: []cli.Flag{benchOutFlag(), benchRoundsFlag(3),
				&cli.StringFlag{Name: "sizes", Value: "1000,10000,30000", Usage: "(scale) numbers of services, comma-separated"},
				&cli.StringFlag{Name: "modes", Value: "ebpf,iptables", Usage: "(variants) dataplanes to measure; ratios are to the first"},
				&cli.DurationFlag{Name: "timeout", Value: 30 * time.Minute, Usage: "(bounds) the longest one measurement (one mode, one size) may take; iptables takes minutes at 30,000"},
			},
			Action: benchSync,
		},
		{
			Name:  "propagation",
			Usage: "time from an API write of a Service, and of a backend change, until every node carries it: a lab's real agents and N simulated agents",
			Flags: []cli.Flag{benchOutFlag(), benchRoundsFlag(3),
				&cli.StringFlag{Name: "agents", Value: "3,100,200,1000", Usage: "(scale) numbers of simulated agents (goroutines watching one skep server over HTTPS as agents do), comma-separated; \"\" for none"},
				&cli.StringFlag{Name: "nats", Value: "embedded,external", Usage: "(variants) the store of the simulated agents' server: embedded (skep server's own NATS, the default) and/or external (a nats-server process, --nats-url)"},
				&cli.IntFlag{Name: "lab-nodes", Value: 3, Usage: "(scale) nodes of the lab whose agents program eBPF maps; 0: no lab"},
				&cli.StringFlag{Name: "lab-name", Value: "skep-bench", Usage: "(lab) the lab's name; it must not exist yet"},
				&cli.DurationFlag{Name: "timeout", Value: time.Minute, Usage: "(bounds) the longest every node may take to carry one change"},
				&cli.StringFlag{Name: "work-dir", Hidden: true, Usage: "(debug) keep the simulated agents' server's data and log in DIR"},
				&cli.BoolFlag{Name: "verbose", Hidden: true, Usage: "(debug) log what the simulated agents' informers report"},
			},
			Action: benchPropagation,
		},
		{
			Name:  "pods",
			Usage: "pod start latency (create → Running) on a lab, and scheduler throughput with simulated nodes",
			Flags: []cli.Flag{benchOutFlag(), benchRoundsFlag(3),
				&cli.IntFlag{Name: "pods", Value: 50, Usage: "(scale) pods started on the lab per round"},
				&cli.Float64Flag{Name: "rate", Value: 5, Usage: "(scale) pods created per second on the lab"},
				&cli.IntFlag{Name: "lab-nodes", Value: 3, Usage: "(scale) nodes of the lab; 0: no pod start latency"},
				&cli.StringFlag{Name: "lab-name", Value: "skep-bench", Usage: "(lab) the lab's name; it must not exist yet"},
				&cli.StringFlag{Name: "images", Usage: "(lab) a DIR of OCI image tarballs with skep/echo (default: _out/images, as make images writes it)"},
				&cli.IntFlag{Name: "sched-nodes", Value: 1000, Usage: "(scale) simulated nodes of the scheduler trial; 0: no scheduler trial"},
				&cli.IntFlag{Name: "sched-pods", Value: 10000, Usage: "(scale) pending pods the scheduler binds per round"},
				&cli.BoolFlag{Name: "no-fsync", Usage: "(scheduler) the store acknowledges writes before they reach the disk, as skep server --no-fsync"},
				&cli.DurationFlag{Name: "timeout", Value: 5 * time.Minute, Usage: "(bounds) the longest one round of either trial may take"},
			},
			Action: benchPods,
		},
	}
}

func benchOutFlag() cli.Flag {
	return &cli.StringFlag{Name: "out", Value: "_out/bench", Usage: "(report) directory for <bench>.csv, <bench>.md and <bench>-<metric>.png"}
}

func benchRoundsFlag(def int) cli.Flag {
	return &cli.IntFlag{Name: "rounds", Value: def, Usage: "(report) rounds; each runs every variant once, the order rotating"}
}

// benchContext ends on SIGINT or SIGTERM, so that an interrupted benchmark
// still removes what it made.
func benchContext(c *cli.Context) (context.Context, context.CancelFunc) {
	return signal.NotifyContext(c.Context, syscall.SIGINT, syscall.SIGTERM)
}

// newBenchReport is a report that names the machine and the command line
// that made it.
func newBenchReport(title, reference string) *report.Report {
	return &report.Report{
		Title:     title,
		Machine:   report.MachineDescription(),
		Command:   "skep " + strings.Join(os.Args[1:], " "),
		Reference: reference,
	}
}

// writeBenchReport writes rep under --out and prints its tables.
func writeBenchReport(c *cli.Context, rep *report.Report) error {
	out := c.String("out")
	if err := rep.Write(out); err != nil {
		return err
	}
	for _, b := range rep.Benches() {
		fmt.Fprint(c.App.Writer, rep.Markdown(b))
	}
	fmt.Fprintf(c.App.ErrWriter, "report written to %s\n", out)
	return nil
}

// parseSizes reads a comma-separated list of positive integers.
func parseSizes(flag, s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(strings.ReplaceAll(f, "_", ""))
		if f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("--%s %q: want positive integers separated by commas, e.g. 1000,10000", flag, s)
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("--%s: no sizes given", flag)
	}
	return out, nil
}

func benchSync(c *cli.Context) error {
	sizes, err := parseSizes("sizes", c.String("sizes"))
	if err != nil {
		return err
	}
	if c.Int("rounds") < 1 {
		return fmt.Errorf("--rounds %d: at least 1", c.Int("rounds"))
	}
	var modes []string
	for _, m := range strings.Split(c.String("modes"), ",") {
		if m = strings.TrimSpace(m); m != "" {
			modes = append(modes, m)
		}
	}
	ctx, stop := benchContext(c)
	defer stop()
	rep := newBenchReport("skep bench sync: programming N services of 2 backends", modes[0])
	rep.NName = "services"
	rep.LogY = []string{programming.MetricSync, programming.MetricChange}
	rep.Notes = []string{
		"sync_s: a cold start to every service programmed (ebpf: load and attach the programs, write the maps; " +
			"iptables: kube-proxy's rule layout in one iptables-restore), each mode in a fresh pin directory or network namespace. " +
			"change_ms: the sync after one service's backend changed among N (the middle one). " +
			"heap_MiB: Go heap the dataplane keeps after both syncs. bpf_map_MiB: memory the kernel charges for the node's eBPF maps (memlock in map info): the LRU maps " +
			"(conntrack, affinity, reverse NAT) are preallocated to capacity, the service, backend and name maps grow with their entries. " +
			"iptables_rules: rules in the namespace after the syncs.",
	}
	err = programming.Run(ctx, programming.Config{
		Sizes: sizes, Rounds: c.Int("rounds"), Modes: modes, Timeout: c.Duration("timeout"), Progress: c.App.ErrWriter,
	}, rep)
	if err != nil {
		// What was measured before the failure is still worth keeping.
		if len(rep.Samples) > 0 {
			_ = rep.Write(c.String("out"))
		}
		return err
	}
	return writeBenchReport(c, rep)
}

func benchPropagation(c *cli.Context) error {
	var agents []int
	if strings.TrimSpace(c.String("agents")) != "" {
		var err error
		if agents, err = parseSizes("agents", c.String("agents")); err != nil {
			return err
		}
	}
	if c.Int("rounds") < 1 {
		return fmt.Errorf("--rounds %d: at least 1", c.Int("rounds"))
	}
	bin, err := thisBinary()
	if err != nil {
		return err
	}
	ctx, stop := benchContext(c)
	defer stop()
	rep := newBenchReport("skep bench propagation: API write to every node carrying it", "")
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
	cfg := propagation.Config{
		Binary: bin, Agents: agents, LabNodes: c.Int("lab-nodes"), LabName: c.String("lab-name"),
		Rounds: c.Int("rounds"), Timeout: c.Duration("timeout"), Progress: c.App.ErrWriter, WorkDir: c.String("work-dir"),
		NATS: []string{},
	}
	for _, k := range strings.Split(c.String("nats"), ",") {
		if k = strings.TrimSpace(k); k != "" {
			cfg.NATS = append(cfg.NATS, k)
		}
	}
	if c.Bool("verbose") {
		cfg.Logger = newLogger()
	}
	if agents == nil {
		cfg.Agents = []int{}
	}
	if err := propagation.Run(ctx, cfg, rep); err != nil {
		if len(rep.Samples) > 0 {
			_ = rep.Write(c.String("out"))
		}
		return err
	}
	return writeBenchReport(c, rep)
}

func benchPods(c *cli.Context) error {
	if c.Int("rounds") < 1 {
		return fmt.Errorf("--rounds %d: at least 1", c.Int("rounds"))
	}
	if c.Int("pods") < 1 || c.Float64("rate") <= 0 {
		return fmt.Errorf("--pods %d --rate %g: want at least one pod at a positive rate", c.Int("pods"), c.Float64("rate"))
	}
	cfg := pods.Config{
		LabNodes: c.Int("lab-nodes"), LabName: c.String("lab-name"), Pods: c.Int("pods"), Rate: c.Float64("rate"),
		SchedulerNodes: c.Int("sched-nodes"), SchedulerPods: c.Int("sched-pods"), NoFsync: c.Bool("no-fsync"),
		Rounds: c.Int("rounds"), Timeout: c.Duration("timeout"), Progress: c.App.ErrWriter,
	}
	if cfg.SchedulerNodes == 0 {
		cfg.SchedulerNodes = -1 // none, where pods.Config's zero means the default
	}
	if cfg.SchedulerNodes > 0 && cfg.SchedulerPods < 1 {
		return fmt.Errorf("--sched-pods %d: at least 1", cfg.SchedulerPods)
	}
	if cfg.LabNodes > 0 {
		var err error
		if cfg.Binary, err = thisBinary(); err != nil {
			return err
		}
		if cfg.ImagesDir = c.String("images"); cfg.ImagesDir == "" {
			if cfg.ImagesDir, err = defaultImagesDir(cfg.Binary); err != nil {
				return err
			}
		}
	}
	ctx, stop := benchContext(c)
	defer stop()
	rep := newBenchReport("skep bench pods: pod start latency and scheduler throughput", "")
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
	if err := pods.Run(ctx, cfg, rep); err != nil {
		if len(rep.Samples) > 0 {
			_ = rep.Write(c.String("out"))
		}
		return err
	}
	return writeBenchReport(c, rep)
}

// thisBinary is the skep binary running, which labs and servers a
// benchmark starts run too.
func thisBinary() (string, error) {
	bin, err := os.Executable()
	if err == nil {
		bin, err = filepath.EvalSymlinks(bin)
	}
	if err != nil {
		return "", fmt.Errorf("find this binary, which the benchmark's servers and agents run: %w", err)
	}
	return bin, nil
}
