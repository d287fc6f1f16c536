package report

import (
	"bytes"
	"encoding/csv"
	"errors"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestMediansAndRatios(t *testing.T) {
	r := &Report{Reference: "ebpf"}
	add := func(variant string, n int, values ...float64) {
		for round, v := range values {
			r.Add(Sample{Bench: "sync", Variant: variant, N: n, Metric: "sync_s", Unit: "s", Round: round, Value: v})
		}
	}
	// Measured in this order; the table must put the reference first and
	// N ascending whatever the order of measurement.
	add("iptables", 1000, 4, 2, 3)
	add("ebpf", 1000, 1, 3, 2)
	add("ebpf", 100, 0.5, 0.1, 0.3, 0.2) // even count: median is the mean of the middle two
	add("iptables", 100, 1)
	r.Add(Sample{Bench: "sync", Variant: "iptables", N: 30, Metric: "sync_s", Unit: "s", Value: 7}) // no reference at N=30

	got := r.Medians()
	type cell struct {
		variant  string
		n        int
		median   float64
		p10, p90 float64
		rounds   int
		ratio    float64
		hasRatio bool
	}
	want := []cell{
		{"iptables", 30, 7, 7, 7, 1, 0, false},
		{"ebpf", 100, 0.25, 0.13, 0.44, 4, 1, true},
		{"iptables", 100, 1, 1, 1, 1, 4, true},
		{"ebpf", 1000, 2, 1.2, 2.8, 3, 1, true},
		{"iptables", 1000, 3, 2.2, 3.8, 3, 1.5, true},
	}
	if len(got) != len(want) {
		t.Fatalf("Medians() gave %d rows, want %d: %+v", len(got), len(want), got)
	}
	near := func(a, b float64) bool { return math.Abs(a-b) < 1e-9 }
	for i, w := range want {
		g := got[i]
		if g.Variant != w.variant || g.N != w.n || !near(g.Median, w.median) || !near(g.P10, w.p10) ||
			!near(g.P90, w.p90) || g.Rounds != w.rounds || g.HasRatio != w.hasRatio || (w.hasRatio && !near(g.Ratio, w.ratio)) {
			t.Errorf("row %d = %+v, want %+v", i, g, w)
		}
		if g.Bench != "sync" || g.Metric != "sync_s" || g.Unit != "s" {
			t.Errorf("row %d names %s/%s/%s, want sync/sync_s/s", i, g.Bench, g.Metric, g.Unit)
		}
	}
}

func TestMediansWithoutReference(t *testing.T) {
	r := &Report{}
	r.Add(Sample{Bench: "pods", Variant: "lab", N: 50, Metric: "p50_ms", Unit: "ms", Value: 10})
	rows := r.Medians()
	if len(rows) != 1 || rows[0].HasRatio || rows[0].Median != 10 {
		t.Fatalf("Medians() = %+v, want one row, median 10, no ratio", rows)
	}
}

func TestQuantile(t *testing.T) {
	values := []float64{5, 1, 4, 2, 3}
	for _, tc := range []struct{ q, want float64 }{{0, 1}, {0.5, 3}, {1, 5}, {0.25, 2}, {0.9, 4.6}} {
		if got := Quantile(values, tc.q); math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("Quantile(%v, %v) = %v, want %v", values, tc.q, got, tc.want)
		}
	}
	if !slices.Equal(values, []float64{5, 1, 4, 2, 3}) {
		t.Errorf("Quantile sorted its input: %v", values)
	}
	if got := Quantile(nil, 0.5); !math.IsNaN(got) {
		t.Errorf("Quantile(nil) = %v, want NaN", got)
	}
}

func TestInterleave(t *testing.T) {
	var order []string
	err := Interleave(3, []string{"a", "b", "c"}, func(round int, variant string) error {
		order = append(order, string(rune('0'+round))+variant)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"0a", "0b", "0c", "1b", "1c", "1a", "2c", "2a", "2b"}
	if !slices.Equal(order, want) {
		t.Errorf("Interleave ran %v, want %v", order, want)
	}

	boom := errors.New("boom")
	calls := 0
	err = Interleave(2, []string{"a", "b"}, func(round int, variant string) error {
		calls++
		if round == 1 && variant == "a" {
			return boom
		}
		return nil
	})
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), "round 1, a") || calls != 4 {
		t.Errorf("Interleave with a failing run: err %v after %d calls, want boom naming round 1, a after 4 calls", err, calls)
	}
}

