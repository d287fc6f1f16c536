package pods

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/skep-io/skep/bench/report"
	"github.com/skep-io/skep/bench/setup"
	"github.com/skep-io/skep/lab/labtest"
)

// skepBinary and imagesDir are built once: the lab runs the one and
// imports the other.
var skepBinary, imagesDir string

func TestMain(m *testing.M) {
	labtest.Main(m, "skep-bench-pods-", func(skep, images string) { skepBinary, imagesDir = skep, images })
}

// TestRun starts three pods on a one-node lab and schedules 200 pods on 20
// simulated nodes, once: both variants get their samples, and the lab and
// its pods are gone afterwards.
func TestRun(t *testing.T) {
	labtest.BecomeSubreaper()
	var progress bytes.Buffer
	name := labtest.Name("bpods")
	cfg := Config{
		Binary: skepBinary, ImagesDir: imagesDir, LabNodes: 1,
		Pods: 3, Rate: 10, SchedulerNodes: 20, SchedulerPods: 200,
		Options: setup.Options{LabName: name, LabDir: filepath.Join(os.TempDir(), "skep-lab-"+name), Rounds: 1,
			Timeout: 2 * time.Minute, Progress: &progress},
	}
	rep := &report.Report{}
	if err := Run(t.Context(), cfg, rep); err != nil {
		t.Fatalf("Run: %v\n%s", err, progress.String())
	}
	t.Log(progress.String())
	got := map[string]report.Sample{}
	for _, s := range rep.Samples {
		got[s.Variant+" "+s.Metric] = s
	}
	for _, want := range []struct {
		key      string
		n        int
		min, max float64
	}{
		{VariantLab + " " + MetricStartP50, 3, 1, 60000},
		{VariantLab + " " + MetricStartP99, 3, 1, 60000},
		{VariantScheduler + " " + MetricThroughput, 200, 1, 1e6},
	} {
		s, ok := got[want.key]
		switch {
		case !ok:
			t.Errorf("no sample of %s; got %v", want.key, rep.Samples)
		case s.N != want.n || s.Value < want.min || s.Value > want.max:
			t.Errorf("%s: N %d value %v, want N %d and a value in [%v, %v]", want.key, s.N, s.Value, want.n, want.min, want.max)
		}
	}
	if got[VariantLab+" "+MetricStartP99].Value < got[VariantLab+" "+MetricStartP50].Value {
		t.Errorf("p99 below p50: %v", rep.Samples)
	}
	if !labtest.WaitShimsGone(10 * time.Second) {
		t.Errorf("containerd shims of the lab still running")
	}
}
