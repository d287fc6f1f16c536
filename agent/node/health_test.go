package node

import (
	"errors"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestRuntimeHealthWrites checks which Ready conditions the runtime check
// rewrites: it sets False while containerd does not answer and undoes only
// its own False, leaving the node lifecycle controller's conditions alone.
func TestRuntimeHealthWrites(t *testing.T) {
	down := errors.New("context deadline exceeded")
	cond := func(s corev1.ConditionStatus, reason string) *corev1.NodeCondition {
		return &corev1.NodeCondition{Type: corev1.NodeReady, Status: s, Reason: reason}
	}
	cases := []struct {
		name string
		cur  *corev1.NodeCondition
		err  error
		want bool
	}{
		{"no condition, runtime answers", nil, nil, true},
		{"ready, runtime answers", cond(corev1.ConditionTrue, reasonAgentReady), nil, false},
		{"controller's heartbeat, runtime answers", cond(corev1.ConditionTrue, "NodeHeartbeat"), nil, false},
		{"controller's unknown, runtime answers", cond(corev1.ConditionUnknown, "NodeStatusUnknown"), nil, false},
		{"down, runtime answers again", cond(corev1.ConditionFalse, reasonRuntimeDown), nil, true},
		{"ready, runtime down", cond(corev1.ConditionTrue, reasonAgentReady), down, true},
		{"controller's unknown, runtime down", cond(corev1.ConditionUnknown, "NodeStatusUnknown"), down, true},
		{"down, still down", cond(corev1.ConditionFalse, reasonRuntimeDown), down, false},
	}
	for _, c := range cases {
		if got := needsWrite(c.cur, c.err); got != c.want {
			t.Errorf("%s: needsWrite = %v, want %v", c.name, got, c.want)
		}
	}

	// The transition time moves only when the status does.
	then := metav1.NewTime(time.Now().Add(-time.Hour))
	n := &corev1.Node{Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue,
		Reason: "NodeHeartbeat", LastTransitionTime: then}}}}
	setReady(n, runtimeReadyCondition(nil))
	if c := n.Status.Conditions[0]; !c.LastTransitionTime.Equal(&then) || c.Reason != reasonAgentReady {
		t.Errorf("True to True: %+v; want the old transition time and reason %s", c, reasonAgentReady)
	}
	setReady(n, runtimeReadyCondition(down))
	if c := n.Status.Conditions[0]; c.LastTransitionTime.Equal(&then) || c.Status != corev1.ConditionFalse ||
		c.Message != "container runtime is down: context deadline exceeded" {
		t.Errorf("True to False: %+v", c)
	}
	if len(n.Status.Conditions) != 1 {
		t.Errorf("conditions %+v; want one Ready", n.Status.Conditions)
	}
}
