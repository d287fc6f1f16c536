// Package eventttl deletes Events an hour (--event-ttl) after they were
// last written. Kubernetes gets this from etcd: every write of an Event
// carries a lease of that TTL. The JetStream store has no per-key TTL for
// values that change, so a sweep does it.
package eventttl

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/skep-io/skep/controlplane/api"
	"github.com/skep-io/skep/controlplane/client"
)

// Defaults of Config.
const (
	// DefaultTTL is kube-apiserver's --event-ttl default.
	DefaultTTL = time.Hour
	// DefaultPeriod is how often Events are swept: an Event outlives its
	// TTL by at most this much.
	DefaultPeriod = time.Minute
)

// Config tunes the controller; zero values take the defaults.
type Config struct {
	TTL    time.Duration
	Period time.Duration
	// Now is the clock ages are measured by [time.Now].
	Now func() time.Time
}

// Controller deletes expired Events.
type Controller struct {
	c      client.Interface
	events *api.Resource
	cfg    Config
	logger *slog.Logger
}

// New returns the controller.
func New(c client.Interface, cfg Config, logger *slog.Logger) *Controller {
	if cfg.TTL <= 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.Period <= 0 {
		cfg.Period = DefaultPeriod
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Controller{c: c, events: api.MustLookup("events"), cfg: cfg, logger: logger.With("controller", "eventttl")}
}

// Run sweeps every Period until ctx ends.
func (ec *Controller) Run(ctx context.Context) {
	t := time.NewTicker(ec.cfg.Period)
	defer t.Stop()
	for {
		if n, err := ec.Sweep(ctx); err != nil && ctx.Err() == nil {
			ec.logger.Warn("delete expired events", "deleted", n, "err", err)
		} else if n > 0 {
			ec.logger.Debug("deleted expired events", "deleted", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Sweep deletes every Event last written more than TTL ago, and says how
// many it deleted.
func (ec *Controller) Sweep(ctx context.Context) (int, error) {
	objs, _, err := ec.c.List(ctx, ec.events, "", client.ListOptions{})
	if err != nil {
		return 0, fmt.Errorf("list events: %w", err)
	}
	now := ec.cfg.Now()
	deleted := 0
	var errs []error
	for _, o := range objs {
		e := o.(*corev1.Event)
		if now.Sub(LastWritten(e)) <= ec.cfg.TTL {
			continue
		}
		// The resourceVersion read: an Event counted again since (a
		// repeat) has a new lease on life and stays.
		err := ec.c.Delete(ctx, ec.events, e.Namespace, e.Name, client.DeleteOptions{ResourceVersion: e.ResourceVersion})
		switch {
		case err == nil:
			deleted++
		case apierrors.IsNotFound(err), apierrors.IsConflict(err):
		default:
			errs = append(errs, fmt.Errorf("delete event %s/%s: %w", e.Namespace, e.Name, err))
		}
	}
	return deleted, errors.Join(errs...)
}

// LastWritten is when e was last written, as well as the Event says: the
// latest of its creation, last occurrence and (new-style) event time.
func LastWritten(e *corev1.Event) time.Time {
	t := e.CreationTimestamp.Time
	for _, u := range []time.Time{e.LastTimestamp.Time, e.EventTime.Time, e.FirstTimestamp.Time} {
		if u.After(t) {
			t = u
		}
	}
	return t
}
