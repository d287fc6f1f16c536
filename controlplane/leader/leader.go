// Package leader elects one leader among several processes through a
// Lease object, as Kubernetes' leaderelection does: the holder renews the
// lease with compare-and-set updates; the others take it over once it has
// gone unrenewed for the lease duration, as measured by their own clocks.
// A leader that cannot renew within the renew deadline (shorter than the
// lease duration) steps down before anyone else may take over, so two
// leaders never act at once.
package leader

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skep-io/skep/controlplane/api"
	"github.com/skep-io/skep/controlplane/client"
)

// The controller manager's lease.
const (
	DefaultNamespace = "kube-system"
	DefaultName      = "skep-controller-manager"
)

var leasesResource = api.MustLookup("leases")

// Config tunes an election; zero values take the defaults.
type Config struct {
	Namespace, Name string // of the Lease; kube-system/skep-controller-manager
	// LeaseDuration is how long others wait after the last renewal before
	// taking over (15s).
	LeaseDuration time.Duration
	// RenewDeadline is how long the leader keeps trying to renew before it
	// steps down (10s); it must be shorter than LeaseDuration.
	RenewDeadline time.Duration
	// RenewPeriod is how often the leader renews (5s).
	RenewPeriod time.Duration
	// RetryPeriod is how often a candidate tries to acquire (2s).
	RetryPeriod time.Duration
	// KeepOnCancel leaves the lease held when ctx ends, as a crash would;
	// by default a leader that stops releases it so another takes over at
	// once.
	KeepOnCancel bool
	Logger       *slog.Logger
}

func (c *Config) defaults() {
	if c.Namespace == "" {
		c.Namespace = DefaultNamespace
	}
	if c.Name == "" {
		c.Name = DefaultName
	}
	if c.LeaseDuration <= 0 {
		c.LeaseDuration = 15 * time.Second
	}
	if c.RenewDeadline <= 0 {
		c.RenewDeadline = c.LeaseDuration * 2 / 3
	}
	if c.RenewPeriod <= 0 {
		c.RenewPeriod = c.LeaseDuration / 3
	}
	if c.RetryPeriod <= 0 {
		c.RetryPeriod = c.LeaseDuration * 2 / 15
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Run campaigns with the default configuration; see Elector.Run.
func Run(ctx context.Context, c client.Interface, identity string, onStarted func(ctx context.Context), onStopped func()) error {
	return New(c, identity, Config{}).Run(ctx, onStarted, onStopped)
}

// Elector campaigns for one lease under one identity.
type Elector struct {
	c        client.Interface
	identity string
	cfg      Config
	logger   *slog.Logger
	now      func() time.Time

	// The lease's resourceVersion last seen, and when by the local clock:
	// expiry is judged from when a change was seen, never from the
	// timestamps another machine's clock wrote.
	observedRV   string
	observedTime time.Time
}

// New returns an elector for identity, which must be unique among the
// candidates (hostname plus something random, say).
func New(c client.Interface, identity string, cfg Config) *Elector {
	cfg.defaults()
	return &Elector{c: c, identity: identity, cfg: cfg, now: time.Now,
		logger: cfg.Logger.With("lease", cfg.Namespace+"/"+cfg.Name, "identity", identity)}
}

// Run campaigns until ctx ends. Each time it becomes leader it calls
// onStarted in a goroutine with a context that is cancelled when
// leadership is lost; it waits for onStarted to return and then calls
// onStopped, before campaigning again. It returns nil when ctx ends.
func (e *Elector) Run(ctx context.Context, onStarted func(ctx context.Context), onStopped func()) error {
	for {
		if !e.acquire(ctx) {
			return nil
		}
		e.logger.Info("became leader")
		lctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			onStarted(lctx)
		}()
		e.renew(lctx)
		cancel()
		<-done
		if onStopped != nil {
			onStopped()
		}
		if ctx.Err() != nil {
			if !e.cfg.KeepOnCancel {
				e.release()
			}
			return nil
		}
		e.logger.Warn("lost leadership")
	}
}

// acquire tries every RetryPeriod until it holds the lease or ctx ends.
func (e *Elector) acquire(ctx context.Context) bool {
	t := time.NewTicker(e.cfg.RetryPeriod)
	defer t.Stop()
	for {
		ok, err := e.tryAcquireOrRenew(ctx)
		if err != nil && ctx.Err() == nil {
			e.logger.Debug("acquire lease", "err", err)
		}
		if ok {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		}
	}
}

// renew renews every RenewPeriod; it returns when ctx ends or when no
// renewal has succeeded for RenewDeadline.
func (e *Elector) renew(ctx context.Context) {
	t := time.NewTicker(e.cfg.RenewPeriod)
	defer t.Stop()
	last := e.now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		// Each attempt may take at most what is left of the deadline.
		actx, cancel := context.WithDeadline(ctx, last.Add(e.cfg.RenewDeadline))
		ok, err := e.tryAcquireOrRenew(actx)
		cancel()
		if ok {
			last = e.now()
			continue
		}
		if err != nil && ctx.Err() == nil {
			e.logger.Warn("renew lease", "err", err)
		}
		if e.now().Sub(last) >= e.cfg.RenewDeadline || (err == nil && ctx.Err() == nil) {
			// Past the deadline, or someone else holds the lease.
			return
		}
	}
}

