// Package conditions answers "is this node ready" and "is this pod ready"
// from their Ready conditions, one answer for the scheduler, the
// controllers, the agent and the tools. A node or pod without a Ready
// condition is not ready.
package conditions

import corev1 "k8s.io/api/core/v1"

// NodeReadyCondition returns the node's Ready condition, pointing into n
// so that a caller can change it in place, or nil when it has none.
func NodeReadyCondition(n *corev1.Node) *corev1.NodeCondition {
	for i := range n.Status.Conditions {
		if n.Status.Conditions[i].Type == corev1.NodeReady {
			return &n.Status.Conditions[i]
		}
	}
	return nil
}

// NodeReady reports whether the node's Ready condition is True.
func NodeReady(n *corev1.Node) bool {
	c := NodeReadyCondition(n)
	return c != nil && c.Status == corev1.ConditionTrue
}

// PodReadyCondition returns the pod's Ready condition, pointing into p, or
// nil when it has none.
func PodReadyCondition(p *corev1.Pod) *corev1.PodCondition {
	for i := range p.Status.Conditions {
		if p.Status.Conditions[i].Type == corev1.PodReady {
			return &p.Status.Conditions[i]
		}
	}
	return nil
}

// PodReady reports whether the pod's Ready condition is True.
func PodReady(p *corev1.Pod) bool {
	c := PodReadyCondition(p)
	return c != nil && c.Status == corev1.ConditionTrue
}
