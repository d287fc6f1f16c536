// Package podstate answers the questions controllers ask about a pod:
// is it still running its course, is it available, who controls it
// (whether it is ready, conditions answers).
package podstate

import (
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skep-io/skep/controlplane/api/conditions"
)

// Active is a pod that counts towards a controller's replicas: not
// finished and not being deleted.
func Active(p *corev1.Pod) bool {
	return p.DeletionTimestamp == nil && p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed
}

// Available is ready for at least minReadySeconds.
func Available(p *corev1.Pod, minReadySeconds int32, now time.Time) bool {
	c := conditions.PodReadyCondition(p)
	if c == nil || c.Status != corev1.ConditionTrue {
		return false
	}
	if minReadySeconds == 0 {
		return true
	}
	return !c.LastTransitionTime.IsZero() && c.LastTransitionTime.Add(time.Duration(minReadySeconds)*time.Second).Before(now)
}

// AvailableIn is how long until a ready pod becomes available, 0 if it
// is or never will be without another change.
func AvailableIn(p *corev1.Pod, minReadySeconds int32, now time.Time) time.Duration {
	c := conditions.PodReadyCondition(p)
	if c == nil || c.Status != corev1.ConditionTrue || minReadySeconds == 0 || c.LastTransitionTime.IsZero() {
		return 0
	}
	d := c.LastTransitionTime.Add(time.Duration(minReadySeconds) * time.Second).Sub(now)
	return max(d, 0)
}

// ControllerOf returns the owner reference with controller=true, if any.
func ControllerOf(obj metav1.Object) *metav1.OwnerReference {
	return metav1.GetControllerOfNoCopy(obj)
}
