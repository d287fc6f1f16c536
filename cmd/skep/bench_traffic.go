package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/urfave/cli/v2"

	"github.com/skep-io/skep/bench/report"
	"github.com/skep-io/skep/bench/traffic"
)

// trafficBenchCommands are the benchmarks of the data path, on a lab of
// their own: dataplane, nodeport, and the hidden load generator they run
// inside the lab's namespaces.
func trafficBenchCommands() []*cli.Command {
	flags := func() []cli.Flag {
		return []cli.Flag{benchOutFlag(), benchRoundsFlag(3),
			&cli.StringFlag{Name: "sizes", Value: "1,1000,10000", Usage: "(scale) numbers of other Services installed, ascending, comma-separated"},
			&cli.DurationFlag{Name: "duration", Value: traffic.DefaultDuration, Usage: "(bounds) the measured window of each load"},
			&cli.IntFlag{Name: "concurrency", Value: traffic.DefaultConcurrency, Usage: "(load) connections (rr) or connect loops (crr) at once"},
			&cli.StringFlag{Name: "name", Value: "bench", Usage: "(lab) the benchmark lab's name; a lab of that name must not exist"},
			&cli.StringFlag{Name: "images", Usage: "(images) a DIR of the test images' OCI tarballs (default: _out/images, as make images writes it)"},
		}
	}
	return []*cli.Command{
		{
			Name: "dataplane",
			Usage: "a client pod to echo servers on another node: direct to the pod IPs, eBPF ClusterIP, iptables ClusterIP " +
				"(middle, first and last in KUBE-SERVICES), with N other Services; connections/s, requests/s, latency, CPU",
			Flags: flags(),
			Action: func(c *cli.Context) error {
				return benchTraffic(c, traffic.RunDataplane, "skep bench dataplane: direct vs eBPF vs iptables ClusterIP")
			},
		},
		{
			Name:  "nodeport",
			Usage: "from outside the cluster through a NodePort, backend local and remote, eBPF vs iptables, with N other Services",
			Flags: flags(),
			Action: func(c *cli.Context) error {
				return benchTraffic(c, traffic.RunNodePort, "skep bench nodeport: NodePort from outside, backend local and remote")
			},
		},
		{
			// Started by the benchmarks with nsenter in a client's network
			// namespace: a LoadSpec as JSON on stdin, the LoadResult on
			// stdout.
			Name:   "client",
			Hidden: true,
			Usage:  "the traffic benchmarks' load generator (internal)",
			Action: func(c *cli.Context) error {
				ctx, stop := benchContext(c)
				defer stop()
				return traffic.ClientMain(ctx, os.Stdin, c.App.Writer)
			},
		},
	}
}

func benchTraffic(c *cli.Context, run func(ctx context.Context, cfg traffic.Config, rep *report.Report) error, title string) error {
	sizes, err := parseSizes("sizes", c.String("sizes"))
	if err != nil {
		return err
	}
	if c.Int("rounds") < 1 {
		return fmt.Errorf("--rounds %d: at least 1", c.Int("rounds"))
	}
	bin, err := os.Executable()
	if err == nil {
		bin, err = filepath.EvalSymlinks(bin)
	}
	if err != nil {
		return fmt.Errorf("find this binary, which the lab's nodes run: %w", err)
	}
	images := c.String("images")
	if images == "" {
		if images, err = defaultImagesDir(bin); err != nil {
			return err
		}
	}
	cfg := traffic.Config{
		Binary: bin, ImagesDir: images, LabName: c.String("name"),
		Sizes: sizes, Rounds: c.Int("rounds"), Duration: c.Duration("duration"), Concurrency: c.Int("concurrency"),
		Progress: c.App.ErrWriter,
	}
	ctx, stop := benchContext(c)
	defer stop()
	rep := newBenchReport(title, traffic.Reference)
	rep.NName = "other services"
	if err := run(ctx, cfg, rep); err != nil {
		// What was measured before the failure is still worth keeping.
		if len(rep.Samples) > 0 {
			_ = rep.Write(c.String("out"))
		}
		return err
	}
	return writeBenchReport(c, rep)
}
