package report

import (
	"bufio"
	"encoding/csv"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// Benches returns the benchmarks the report has samples of, in the order
// they first appear.
func (r *Report) Benches() []string {
	order := firstSeen(r.Samples, func(s Sample) string { return s.Bench })
	benches := make([]string, len(order))
	for b, i := range order {
		benches[i] = b
	}
	return benches
}

// Write writes, for every benchmark in the report, dir/<bench>.csv (the raw
// samples), dir/<bench>.md (title, machine, command and a table of medians
// and ratios per metric) and dir/<bench>-<metric>.png (one chart per metric:
// the median against N per variant, p10–p90 as error bars). It creates dir.
func (r *Report) Write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create report directory: %w", err)
	}
	rows := r.Medians()
	for _, bench := range r.Benches() {
		if err := r.writeCSV(filepath.Join(dir, bench+".csv"), bench); err != nil {
			return err
		}
		md := r.Markdown(bench)
		if err := os.WriteFile(filepath.Join(dir, bench+".md"), []byte(md), 0o644); err != nil {
			return fmt.Errorf("write %s.md: %w", bench, err)
		}
		for _, metric := range metricsOf(rows, bench) {
			name := filepath.Join(dir, ChartName(bench, metric))
			if err := r.chart(name, bench, metric, rowsOf(rows, bench, metric)); err != nil {
				return fmt.Errorf("chart %s %s: %w", bench, metric, err)
			}
		}
	}
	return nil
}

// ChartName is the file name Write gives the chart of one metric.
func ChartName(bench, metric string) string {
	clean := strings.Map(func(r rune) rune {
		if r == '-' || r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			return r
		}
		return '_'
	}, metric)
	return bench + "-" + clean + ".png"
}

func (r *Report) writeCSV(name, bench string) error {
	f, err := os.Create(name)
	if err != nil {
		return fmt.Errorf("create %s: %w", name, err)
	}
	w := csv.NewWriter(f)
	_ = w.Write([]string{"bench", "variant", "n", "metric", "unit", "round", "value"})
	for _, s := range r.Samples {
		if s.Bench != bench {
			continue
		}
		_ = w.Write([]string{s.Bench, s.Variant, strconv.Itoa(s.N), s.Metric, s.Unit,
			strconv.Itoa(s.Round), strconv.FormatFloat(s.Value, 'g', -1, 64)})
	}
	w.Flush()
	if err := w.Error(); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	return nil
}

// Markdown returns the report of one benchmark: title, machine, command,
// notes, and per metric a table with one line per N and one column per
// variant (median, p10–p90), then one column per non-reference variant with
// its ratio to the reference.
func (r *Report) Markdown(bench string) string {
	var b strings.Builder
	title := r.Title
	if title == "" {
		title = "skep-bench " + bench
	}
	fmt.Fprintf(&b, "## %s\n\n", title)
	if r.Machine != "" {
		fmt.Fprintf(&b, "Machine: %s  \n", r.Machine)
	}
	if r.Command != "" {
		fmt.Fprintf(&b, "Command: `%s`\n", r.Command)
	}
	b.WriteString("\n")
	for _, note := range r.Notes {
		b.WriteString(note + "\n\n")
	}

	rows := r.Medians()
	for _, metric := range metricsOf(rows, bench) {
		mrows := rowsOf(rows, bench, metric)
		var variants []string
		var ns []int
		minRounds, maxRounds := math.MaxInt, 0
		cells := map[string]Row{}
		for _, row := range mrows {
			if !slices.Contains(variants, row.Variant) {
				variants = append(variants, row.Variant)
			}
			if !slices.Contains(ns, row.N) {
				ns = append(ns, row.N)
			}
			minRounds, maxRounds = min(minRounds, row.Rounds), max(maxRounds, row.Rounds)
			cells[fmt.Sprint(row.N, "\x00", row.Variant)] = row
		}
		switch {
		case maxRounds == 1:
			fmt.Fprintf(&b, "**%s** (%s), one round\n\n", metric, mrows[0].Unit)
		case minRounds != maxRounds:
			fmt.Fprintf(&b, "**%s** (%s): median of %d–%d rounds [p10–p90]\n\n", metric, mrows[0].Unit, minRounds, maxRounds)
		default:
			fmt.Fprintf(&b, "**%s** (%s): median of %d rounds [p10–p90]\n\n", metric, mrows[0].Unit, maxRounds)
		}

		var ratioVariants []string
		for _, v := range variants {
			if r.Reference != "" && v != r.Reference && slices.Contains(variants, r.Reference) {
				ratioVariants = append(ratioVariants, v)
			}
		}
		fmt.Fprintf(&b, "| %s |", r.nName())
		for _, v := range variants {
			fmt.Fprintf(&b, " %s |", v)
		}
		for _, v := range ratioVariants {
			fmt.Fprintf(&b, " %s / %s |", v, r.Reference)
		}
		b.WriteString("\n|---:|")
		b.WriteString(strings.Repeat("---:|", len(variants)+len(ratioVariants)))
		b.WriteString("\n")
		for _, n := range ns {
			fmt.Fprintf(&b, "| %s |", groupThousands(n))
			for _, v := range variants {
				row, ok := cells[fmt.Sprint(n, "\x00", v)]
				if !ok {
					b.WriteString(" – |")
					continue
				}
				if row.Rounds == 1 {
					fmt.Fprintf(&b, " %s |", FormatValue(row.Median))
				} else {
					fmt.Fprintf(&b, " %s [%s–%s] |", FormatValue(row.Median), FormatValue(row.P10), FormatValue(row.P90))
				}
			}
			for _, v := range ratioVariants {
				row, ok := cells[fmt.Sprint(n, "\x00", v)]
				if !ok || !row.HasRatio {
					b.WriteString(" – |")
					continue
				}
				fmt.Fprintf(&b, " %.2f× |", row.Ratio)
			}
			b.WriteString("\n")
		}
		b.WriteString("\n")
	}
	return b.String()
}

