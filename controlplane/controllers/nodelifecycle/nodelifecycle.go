// Package nodelifecycle watches node heartbeats (a Lease per node in
// kube-node-lease, renewed by its agent) and acts on silence: after the
// grace period the node's Ready condition becomes Unknown and its pods are
// marked not ready (so they leave Service endpoints); after the eviction
// timeout its pods are deleted so their controllers replace them
// elsewhere. A node whose heartbeat returns becomes Ready again.
package nodelifecycle

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skep-io/skep/controlplane/api"
	"github.com/skep-io/skep/controlplane/api/conditions"
	"github.com/skep-io/skep/controlplane/client"
	"github.com/skep-io/skep/controlplane/client/events"
)

// LeaseNamespace holds the nodes' heartbeat Leases, one per node, named
// after it.
const LeaseNamespace = "kube-node-lease"

// Reasons and messages, as the Kubernetes node lifecycle controller
// writes them.
const (
	ReasonNodeStatusUnknown = "NodeStatusUnknown"
	MessageStatusUnknown    = "Kubelet stopped posting node status."
	// ReasonNodeHeartbeat is the reason of a Ready condition this
	// controller set because the node's lease is being renewed.
	ReasonNodeHeartbeat = "NodeLeaseRenewed"
)

var (
	nodesResource = api.MustLookup("nodes")
	podsResource  = api.MustLookup("pods")
)

// Config tunes the controller; zero values take Kubernetes' defaults.
type Config struct {
	// GracePeriod is how long a lease may go unrenewed before the node is
	// Unknown (--node-monitor-grace-period, 40s).
	GracePeriod time.Duration
	// EvictionTimeout is how long a node may stay not Ready before its
	// pods are deleted (--pod-eviction-timeout, 60s).
	EvictionTimeout time.Duration
	// MonitorPeriod is how often nodes are checked (5s).
	MonitorPeriod time.Duration
	// Events records NodeReady and NodeNotReady on nodes (nil: none).
	// In Kubernetes the kubelet reports NodeReady; here the control plane
	// decides readiness from the lease, so it reports both.
	Events *events.Recorder
}

// Controller tracks node health.
type Controller struct {
	c      client.Interface
	nodes  *client.Informer
	leases *client.Informer
	pods   *client.Informer
	cfg    Config
	logger *slog.Logger
	now    func() time.Time

	mu sync.Mutex
	// health holds, per node, the last renewTime seen and when (by this
	// process's clock) it was seen to change: comparing local times only
	// keeps clock skew between machines out of the decision.
	health map[string]*health
}

type health struct {
	renewTime metav1.MicroTime
	probed    time.Time
}

// New returns the node lifecycle controller; the leases informer must
// cover LeaseNamespace.
func New(c client.Interface, nodes, leases, pods *client.Informer, cfg Config, logger *slog.Logger) *Controller {
	if cfg.GracePeriod <= 0 {
		cfg.GracePeriod = 40 * time.Second
	}
	if cfg.EvictionTimeout <= 0 {
		cfg.EvictionTimeout = 60 * time.Second
	}
	if cfg.MonitorPeriod <= 0 {
		cfg.MonitorPeriod = 5 * time.Second
	}
	return &Controller{
		c: c, nodes: nodes, leases: leases, pods: pods, cfg: cfg,
		logger: logger.With("controller", "nodelifecycle"),
		now:    time.Now,
		health: map[string]*health{},
	}
}

