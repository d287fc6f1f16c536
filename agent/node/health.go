package node

import (
	"context"
	"errors"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clientretry "k8s.io/client-go/util/retry"

	"github.com/skep-io/skep/controlplane/api/conditions"
	"github.com/skep-io/skep/controlplane/client"
)

// How often the agent asks containerd whether it answers, and how long it
// waits for the answer: a containerd that is down, or hung, makes the
// node not Ready within about the sum.
const (
	runtimeCheckEvery   = 2 * time.Second
	runtimeCheckTimeout = 3 * time.Second
)

// Reasons of the node's Ready condition the agent sets.
const (
	reasonAgentReady  = "AgentReady"
	reasonRuntimeDown = "ContainerRuntimeDown"
)

// pinger is what the health check needs of the container runtime.
type pinger interface {
	Ping(ctx context.Context) error
}

// watchRuntime keeps the node's Ready condition False, with reason
// ContainerRuntimeDown and the error as message, while containerd does not
// answer, and True when it does again, as kubelet's runtime health check
// does. It writes only when the condition changes (or the node lifecycle
// controller changed it back), until ctx ends.
func (a *Agent) watchRuntime(ctx context.Context, rt pinger, nodes *client.Informer) {
	for {
		pctx, cancel := context.WithTimeout(ctx, runtimeCheckTimeout)
		err := rt.Ping(pctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		cached, ok := nodes.Get("", a.cfg.Name)
		if ok && !needsWrite(conditions.NodeReadyCondition(cached.(*corev1.Node)), err) {
			// The cache says nothing is to change: no request.
		} else if werr := a.setRuntimeHealth(ctx, err); werr != nil && ctx.Err() == nil {
			a.log.Warn("write the node's Ready condition", "err", werr)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(runtimeCheckEvery):
		}
	}
}

// setRuntimeHealth writes the Ready condition that follows from the
// runtime's answer (runtimeErr nil: it answered).
func (a *Agent) setRuntimeHealth(ctx context.Context, runtimeErr error) error {
	written := false
	err := clientretry.RetryOnConflict(clientretry.DefaultRetry, func() error {
		obj, err := a.c.Get(ctx, nodesR, "", a.cfg.Name)
		if err != nil {
			return err
		}
		n := obj.(*corev1.Node)
		if !needsWrite(conditions.NodeReadyCondition(n), runtimeErr) {
			return nil
		}
		setReady(n, runtimeReadyCondition(runtimeErr))
		_, err = a.c.UpdateStatus(ctx, nodesR, n)
		written = err == nil
		return err
	})
	if written {
		if runtimeErr != nil {
			a.log.Warn("node not ready: container runtime down", "err", runtimeErr)
		} else {
			a.log.Info("node ready: container runtime answers")
		}
	}
	return err
}

// errRuntimeNotStarted is why a newly registered node is not Ready yet.
var errRuntimeNotStarted = errors.New("not started yet")

// runtimeReadyCondition is the Ready condition the agent reports when its
// runtime answered (runtimeErr nil) or not.
func runtimeReadyCondition(runtimeErr error) corev1.NodeCondition {
	if runtimeErr != nil {
		return corev1.NodeCondition{Type: corev1.NodeReady, Status: corev1.ConditionFalse, Reason: reasonRuntimeDown,
			Message: "container runtime is down: " + runtimeErr.Error()}
	}
	return corev1.NodeCondition{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: reasonAgentReady,
		Message: "skep agent is posting ready status"}
}

// setReady makes c the node's Ready condition, stamped now; the
// transition time stays when the status does.
func setReady(n *corev1.Node, c corev1.NodeCondition) {
	now := metav1.Now()
	c.LastHeartbeatTime, c.LastTransitionTime = now, now
	if cur := conditions.NodeReadyCondition(n); cur != nil {
		if cur.Status == c.Status {
			c.LastTransitionTime = cur.LastTransitionTime
		}
		*cur = c
		return
	}
	n.Status.Conditions = append(n.Status.Conditions, c)
}

// needsWrite says whether the Ready condition cur must change. Healthy,
// only a condition this check set is undone: the node lifecycle
// controller's Unknown, and its heartbeat True, are its own.
func needsWrite(cur *corev1.NodeCondition, runtimeErr error) bool {
	ours := cur != nil && cur.Status == corev1.ConditionFalse && cur.Reason == reasonRuntimeDown
	if runtimeErr != nil {
		return !ours
	}
	return cur == nil || ours
}
