package main

import (
	"context"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/skep-io/skep/bench/report"
	"github.com/skep-io/skep/bench/traffic"
)

// clientCommand is the hidden verb that runs the traffic benchmarks' load
// generator; they start this binary with it inside a client's network
// namespace.
const clientCommand = "client"

// trafficBenchCommands are the benchmarks of the data path, on a lab of
// their own: dataplane, nodeport, and the hidden load generator they run
// inside the lab's namespaces.
func trafficBenchCommands() []*cli.Command {
	flags := func() []cli.Flag {
		return append(reportFlags(), skepFlag(),
			&cli.StringFlag{Name: "sizes", Value: "1,1000,10000", Usage: "(scale) numbers of other Services installed, ascending, comma-separated"},
			&cli.DurationFlag{Name: "duration", Value: traffic.DefaultDuration, Usage: "(bounds) the measured window of each load"},
			&cli.IntFlag{Name: "concurrency", Value: traffic.DefaultConcurrency, Usage: "(load) connections (rr) or connect loops (crr) at once"},
			&cli.StringFlag{Name: "name", Value: "bench", Usage: "(lab) the benchmark lab's name; a lab of that name must not exist"},
			&cli.StringFlag{Name: "images", Usage: "(images) a DIR of the test images' OCI tarballs (default: _out/images, as make images writes it)"},
		)
	}
	return []*cli.Command{
		{
			Name: "dataplane",
			Usage: "a client pod to echo servers on another node: direct to the pod IPs, eBPF ClusterIP, iptables ClusterIP " +
				"(middle, first and last in KUBE-SERVICES), nftables ClusterIP, with N other Services; connections/s, requests/s, latency, CPU",
			Flags: flags(),
			Action: func(c *cli.Context) error {
				return benchTraffic(c, traffic.RunDataplane, "skep-bench dataplane: direct vs eBPF vs iptables vs nftables ClusterIP")
			},
		},
		{
			Name:  "nodeport",
			Usage: "from outside the cluster through a NodePort, backend local and remote, eBPF vs iptables vs nftables, with N other Services",
			Flags: flags(),
			Action: func(c *cli.Context) error {
				return benchTraffic(c, traffic.RunNodePort, "skep-bench nodeport: NodePort from outside, backend local and remote")
			},
		},
		{
			// A LoadSpec as JSON on stdin, the LoadResult on stdout.
			Name:   clientCommand,
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
	n, err := rounds(c)
	if err != nil {
		return err
	}
	skep, err := skepBinary(c)
	if err != nil {
		return err
	}
	images, err := imagesDir(c, skep)
	if err != nil {
		return err
	}
	self, err := thisBinary()
	if err != nil {
		return err
	}
	cfg := traffic.Config{
		Binary: skep, ImagesDir: images, ClientCommand: []string{self, clientCommand}, LabName: c.String("name"),
		Sizes: sizes, Rounds: n, Duration: c.Duration("duration"), Concurrency: c.Int("concurrency"),
		Progress: c.App.ErrWriter,
	}
	ctx, stop := benchContext(c)
	defer stop()
	rep := newBenchReport(title, traffic.Reference)
	rep.NName = "other services"
	return finishReport(c, rep, run(ctx, cfg, rep))
}