func microNow(t time.Time) *metav1.MicroTime { m := metav1.NewMicroTime(t); return &m }

// tryAcquireOrRenew makes one attempt. It returns true when this
// identity holds the lease afterwards; false with a nil error when
// another holder's lease is still valid.
func (e *Elector) tryAcquireOrRenew(ctx context.Context) (bool, error) {
	now := e.now()
	// The Lease holds whole seconds: round up, never shorten the lease.
	secs := int32((e.cfg.LeaseDuration + time.Second - 1) / time.Second)
	obj, err := e.c.Get(ctx, leasesResource, e.cfg.Namespace, e.cfg.Name)
	if apierrors.IsNotFound(err) {
		lease := &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Namespace: e.cfg.Namespace, Name: e.cfg.Name},
			Spec: coordinationv1.LeaseSpec{HolderIdentity: &e.identity, LeaseDurationSeconds: &secs,
				AcquireTime: microNow(now), RenewTime: microNow(now), LeaseTransitions: new(int32)},
		}
		created, err := e.c.Create(ctx, leasesResource, lease)
		if err != nil {
			return false, fmt.Errorf("create lease: %w", err)
		}
		e.observe(created.(*coordinationv1.Lease), now)
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("get lease: %w", err)
	}
	lease := obj.(*coordinationv1.Lease)
	if lease.ResourceVersion != e.observedRV {
		e.observe(lease, now)
	}
	holder := ""
	if lease.Spec.HolderIdentity != nil {
		holder = *lease.Spec.HolderIdentity
	}
	duration := e.cfg.LeaseDuration
	if lease.Spec.LeaseDurationSeconds != nil {
		duration = time.Duration(*lease.Spec.LeaseDurationSeconds) * time.Second
	}
	if holder != "" && holder != e.identity && now.Before(e.observedTime.Add(duration)) {
		return false, nil // someone else's lease, still valid
	}
	next := lease.DeepCopy()
	next.Spec.HolderIdentity = &e.identity
	next.Spec.LeaseDurationSeconds = &secs
	next.Spec.RenewTime = microNow(now)
	if holder != e.identity {
		next.Spec.AcquireTime = microNow(now)
		n := int32(0)
		if lease.Spec.LeaseTransitions != nil {
			n = *lease.Spec.LeaseTransitions
		}
		if holder != "" {
			n++
		}
		next.Spec.LeaseTransitions = &n
		if holder != "" {
			e.logger.Info("taking over expired lease", "from", holder)
		}
	}
	updated, err := e.c.Update(ctx, leasesResource, next) // compare-and-set on resourceVersion
	if err != nil {
		return false, fmt.Errorf("update lease: %w", err)
	}
	e.observe(updated.(*coordinationv1.Lease), now)
	return true, nil
}

func (e *Elector) observe(l *coordinationv1.Lease, now time.Time) {
	e.observedRV, e.observedTime = l.ResourceVersion, now
}

// release gives the lease up so a candidate need not wait it out.
func (e *Elector) release() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	obj, err := e.c.Get(ctx, leasesResource, e.cfg.Namespace, e.cfg.Name)
	if err != nil {
		return
	}
	lease := obj.(*coordinationv1.Lease).DeepCopy()
	if lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity != e.identity {
		return
	}
	empty, one := "", int32(1)
	lease.Spec.HolderIdentity = &empty
	lease.Spec.LeaseDurationSeconds = &one
	lease.Spec.RenewTime = microNow(e.now())
	if _, err := e.c.Update(ctx, leasesResource, lease); err != nil {
		e.logger.Warn("release lease", "err", err)
		return
	}
	e.logger.Info("released lease")
}