func (r *Report) nName() string {
	if r.NName == "" {
		return "N"
	}
	return r.NName
}

// FormatValue prints v with three significant digits and no exponent.
func FormatValue(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return strconv.FormatFloat(v, 'g', -1, 64)
	}
	if v == 0 {
		return "0"
	}
	decimals := max(0, 2-int(math.Floor(math.Log10(math.Abs(v)))))
	return strconv.FormatFloat(v, 'f', decimals, 64)
}

func groupThousands(n int) string {
	s := strconv.Itoa(n)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var out []byte
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	if neg {
		return "-" + string(out)
	}
	return string(out)
}

func metricsOf(rows []Row, bench string) []string {
	var metrics []string
	for _, row := range rows {
		if row.Bench == bench && !slices.Contains(metrics, row.Metric) {
			metrics = append(metrics, row.Metric)
		}
	}
	return metrics
}

func rowsOf(rows []Row, bench, metric string) []Row {
	var out []Row
	for _, row := range rows {
		if row.Bench == bench && row.Metric == metric {
			out = append(out, row)
		}
	}
	return out
}

// errorPoints are medians with their p10 and p90 as asymmetric error bars.
type errorPoints struct {
	plotter.XYs
	plotter.YErrors
}

// chart draws one metric of one benchmark: a line per variant of the median
// against N, or a bar per variant when every sample has the same N.
func (r *Report) chart(name, bench, metric string, rows []Row) error {
	p := plot.New()
	p.Title.Text = bench + ": " + metric
	p.Y.Label.Text = fmt.Sprintf("%s (%s)", metric, rows[0].Unit)
	p.Legend.Top = true

	var variants []string
	var ns []int
	allPositive := true
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, row := range rows {
		if !slices.Contains(variants, row.Variant) {
			variants = append(variants, row.Variant)
		}
		if !slices.Contains(ns, row.N) {
			ns = append(ns, row.N)
		}
		if row.P10 <= 0 || row.Median <= 0 {
			allPositive = false
		}
		lo, hi = min(lo, row.Median), max(hi, row.Median)
	}
	logY := allPositive && (slices.Contains(r.LogY, metric) || hi >= 100*lo)
	if logY {
		p.Y.Scale = plot.LogScale{}
		p.Y.Tick.Marker = decadeTicks{}
	}

	if len(ns) == 1 {
		values := make(plotter.Values, len(variants))
		for i, v := range variants {
			for _, row := range rows {
				if row.Variant == v {
					values[i] = row.Median
				}
			}
		}
		bars, err := plotter.NewBarChart(values, vg.Points(30))
		if err != nil {
			return err
		}
		bars.Color = plotutil.Color(0)
		if logY {
			// Bars start at zero, which a log axis cannot show.
			p.Y.Scale = plot.LinearScale{}
			p.Y.Tick.Marker = plot.DefaultTicks{}
		}
		p.Add(bars)
		p.NominalX(variants...)
		p.X.Label.Text = fmt.Sprintf("variant (%s = %s)", r.nName(), groupThousands(ns[0]))
		return p.Save(16*vg.Centimeter, 10*vg.Centimeter, name)
	}

	slices.Sort(ns)
	if ns[0] > 0 && ns[len(ns)-1] >= 10*ns[0] {
		p.X.Scale = plot.LogScale{}
		p.X.Tick.Marker = decadeTicks{}
	}
	p.X.Label.Text = r.nName()
	for i, v := range variants {
		var pts errorPoints
		for _, row := range rows {
			if row.Variant != v {
				continue
			}
			pts.XYs = append(pts.XYs, plotter.XY{X: float64(row.N), Y: row.Median})
			pts.YErrors = append(pts.YErrors, struct{ Low, High float64 }{row.Median - row.P10, row.P90 - row.Median})
		}
		line, points, err := plotter.NewLinePoints(pts.XYs)
		if err != nil {
			return err
		}
		line.Color = plotutil.Color(i)
		line.Dashes = plotutil.Dashes(i)
		points.Color = plotutil.Color(i)
		points.Shape = plotutil.Shape(i)
		bars, err := plotter.NewYErrorBars(pts)
		if err != nil {
			return err
		}
		bars.Color = plotutil.Color(i)
		p.Add(line, points, bars)
		p.Legend.Add(v, line, points)
	}
	// Headroom above the highest point keeps the legend off the data.
	if logY {
		p.Y.Max *= 4
	} else {
		p.Y.Max += 0.3 * (p.Y.Max - p.Y.Min)
	}
	return p.Save(16*vg.Centimeter, 10*vg.Centimeter, name)
}

