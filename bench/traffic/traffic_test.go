package traffic

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/skep-io/skep/bench/report"
	"github.com/skep-io/skep/lab"
	"github.com/skep-io/skep/lab/labtest"
)

var skepBinary, imagesDir string

func TestMain(m *testing.M) {
	// Re-executed by the benchmark inside a client's network namespace:
	// the load generator.
	if len(os.Args) == 2 && os.Args[1] == "bench-client" {
		if err := ClientMain(context.Background(), os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	if err := labtest.BecomeSubreaper(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	labtest.Main(m, "skep-bench-traffic-", func(skep, images string) { skepBinary, imagesDir = skep, images })
}

// tinyConfig is a benchmark run cut to the least that still goes through
// every path: one other Service, one round, a second per load.
func tinyConfig(t *testing.T, prefix string) Config {
	name := labtest.Name(prefix)
	return Config{
		Binary: skepBinary, ImagesDir: imagesDir,
		ClientCommand: []string{os.Args[0], "bench-client"},
		LabName:       name, LabDir: filepath.Join(os.TempDir(), "skep-lab-"+name),
		Sizes: []int{1}, Rounds: 1, Duration: time.Second, Warmup: 200 * time.Millisecond, Concurrency: 2,
		Progress: progressWriter{t},
	}
}

// checkSamples checks that every variant has sane, non-zero samples of
// every metric of both loads, and that the report writes.
func checkSamples(t *testing.T, rep *report.Report, bench string, variants []variant) {
	t.Helper()
	got := map[string]float64{}
	for _, s := range rep.Samples {
		if s.Bench != bench || s.N != 1 {
			t.Errorf("sample %+v: want bench %s, N 1", s, bench)
		}
		got[s.Variant+" "+s.Metric] = s.Value
	}
	for _, v := range variants {
		for _, kind := range []string{"crr", "rr"} {
			rate := got[v.name+" "+kind+"_conn_per_s"]
			if kind == "rr" {
				rate = got[v.name+" "+kind+"_req_per_s"]
			}
			p50, p99 := got[v.name+" "+kind+"_p50_us"], got[v.name+" "+kind+"_p99_us"]
			cpu, labCPU := got[v.name+" "+kind+"_client_cpu_us"], got[v.name+" "+kind+"_lab_cpu_us"]
			errs := got[v.name+" "+kind+"_errors"]
			t.Logf("%s %-16s %s: %.0f/s p50 %.0fµs p99 %.0fµs cpu %.1fµs lab %.1fµs errors %.0f", bench, v.name, kind, rate, p50, p99, cpu, labCPU, errs)
			switch {
			case rate < 20:
				t.Errorf("%s %s: %.1f/s, want at least 20", v.name, kind, rate)
			case p50 <= 0 || p99 < p50 || p99 > 3e6:
				t.Errorf("%s %s: p50 %.0fµs p99 %.0fµs, want 0 < p50 <= p99 < 3s", v.name, kind, p50, p99)
			case cpu <= 0 || labCPU < cpu:
				t.Errorf("%s %s: client CPU %.1fµs, lab CPU %.1fµs per transaction, want 0 < client <= lab", v.name, kind, cpu, labCPU)
			case errs > rate/100:
				t.Errorf("%s %s: %.0f errors against %.0f/s", v.name, kind, errs, rate)
			}
			if kind == "crr" {
				c50, c99 := got[v.name+" crr_connect_p50_us"], got[v.name+" crr_connect_p99_us"]
				if c50 <= 0 || c99 < c50 || c50 > p50 {
					t.Errorf("%s crr: connect p50 %.0fµs p99 %.0fµs, transaction p50 %.0fµs, want 0 < connect p50 <= connect p99, connect p50 <= transaction p50",
						v.name, c50, c99, p50)
				}
			}
		}
	}
	dir := t.TempDir()
	if err := rep.Write(dir); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{bench + ".csv", bench + ".md", report.ChartName(bench, "crr_conn_per_s")} {
		if fi, err := os.Stat(filepath.Join(dir, f)); err != nil || fi.Size() == 0 {
			t.Errorf("report file %s: %v", f, err)
		}
	}
}

// TestDataplaneBench runs `skep-bench dataplane` in miniature on a real
// lab and checks that the lab is gone afterwards.
func TestDataplaneBench(t *testing.T) {
	cfg := tinyConfig(t, "tbd")
	rep := &report.Report{Reference: Reference}
	err := RunDataplane(context.Background(), cfg, rep)
	checkLabGone(t, cfg)
	if err != nil {
		t.Fatal(err)
	}
	checkSamples(t, rep, "dataplane", dataplaneVariants)
}

// TestNodePortBench runs `skep-bench nodeport` in miniature.
func TestNodePortBench(t *testing.T) {
	cfg := tinyConfig(t, "tbn")
	rep := &report.Report{Reference: Reference}
	err := RunNodePort(context.Background(), cfg, rep)
	checkLabGone(t, cfg)
	if err != nil {
		t.Fatal(err)
	}
	checkSamples(t, rep, "nodeport", nodePortVariants)
}

// checkLabGone fails the test when the benchmark left its lab, or shims
// of its nodes' containerds, behind.
func checkLabGone(t *testing.T, cfg Config) {
	t.Helper()
	if _, err := lab.Open(cfg.LabName, cfg.LabDir); err == nil {
		t.Errorf("lab %s still has its state in %s after the benchmark", cfg.LabName, cfg.LabDir)
	}
	if _, err := os.Stat(cfg.LabDir); err == nil {
		t.Errorf("lab directory %s still exists", cfg.LabDir)
	}
	for _, pattern := range []string{"/run/netns/sklab-" + cfg.LabName + "-*", "/sys/fs/bpf/skep/" + cfg.LabName + "-node*",
		"/sys/fs/cgroup/unified/sklab-" + cfg.LabName} {
		if left, _ := filepath.Glob(pattern); len(left) > 0 {
			t.Errorf("left behind: %v", left)
		}
	}
	if !labtest.WaitShimsGone(15 * time.Second) {
		t.Errorf("containerd shims still running 15s after the benchmark")
	}
}

type progressWriter struct{ t *testing.T }

func (w progressWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p[:len(p)-min(1, len(p))]))
	return len(p), nil
}

// TestConfigNeedsClientCommand: the load generator lives in skep-bench,
// not in the skep binary the lab runs, so a Config must say how to start
// it rather than guess from Binary.
func TestConfigNeedsClientCommand(t *testing.T) {
	cfg := Config{Binary: "/usr/local/bin/skep", ImagesDir: t.TempDir()}
	if err := cfg.setDefaults(); err == nil || !strings.Contains(err.Error(), "client command") {
		t.Errorf("setDefaults with no ClientCommand: error %v; want one naming the client command", err)
	}
	cfg.ClientCommand = []string{"/usr/local/bin/skep-bench", "client"}
	if err := cfg.setDefaults(); err != nil {
		t.Errorf("setDefaults with a ClientCommand: %v", err)
	}
}
