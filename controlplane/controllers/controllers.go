// Package controllers is skep's controller manager: the scheduler and the
// controllers (ReplicaSet, ReplicationController, Deployment, Endpoints,
// EndpointSlice, node lifecycle, node IPAM, garbage collector, namespace,
// event TTL)
// sharing one set of informers, run by whichever `skep server` holds the leader lease.
package controllers

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/skep-io/skep/controlplane/api"
	"github.com/skep-io/skep/controlplane/client"
	"github.com/skep-io/skep/controlplane/client/events"
	"github.com/skep-io/skep/controlplane/controllers/deployment"
	"github.com/skep-io/skep/controlplane/controllers/endpoints"
	"github.com/skep-io/skep/controlplane/controllers/endpointslice"
	"github.com/skep-io/skep/controlplane/controllers/eventttl"
	"github.com/skep-io/skep/controlplane/controllers/gc"
	"github.com/skep-io/skep/controlplane/controllers/namespace"
	"github.com/skep-io/skep/controlplane/controllers/nodeipam"
	"github.com/skep-io/skep/controlplane/controllers/nodelifecycle"
	"github.com/skep-io/skep/controlplane/controllers/replicaset"
	"github.com/skep-io/skep/controlplane/leader"
	"github.com/skep-io/skep/controlplane/scheduler"
)

// Config is the controller manager's configuration; zero values take the
// defaults in brackets (Kubernetes' where it has one).
type Config struct {
	// Identity names this process in the leader lease [hostname-random].
	Identity string
	// ClusterCIDR is split into node pod CIDRs [10.244.0.0/16] of
	// NodeCIDRMaskSize bits [24].
	ClusterCIDR      string
	NodeCIDRMaskSize int
	// NodeMonitorGracePeriod: an unrenewed node lease older than this makes
	// the node Ready=Unknown [40s].
	NodeMonitorGracePeriod time.Duration
	// PodEvictionTimeout: pods of a node not Ready for this long are
	// deleted [60s].
	PodEvictionTimeout time.Duration
	// NodeMonitorPeriod: how often node leases are checked [5s].
	NodeMonitorPeriod time.Duration
	// EndpointsBatchPeriod merges pod changes into one Endpoints write, and
	// one write per EndpointSlice [200ms].
	EndpointsBatchPeriod time.Duration
	// Leader election: lease duration [15s], renew deadline [10s], renew
	// period [5s], retry period [2s]. KeepLeaseOnStop leaves the lease held
	// when ctx ends (tests use it to play a crash).
	LeaseDuration, RenewDeadline, RenewPeriod, RetryPeriod time.Duration
	KeepLeaseOnStop                                        bool
	// EventTTL is how long an Event lives after its last write [1h, as
	// kube-apiserver's --event-ttl].
	EventTTL time.Duration
	// Workers per controller [4].
	Workers int
	// OnBound is passed to the scheduler (tests count bindings with it).
	OnBound func(namespace, name, node string)
}

func (c *Config) defaults() error {
	if c.Identity == "" {
		host, _ := os.Hostname()
		var b [4]byte
		if _, err := rand.Read(b[:]); err != nil {
			return fmt.Errorf("make identity: %w", err)
		}
		c.Identity = host + "-" + hex.EncodeToString(b[:])
	}
	if c.ClusterCIDR == "" {
		c.ClusterCIDR = "10.244.0.0/16"
	}
	if c.NodeCIDRMaskSize == 0 {
		c.NodeCIDRMaskSize = 24
	}
	if c.Workers <= 0 {
		c.Workers = 4
	}
	return nil
}

// Run runs the scheduler and the controllers while this process is the
// leader, until ctx ends. Only a bad configuration makes it return an error.
func Run(ctx context.Context, c client.Interface, cfg Config, logger *slog.Logger) error {
	if err := cfg.defaults(); err != nil {
		return err
	}
	// Fail on a bad --cluster-cidr now, not after winning an election.
	if _, err := nodeipam.NewAllocator(cfg.ClusterCIDR, cfg.NodeCIDRMaskSize); err != nil {
		return fmt.Errorf("--cluster-cidr: %w", err)
	}
	logger = logger.With("identity", cfg.Identity)
	el := leader.New(c, cfg.Identity, leader.Config{
		LeaseDuration: cfg.LeaseDuration, RenewDeadline: cfg.RenewDeadline, RenewPeriod: cfg.RenewPeriod,
		RetryPeriod: cfg.RetryPeriod, KeepOnCancel: cfg.KeepLeaseOnStop, Logger: logger,
	})
	return el.Run(ctx, func(ctx context.Context) {
		logger.Info("controller manager starting: leader")
		if err := runAll(ctx, c, cfg, logger); err != nil {
			logger.Error("controller manager", "err", err)
		}
	}, func() {
		logger.Info("controller manager stopped")
	})
}

