package propagation

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/skep-io/skep/bench/report"
	"github.com/skep-io/skep/bench/setup"
	"github.com/skep-io/skep/lab/labtest"
)

// skepBinary is built once: the lab and the simulated agents' server run it.
var skepBinary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "skep-bin-")
	if err != nil {
		panic(err)
	}
	skepBinary = filepath.Join(dir, "skep")
	if out, err := exec.Command("go", "build", "-o", skepBinary, "github.com/skep-io/skep/cmd/skep").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build skep: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// TestRun measures a one-node lab and five simulated agents on each kind of
// NATS for one round:
// every metric gets a sample per variant, with latencies a real system
// could have, and nothing is left running.
func TestRun(t *testing.T) {
	labtest.BecomeSubreaper()
	var progress bytes.Buffer
	cfg := Config{
		Binary: skepBinary, Agents: []int{5}, LabNodes: 1, WorkDir: t.TempDir(),
		Options: setup.Options{LabName: labtest.Name("bprop"), Rounds: 1, Timeout: 30 * time.Second, Progress: &progress},
	}
	// Short: containerd's socket path below it must stay under 108 bytes.
	cfg.LabDir = filepath.Join(os.TempDir(), "skep-lab-"+cfg.LabName)
	rep := &report.Report{}
	if err := Run(t.Context(), cfg, rep); err != nil {
		t.Fatalf("Run: %v\n%s", err, progress.String())
	}
	t.Log(progress.String())
	got := map[string]report.Sample{}
	for _, s := range rep.Samples {
		got[s.Variant+" "+s.Metric] = s
	}
	for _, v := range []struct {
		variant string
		n       int
	}{{VariantLab, 1}, {SimVariant(NATSEmbedded), 5}, {SimVariant(NATSExternal), 5}} {
		for _, m := range []string{MetricServiceP50, MetricServiceP99, MetricEndpointsP50, MetricEndpointsP99} {
			s, ok := got[v.variant+" "+m]
			switch {
			case !ok:
				t.Errorf("no sample of %s %s; got %v", v.variant, m, rep.Samples)
			case s.N != v.n || s.Unit != "ms":
				t.Errorf("%s %s: N %d unit %s, want N %d in ms", v.variant, m, s.N, s.Unit, v.n)
			case s.Value <= 0 || s.Value > 30000:
				t.Errorf("%s %s = %vms, want more than 0 and at most the 30s timeout", v.variant, m, s.Value)
			}
		}
	}
	for _, note := range rep.Notes {
		t.Errorf("note: %s", note) // a size not measured, or Lease renewals that failed
	}
	if !labtest.WaitShimsGone(10 * time.Second) {
		t.Errorf("containerd shims of the lab still running")
	}
}
