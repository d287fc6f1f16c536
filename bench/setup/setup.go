// Package setup is the preamble the benchmarks that run on a lab share:
// the settings each takes, with their defaults, and bringing the lab up
// and down.
package setup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/skep-io/skep/lab"
)

// DefaultLabName is the lab a benchmark runs on unless told otherwise.
const DefaultLabName = "skep-bench"

// Options are the settings every benchmark on a lab takes.
type Options struct {
	// LabName names the lab; default DefaultLabName. LabDir holds its
	// state, data and logs; default lab.DirFor(LabName).
	LabName, LabDir string
	Rounds          int // default 3
	// Timeout bounds one step or round of a trial; each benchmark says
	// which, and gives its default.
	Timeout  time.Duration
	Progress io.Writer    // default: discarded
	Logger   *slog.Logger // default: discarded
}

// SetDefaults fills what o leaves zero; timeout is the benchmark's own
// default for Timeout.
func (o *Options) SetDefaults(timeout time.Duration) {
	if o.LabName == "" {
		o.LabName = DefaultLabName
	}
	if o.Rounds == 0 {
		o.Rounds = 3
	}
	if o.Timeout == 0 {
		o.Timeout = timeout
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// UpLab brings up the lab cfg describes, named, placed and logging as o
// says, and tells o.Progress that bench is doing so.
func (o Options) UpLab(ctx context.Context, bench string, cfg lab.Config) (*lab.Lab, error) {
	cfg.Name, cfg.Dir, cfg.Logger = o.LabName, o.LabDir, o.Logger
	fmt.Fprintf(o.Progress, "%s: bringing up lab %s with %d nodes\n", bench, cfg.Name, cfg.Nodes)
	l, err := lab.Up(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("bring up lab %s: %w", cfg.Name, err)
	}
	return l, nil
}

// DownLab takes l down, even when ctx has ended, and joins a failure into
// *err: `defer setup.DownLab(ctx, l, &err)` in a Run with a named error.
func DownLab(ctx context.Context, l *lab.Lab, err *error) {
	if derr := l.Down(context.WithoutCancel(ctx)); derr != nil {
		*err = errors.Join(*err, fmt.Errorf("take lab %s down: %w", l.Name(), derr))
	}
}