// Run checks every node each MonitorPeriod until ctx ends.
func (nc *Controller) Run(ctx context.Context) {
	if !client.WaitForSync(ctx, nc.nodes, nc.leases, nc.pods) {
		return
	}
	t := time.NewTicker(nc.cfg.MonitorPeriod)
	defer t.Stop()
	for {
		if err := nc.monitor(ctx); err != nil && ctx.Err() == nil {
			nc.logger.Warn("monitor nodes", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// lastHeartbeat records the node's current lease renewal and returns the
// local time it was first seen.
func (nc *Controller) lastHeartbeat(node string, now time.Time) time.Time {
	var renew metav1.MicroTime
	if o, ok := nc.leases.Get(LeaseNamespace, node); ok {
		if l := o.(*coordinationv1.Lease); l.Spec.RenewTime != nil {
			renew = *l.Spec.RenewTime
		}
	}
	nc.mu.Lock()
	defer nc.mu.Unlock()
	h, ok := nc.health[node]
	if !ok || !h.renewTime.Equal(&renew) {
		// A node first seen gets a full grace period from now: this
		// process may just have become leader.
		h = &health{renewTime: renew, probed: now}
		nc.health[node] = h
	}
	return h.probed
}

func (nc *Controller) monitor(ctx context.Context) error {
	now := nc.now()
	var errs []error
	seen := map[string]bool{}
	for _, o := range nc.nodes.List() {
		node := o.(*corev1.Node)
		seen[node.Name] = true
		if err := nc.check(ctx, node, now); err != nil {
			errs = append(errs, err)
		}
	}
	nc.mu.Lock()
	for name := range nc.health {
		if !seen[name] {
			delete(nc.health, name)
		}
	}
	nc.mu.Unlock()
	return errors.Join(errs...)
}

func (nc *Controller) check(ctx context.Context, node *corev1.Node, now time.Time) error {
	silent := now.Sub(nc.lastHeartbeat(node.Name, now)) > nc.cfg.GracePeriod
	ready := conditions.NodeReadyCondition(node)
	switch {
	case silent && (ready == nil || ready.Status != corev1.ConditionUnknown):
		nc.logger.Warn("node stopped renewing its lease: status unknown", "node", node.Name, "grace", nc.cfg.GracePeriod)
		if err := nc.setUnknown(ctx, node, now); err != nil {
			return err
		}
		return nc.markPodsNotReady(ctx, node.Name)
	case !silent && (ready == nil || (ready.Status == corev1.ConditionUnknown && ready.Reason == ReasonNodeStatusUnknown)):
		// The heartbeat is back (or the agent registered the node without
		// conditions): Ready again. An agent that reports Ready=False
		// itself is left alone.
		nc.logger.Info("node lease renewed: ready", "node", node.Name)
		return nc.setReady(ctx, node, now)
	}
	if ready != nil && ready.Status != corev1.ConditionTrue && now.Sub(ready.LastTransitionTime.Time) > nc.cfg.EvictionTimeout {
		return nc.evictPods(ctx, node.Name)
	}
	return nil
}

// setUnknown sets every condition the agent reports to Unknown, as
// nothing is known any more.
func (nc *Controller) setUnknown(ctx context.Context, node *corev1.Node, now time.Time) error {
	n := node.DeepCopy()
	t := metav1.NewTime(now)
	found := false
	for i := range n.Status.Conditions {
		c := &n.Status.Conditions[i]
		if c.Type == corev1.NodeReady {
			found = true
		}
		if c.Status != corev1.ConditionUnknown {
			c.LastTransitionTime = t
		}
		c.Status, c.Reason, c.Message = corev1.ConditionUnknown, ReasonNodeStatusUnknown, MessageStatusUnknown
	}
	if !found {
		n.Status.Conditions = append(n.Status.Conditions, corev1.NodeCondition{Type: corev1.NodeReady, Status: corev1.ConditionUnknown,
			Reason: ReasonNodeStatusUnknown, Message: MessageStatusUnknown, LastTransitionTime: t, LastHeartbeatTime: t})
	}
	if _, err := nc.c.UpdateStatus(ctx, nodesResource, n); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("mark node %s unknown: %w", node.Name, err)
	}
	nc.recordStatusChange(node, "NodeNotReady")
	return nil
}

func (nc *Controller) setReady(ctx context.Context, node *corev1.Node, now time.Time) error {
	n := node.DeepCopy()
	t := metav1.NewTime(now)
	cond := corev1.NodeCondition{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: ReasonNodeHeartbeat,
		Message: "node lease is being renewed", LastTransitionTime: t, LastHeartbeatTime: t}
	if cur := conditions.NodeReadyCondition(n); cur != nil {
		*cur = cond
	} else {
		n.Status.Conditions = append(n.Status.Conditions, cond)
	}
	if _, err := nc.c.UpdateStatus(ctx, nodesResource, n); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("mark node %s ready: %w", node.Name, err)
	}
	nc.recordStatusChange(node, "NodeReady")
	return nil
}

// recordStatusChange records a node's new readiness as Kubernetes words
// it: "Node node-1 status is now: NodeNotReady".
func (nc *Controller) recordStatusChange(node *corev1.Node, status string) {
	nc.cfg.Events.Eventf(node, corev1.EventTypeNormal, status, "Node %s status is now: %s", node.Name, status)
}

func (nc *Controller) podsOn(node string) []*corev1.Pod {
	var out []*corev1.Pod
	for _, o := range nc.pods.List() {
		if p := o.(*corev1.Pod); p.Spec.NodeName == node {
			out = append(out, p)
		}
	}
	return out
}

// markPodsNotReady sets Ready=False on the node's pods: nobody can vouch
// for them now.
func (nc *Controller) markPodsNotReady(ctx context.Context, node string) error {
	var errs []error
	for _, p := range nc.podsOn(node) {
		cp := p.DeepCopy()
		changed := false
		for i := range cp.Status.Conditions {
			c := &cp.Status.Conditions[i]
			if c.Type == corev1.PodReady && c.Status != corev1.ConditionFalse {
				c.Status, c.Reason, c.LastTransitionTime = corev1.ConditionFalse, "NodeNotReady", metav1.NewTime(nc.now())
				changed = true
			}
		}
		if !changed {
			continue
		}
		if _, err := nc.c.UpdateStatus(ctx, podsResource, cp); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("mark pod %s not ready: %w", client.KeyOf(p), err))
		}
	}
	return errors.Join(errs...)
}

// evictPods deletes the node's pods at once (grace 0): their node cannot
// be asked to stop them, and their controllers must replace them.
func (nc *Controller) evictPods(ctx context.Context, node string) error {
	pods := nc.podsOn(node)
	if len(pods) == 0 {
		return nil
	}
	nc.logger.Warn("evicting pods of a node not ready for too long", "node", node, "pods", len(pods), "timeout", nc.cfg.EvictionTimeout)
	zero := int64(0)
	var errs []error
	for _, p := range pods {
		err := nc.c.Delete(ctx, podsResource, p.Namespace, p.Name, client.DeleteOptions{GracePeriodSeconds: &zero})
		if err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("evict pod %s: %w", client.KeyOf(p), err))
		}
	}
	return errors.Join(errs...)
}