func TestWrite(t *testing.T) {
	r := &Report{
		Title:     "sync test",
		Machine:   "test machine",
		Command:   "skep bench sync --sizes 10,1000",
		Reference: "ebpf",
		LogY:      []string{"sync_s"},
	}
	for round := range 2 {
		for _, n := range []int{10, 100, 1000} {
			r.Add(Sample{Bench: "sync", Variant: "ebpf", N: n, Metric: "sync_s", Unit: "s", Round: round, Value: float64(n) / 1000})
			r.Add(Sample{Bench: "sync", Variant: "iptables", N: n, Metric: "sync_s", Unit: "s", Round: round, Value: float64(n) / 100})
			r.Add(Sample{Bench: "sync", Variant: "ebpf", N: n, Metric: "heap_MiB", Unit: "MiB", Round: round, Value: float64(n) / 10})
		}
		// A metric measured at one N only is drawn as bars.
		r.Add(Sample{Bench: "pods", Variant: "lab", N: 50, Metric: "p99_ms", Unit: "ms", Round: round, Value: 100 + float64(round)})
	}
	dir := t.TempDir()
	if err := r.Write(dir); err != nil {
		t.Fatalf("Write: %v", err)
	}

	f, err := os.Open(filepath.Join(dir, "sync.csv"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	records, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatalf("sync.csv does not parse: %v", err)
	}
	if len(records) != 1+18 || !slices.Equal(records[0], []string{"bench", "variant", "n", "metric", "unit", "round", "value"}) {
		t.Fatalf("sync.csv has %d records, header %v; want a header and 18 samples", len(records), records[0])
	}
	if !slices.Equal(records[2], []string{"sync", "iptables", "10", "sync_s", "s", "0", "0.1"}) {
		t.Errorf("sync.csv second sample = %v", records[2])
	}

	md, err := os.ReadFile(filepath.Join(dir, "sync.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"## sync test", "Machine: test machine", "`skep bench sync --sizes 10,1000`",
		"| N | ebpf | iptables | iptables / ebpf |",
		"|---:|---:|---:|---:|",
		"| 1,000 | 1.00 [1.00–1.00] | 10.0 [10.0–10.0] | 10.00× |",
		"**heap_MiB** (MiB): median of 2 rounds",
		"| 10 | 1.00 [1.00–1.00] |",
	} {
		if !strings.Contains(string(md), want) {
			t.Errorf("sync.md lacks %q:\n%s", want, md)
		}
	}
	if strings.Contains(string(md), "pods") {
		t.Errorf("sync.md mentions the pods benchmark:\n%s", md)
	}

	for _, name := range []string{"sync-sync_s.png", "sync-heap_MiB.png", "pods-p99_ms.png"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatalf("chart: %v", err)
		}
		img, err := png.Decode(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("%s is not a PNG: %v", name, err)
		}
		if bounds := img.Bounds(); bounds.Dx() < 100 || bounds.Dy() < 100 {
			t.Errorf("%s is %v, want a real chart", name, bounds)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "pods.md")); err != nil {
		t.Errorf("pods.md: %v", err)
	}
}

func TestFormatValue(t *testing.T) {
	for _, tc := range []struct {
		v    float64
		want string
	}{{0, "0"}, {12345.6, "12346"}, {123.456, "123"}, {1.23456, "1.23"}, {0.0123456, "0.0123"}, {-2.5, "-2.50"}} {
		if got := FormatValue(tc.v); got != tc.want {
			t.Errorf("FormatValue(%v) = %q, want %q", tc.v, got, tc.want)
		}
	}
}

func TestMachineDescription(t *testing.T) {
	d := MachineDescription()
	if strings.Contains(d, "unknown") || !strings.Contains(d, "CPUs") || !strings.Contains(d, "Linux ") {
		t.Errorf("MachineDescription() = %q, want CPU model, CPUs, memory and kernel", d)
	}
}

func TestMarkdownNamesN(t *testing.T) {
	r := &Report{NName: "services"}
	r.Add(Sample{Bench: "sync", Variant: "ebpf", N: 1000, Metric: "sync_s", Unit: "s", Value: 0.5})
	md := r.Markdown("sync")
	for _, want := range []string{"| services | ebpf |", "| 1,000 | 0.500 |", "**sync_s** (s), one round"} {
		if !strings.Contains(md, want) {
			t.Errorf("Markdown lacks %q:\n%s", want, md)
		}
	}
}