// runAll builds fresh informers and every controller on them, and runs
// them until ctx ends (leadership lost, or shutdown).
func runAll(ctx context.Context, c client.Interface, cfg Config, logger *slog.Logger) error {
	inf := func(resource, ns string) *client.Informer {
		return client.NewInformer(c, api.MustLookup(resource), client.InformerOptions{Namespace: ns, Logger: logger})
	}
	pods, nodes := inf("pods", ""), inf("nodes", "")
	services, eps, slices := inf("services", ""), inf("endpoints", ""), inf("endpointslices", "")
	replicaSets, rcs, deployments := inf("replicasets", ""), inf("replicationcontrollers", ""), inf("deployments", "")
	leases := inf("leases", nodelifecycle.LeaseNamespace)
	namespaces := inf("namespaces", "")
	informers := []*client.Informer{pods, nodes, services, eps, slices, replicaSets, rcs, deployments, leases, namespaces}

	alloc, err := nodeipam.NewAllocator(cfg.ClusterCIDR, cfg.NodeCIDRMaskSize)
	if err != nil {
		return err
	}
	// One writer of Events for every controller, each reporting under the
	// component name Kubernetes' own uses, which `kubectl describe` shows
	// in its From column.
	broadcaster := events.NewBroadcaster(c, events.Options{Logger: logger})
	recorder := func(component string) *events.Recorder {
		return broadcaster.Recorder(corev1.EventSource{Component: component})
	}
	sched := scheduler.New(c, pods, nodes, scheduler.Options{Logger: logger, OnBound: cfg.OnBound, Events: recorder(corev1.DefaultSchedulerName)})
	rsc := replicaset.NewReplicaSets(c, replicaSets, pods, recorder("replicaset-controller"), logger)
	rcc := replicaset.NewReplicationControllers(c, rcs, pods, recorder("replication-controller"), logger)
	dc := deployment.New(c, deployments, replicaSets, pods, recorder("deployment-controller"), logger)
	ec := endpoints.New(c, services, eps, pods, nodes, cfg.EndpointsBatchPeriod, logger)
	esc := endpointslice.New(c, services, slices, eps, pods, nodes, endpointslice.Config{Batch: cfg.EndpointsBatchPeriod}, logger)
	nlc := nodelifecycle.New(c, nodes, leases, pods, nodelifecycle.Config{
		GracePeriod: cfg.NodeMonitorGracePeriod, EvictionTimeout: cfg.PodEvictionTimeout, MonitorPeriod: cfg.NodeMonitorPeriod,
		Events: recorder("node-controller"),
	}, logger)
	ipam := nodeipam.New(c, nodes, alloc, logger)
	collector := gc.New(c, []*client.Informer{pods, replicaSets, rcs, deployments}, logger)
	nsc := namespace.New(c, namespaces, namespace.Config{}, logger)
	ttl := eventttl.New(c, eventttl.Config{TTL: cfg.EventTTL}, logger)

	var wg sync.WaitGroup
	wg.Go(func() { broadcaster.Run(ctx) })
	for _, i := range informers {
		wg.Go(func() { i.Run(ctx) })
	}
	wg.Go(func() { sched.Run(ctx) })
	wg.Go(func() { rsc.Run(ctx, cfg.Workers) })
	wg.Go(func() { rcc.Run(ctx, cfg.Workers) })
	wg.Go(func() { dc.Run(ctx, cfg.Workers) })
	wg.Go(func() { ec.Run(ctx, cfg.Workers) })
	wg.Go(func() { esc.Run(ctx, cfg.Workers) })
	wg.Go(func() { nlc.Run(ctx) })
	wg.Go(func() { ipam.Run(ctx) })
	wg.Go(func() { collector.Run(ctx, cfg.Workers) })
	wg.Go(func() { nsc.Run(ctx, cfg.Workers) })
	wg.Go(func() { ttl.Run(ctx) })
	wg.Wait()
	return nil
}
