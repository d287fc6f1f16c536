package replicaset

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestVictimsOrder(t *testing.T) {
	base := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	mk := func(name, node string, phase corev1.PodPhase, ready bool, age time.Duration) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(base.Add(-age))}}
		p.Spec.NodeName = node
		p.Status.Phase = phase
		st := corev1.ConditionFalse
		if ready {
			st = corev1.ConditionTrue
		}
		p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: st}}
		return p
	}
	pods := []*corev1.Pod{
		mk("ready-old", "n1", corev1.PodRunning, true, time.Hour),
		mk("ready-young", "n1", corev1.PodRunning, true, time.Minute),
		mk("running-notready", "n2", corev1.PodRunning, false, 2*time.Hour),
		mk("pending-bound", "n2", corev1.PodPending, false, 3*time.Hour),
		mk("unscheduled", "", corev1.PodPending, false, 4*time.Hour),
	}
	tests := []struct {
		n    int
		want string
	}{
		{1, "unscheduled"},
		{3, "unscheduled pending-bound running-notready"},
		{4, "unscheduled pending-bound running-notready ready-young"},
		{9, "unscheduled pending-bound running-notready ready-young ready-old"},
	}
	for _, tt := range tests {
		var got []string
		for _, p := range Victims(pods, tt.n) {
			got = append(got, p.Name)
		}
		if strings.Join(got, " ") != tt.want {
			t.Errorf("Victims(%d) = %v, want %s", tt.n, got, tt.want)
		}
	}
}

func TestPodName(t *testing.T) {
	name := PodName("web-7d4b9c")
	if !strings.HasPrefix(name, "web-7d4b9c-") || len(name) != len("web-7d4b9c-")+5 {
		t.Fatalf("PodName(web-7d4b9c) = %q, want web-7d4b9c-xxxxx", name)
	}
	if long := PodName(strings.Repeat("a", 300)); len(long) > 253 {
		t.Fatalf("PodName of a 300-character owner is %d characters, want at most 253", len(long))
	}
}
