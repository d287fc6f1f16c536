// Command skep-bench runs the benchmarks that back skep's claims (sync,
// propagation, pods, dataplane, nodeport), each running its variants
// interleaved and writing a report (CSV, a Markdown table, PNG charts).
//
// It is a binary of its own, not a verb of skep, because its reports pull
// in plotting, LaTeX, PDF and font packages that every node running
// `skep agent` would otherwise carry. The labs and servers it starts run
// the skep binary (--skep, default the skep next to this binary).
package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/skep-io/skep/bench/report"
	"github.com/skep-io/skep/lab"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	if err := newApp().Run(os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func newApp() *cli.App {
	return &cli.App{
		Name:     "skep-bench",
		Usage:    "measure skep against iptables and against itself at scale; writes CSV, a Markdown table and charts",
		Version:  version,
		Commands: append(controlPlaneBenchCommands(), trafficBenchCommands()...),
	}
}

// reportFlags are the flags of every benchmark: where the report goes and
// how many rounds.
func reportFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "out", Value: "_out/bench", Usage: "(report) directory for <bench>.csv, <bench>.md and <bench>-<metric>.png"},
		&cli.IntFlag{Name: "rounds", Value: 3, Usage: "(report) rounds; each runs every variant once, the order rotating"},
	}
}

// skepFlag names the skep binary of the benchmarks that start labs or
// servers.
func skepFlag() cli.Flag {
	return &cli.StringFlag{Name: "skep", Usage: "(lab) the skep binary the labs and servers run (default: skep next to this binary, as make build and make bench-build write them)"}
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
		Command:   "skep-bench " + strings.Join(os.Args[1:], " "),
		Reference: reference,
	}
}

// finishReport writes rep under --out and prints its tables. When the run
// failed it still writes what was measured before the failure, which is
// worth keeping, and returns the run's error.
func finishReport(c *cli.Context, rep *report.Report, runErr error) error {
	out := c.String("out")
	if runErr != nil {
		if len(rep.Samples) > 0 {
			_ = rep.Write(out)
		}
		return runErr
	}
	if err := rep.Write(out); err != nil {
		return err
	}
	for _, b := range rep.Benches() {
		fmt.Fprint(c.App.Writer, rep.Markdown(b))
	}
	fmt.Fprintf(c.App.ErrWriter, "report written to %s\n", out)
	return nil
}

// rounds is --rounds, at least 1.
func rounds(c *cli.Context) (int, error) {
	if n := c.Int("rounds"); n >= 1 {
		return n, nil
	}
	return 0, fmt.Errorf("--rounds %d: at least 1", c.Int("rounds"))
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

// splitList reads a comma-separated list of words, dropping empty ones.
func splitList(s string) []string {
	out := []string{}
	for _, w := range strings.Split(s, ",") {
		if w = strings.TrimSpace(w); w != "" {
			out = append(out, w)
		}
	}
	return out
}

// skepBinary is the skep binary the benchmark's labs and servers run:
// --skep, or else skep in the directory of this binary.
func skepBinary(c *cli.Context) (string, error) {
	self, err := thisBinary()
	if err != nil {
		return "", err
	}
	return findSkep(c.String("skep"), self)
}

// findSkep is flag when set, or else skep next to self, so that bin/skep
// and bin/skep-bench of one `make` go together.
func findSkep(flag, self string) (string, error) {
	if flag != "" {
		if err := checkExecutable(flag); err != nil {
			return "", fmt.Errorf("--skep %s: %w", flag, err)
		}
		return filepath.Abs(flag)
	}
	p := filepath.Join(filepath.Dir(self), "skep")
	if err := checkExecutable(p); err != nil {
		return "", fmt.Errorf("--skep: no skep binary next to this one (%w); build it with `make build`, or name one with --skep PATH", err)
	}
	return p, nil
}

// checkExecutable fails unless p is a regular file someone may execute.
func checkExecutable(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return &fs.PathError{Op: "run", Path: p, Err: errors.New("not an executable file")}
	}
	return nil
}

// imagesDir is --images, or else the test images `make images` wrote for
// the skep binary skep.
func imagesDir(c *cli.Context, skep string) (string, error) {
	if d := c.String("images"); d != "" {
		return d, nil
	}
	d, err := lab.DefaultImagesDir(skep)
	if err != nil {
		return "", fmt.Errorf("--images: %w, or name a directory of OCI tarballs with --images DIR", err)
	}
	return d, nil
}

// thisBinary is the skep-bench binary running, which the traffic
// benchmarks start again as their load generator.
func thisBinary() (string, error) {
	bin, err := os.Executable()
	if err == nil {
		bin, err = filepath.EvalSymlinks(bin)
	}
	if err != nil {
		return "", fmt.Errorf("find this binary: %w", err)
	}
	return bin, nil
}
