package conditions

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
)

func TestNodeReady(t *testing.T) {
	for _, tc := range []struct {
		name  string
		conds []corev1.NodeCondition
		want  bool
	}{
		{"no conditions", nil, false},
		{"ready", []corev1.NodeCondition{{Type: corev1.NodeMemoryPressure, Status: corev1.ConditionFalse}, {Type: corev1.NodeReady, Status: corev1.ConditionTrue}}, true},
		{"not ready", []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionFalse}}, false},
		{"unknown", []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionUnknown}}, false},
		{"only another condition true", []corev1.NodeCondition{{Type: corev1.NodeDiskPressure, Status: corev1.ConditionTrue}}, false},
	} {
		n := &corev1.Node{Status: corev1.NodeStatus{Conditions: tc.conds}}
		if got := NodeReady(n); got != tc.want {
			t.Errorf("%s: NodeReady = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestNodeReadyConditionPointsIntoTheNode(t *testing.T) {
	n := &corev1.Node{Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionFalse}}}}
	NodeReadyCondition(n).Status = corev1.ConditionTrue
	if !NodeReady(n) {
		t.Fatalf("changing the returned condition did not change the node: %+v", n.Status.Conditions)
	}
}

func TestPodReady(t *testing.T) {
	for _, tc := range []struct {
		name  string
		conds []corev1.PodCondition
		want  bool
	}{
		{"no conditions", nil, false},
		{"ready", []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionTrue}, {Type: corev1.PodReady, Status: corev1.ConditionTrue}}, true},
		{"not ready", []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionFalse}}, false},
		{"only scheduled", []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionTrue}}, false},
	} {
		p := &corev1.Pod{Status: corev1.PodStatus{Conditions: tc.conds}}
		if got := PodReady(p); got != tc.want {
			t.Errorf("%s: PodReady = %v, want %v", tc.name, got, tc.want)
		}
	}
}
