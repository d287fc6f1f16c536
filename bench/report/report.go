// Package report collects benchmark samples measured in interleaved rounds and
// writes them out: the raw samples as CSV, the medians with their ratio to a
// reference variant as a Markdown table, and one PNG chart per metric.
//
// Absolute timings on a shared machine drift from one minute to the next, so
// every benchmark runs its variants interleaved within one run (Interleave) and
// the report leads with medians and ratios taken within that run.
package report

import (
	"cmp"
	"fmt"
	"math"
	"slices"
)

// Sample is one measurement of one round.
type Sample struct {
	Bench   string // "sync", "dataplane", ...
	Variant string // "ebpf", "iptables", "direct", ...
	N       int    // the scale (number of services, agents, pods...)
	Metric  string // "conn_per_s", "p99_ms", "sync_s", ...
	Unit    string // "1/s", "ms", "s", "MiB"
	Round   int
	Value   float64
}

// Report is the samples of one run of one or more benchmarks, with what a
// reader needs to judge them: where they ran and how to run them again.
type Report struct {
	Title   string
	Machine string // MachineDescription() of the machine the samples come from
	Command string // the command line that reproduces the run
	Samples []Sample
	// Reference is the variant ratios are taken against; "" means no ratios.
	Reference string
	// Notes are printed under the title of every Markdown file, one paragraph
	// each: what a variant is, where a measured item sits, caveats.
	Notes []string
	// NName says what N counts ("services", "nodes"), for table headers
	// and chart axes; "N" when empty.
	NName string
	// LogY names metrics whose charts use a logarithmic Y axis. A metric whose
	// medians span two decades or more gets one anyway.
	LogY []string
}

// Row is the summary of one (Bench, Variant, N, Metric) across its rounds.
type Row struct {
	Bench, Variant string
	N              int
	Metric, Unit   string
	Median         float64
	P10, P90       float64
	Rounds         int
	// Ratio is Median divided by the Reference variant's median for the same
	// Bench, N and Metric. HasRatio is false when there is no reference, no
	// reference sample for this cell, or the reference median is zero.
	Ratio    float64
	HasRatio bool
}

// Add appends one sample.
func (r *Report) Add(s Sample) {
	r.Samples = append(r.Samples, s)
}

type cellKey struct {
	bench, variant string
	n              int
	metric         string
}

// Medians summarises the samples: one Row per (Bench, Variant, N, Metric),
// ordered by bench and metric as they first appear, then N ascending, then
// variant with the reference first and the others as they first appear.
func (r *Report) Medians() []Row {
	values := map[cellKey][]float64{}
	units := map[cellKey]string{}
	var keys []cellKey
	for _, s := range r.Samples {
		k := cellKey{s.Bench, s.Variant, s.N, s.Metric}
		if _, ok := values[k]; !ok {
			keys = append(keys, k)
			units[k] = s.Unit
		}
		values[k] = append(values[k], s.Value)
	}

	benchOrder := firstSeen(r.Samples, func(s Sample) string { return s.Bench })
	metricOrder := firstSeen(r.Samples, func(s Sample) string { return s.Metric })
	variantOrder := firstSeen(r.Samples, func(s Sample) string { return s.Variant })
	if r.Reference != "" {
		variantOrder[r.Reference] = -1
	}
	slices.SortStableFunc(keys, func(a, b cellKey) int {
		return cmp.Or(
			cmp.Compare(benchOrder[a.bench], benchOrder[b.bench]),
			cmp.Compare(metricOrder[a.metric], metricOrder[b.metric]),
			cmp.Compare(a.n, b.n),
			cmp.Compare(variantOrder[a.variant], variantOrder[b.variant]),
		)
	})

	rows := make([]Row, 0, len(keys))
	for _, k := range keys {
		vs := slices.Clone(values[k])
		slices.Sort(vs)
		row := Row{
			Bench: k.bench, Variant: k.variant, N: k.n, Metric: k.metric, Unit: units[k],
			Median: quantile(vs, 0.5), P10: quantile(vs, 0.1), P90: quantile(vs, 0.9),
			Rounds: len(vs),
		}
		if r.Reference != "" {
			if ref, ok := values[cellKey{k.bench, r.Reference, k.n, k.metric}]; ok {
				refVs := slices.Clone(ref)
				slices.Sort(refVs)
				if m := quantile(refVs, 0.5); m != 0 {
					row.Ratio, row.HasRatio = row.Median/m, true
				}
			}
		}
		rows = append(rows, row)
	}
	return rows
}

// firstSeen numbers the distinct values of field in the order they first
// appear, so tables and charts follow the order the benchmark measured in.
func firstSeen(samples []Sample, field func(Sample) string) map[string]int {
	order := map[string]int{}
	for _, s := range samples {
		if _, ok := order[field(s)]; !ok {
			order[field(s)] = len(order)
		}
	}
	return order
}

// quantile returns the q-quantile of sorted values, interpolating linearly
// between the two nearest ranks (the median of an even count is the mean of
// the middle two). NaN for no values.
func quantile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	pos := q * float64(len(sorted)-1)
	lo := int(math.Floor(pos))
	hi := int(math.Ceil(pos))
	return sorted[lo] + (sorted[hi]-sorted[lo])*(pos-float64(lo))
}

// Quantile returns the q-quantile (0 ≤ q ≤ 1) of values, which it does not
// modify, with linear interpolation between ranks: what benchmarks use to turn
// many latencies of one round into that round's p50 and p99.
func Quantile(values []float64, q float64) float64 {
	sorted := slices.Clone(values)
	slices.Sort(sorted)
	return quantile(sorted, q)
}

// Interleave runs every variant once per round, A B C, B C A, C A B, ...:
// the start rotates each round so that no variant always runs first (on a
// cold cache) or last (after the others warmed or dirtied the machine).
// It stops at the first error, naming its round and variant.
func Interleave(rounds int, variants []string, run func(round int, variant string) error) error {
	for round := range rounds {
		for i := range variants {
			variant := variants[(round+i)%len(variants)]
			if err := run(round, variant); err != nil {
				return fmt.Errorf("round %d, %s: %w", round, variant, err)
			}
		}
	}
	return nil
}