// decadeTicks marks a log axis: a labelled tick at every power of ten in
// range (and at both ends when the range holds less than one decade), minor
// ticks at 2..9 times each. plot.LogTicks truncates the exponent towards
// zero, which drops the decade below values under 1.
type decadeTicks struct{}

func (decadeTicks) Ticks(lo, hi float64) []plot.Tick {
	var ticks []plot.Tick
	labelled := 0
	for decade := math.Pow10(int(math.Floor(math.Log10(lo)))); decade <= hi; decade *= 10 {
		for i := 1; i < 10; i++ {
			v := decade * float64(i)
			if v < lo || v > hi {
				continue
			}
			tick := plot.Tick{Value: v}
			if i == 1 {
				tick.Label = FormatTick(v)
				labelled++
			}
			ticks = append(ticks, tick)
		}
	}
	if labelled < 2 {
		ticks = append(ticks, plot.Tick{Value: lo, Label: FormatTick(lo)}, plot.Tick{Value: hi, Label: FormatTick(hi)})
	}
	return ticks
}

// FormatTick prints an axis value briefly: 1000 as 1k, 30000 as 30k.
func FormatTick(v float64) string {
	switch {
	case v >= 1e6 && math.Mod(v, 1e6) == 0:
		return strconv.FormatFloat(v/1e6, 'f', -1, 64) + "M"
	case v >= 1e3 && math.Mod(v, 1e3) == 0:
		return strconv.FormatFloat(v/1e3, 'f', -1, 64) + "k"
	}
	return strconv.FormatFloat(v, 'g', 3, 64)
}

// MachineDescription says what the machine is, from /proc: CPU model, the
// number of CPUs, memory and kernel release, e.g. "Intel(R) Xeon(R) ...,
// 2 CPUs, 7.8 GiB memory, Linux 6.18.0".
func MachineDescription() string {
	model, cpus := "unknown CPU", 0
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			key, value, ok := strings.Cut(sc.Text(), ":")
			if !ok {
				continue
			}
			switch strings.TrimSpace(key) {
			case "processor":
				cpus++
			case "model name":
				if model == "unknown CPU" {
					model = strings.Join(strings.Fields(value), " ")
				}
			}
		}
		f.Close()
	}
	memory := "unknown memory"
	if f, err := os.Open("/proc/meminfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) >= 2 && fields[0] == "MemTotal:" {
				if kib, err := strconv.ParseFloat(fields[1], 64); err == nil {
					memory = fmt.Sprintf("%.1f GiB memory", kib/(1<<20))
				}
				break
			}
		}
		f.Close()
	}
	kernel := "unknown kernel"
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = "Linux " + strings.TrimSpace(string(b))
	}
	return fmt.Sprintf("%s, %d CPUs, %s, %s", model, cpus, memory, kernel)
}
