package api

import (
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/util/validation/field"

	corev1 "k8s.io/api/core/v1"
)

// validatePodSpecUpdate allows what Kubernetes allows to change in a pod
// that exists: container and init container images, activeDeadlineSeconds,
// added tolerations, and the node it is bound to, once. A pod is run as it
// was admitted; anything else is a new pod.
func validatePodSpecUpdate(spec, old *corev1.PodSpec) field.ErrorList {
	mutable := old.DeepCopy()
	if len(spec.Containers) == len(mutable.Containers) {
		for i := range spec.Containers {
			mutable.Containers[i].Image = spec.Containers[i].Image
		}
	}
	if len(spec.InitContainers) == len(mutable.InitContainers) {
		for i := range spec.InitContainers {
			mutable.InitContainers[i].Image = spec.InitContainers[i].Image
		}
	}
	mutable.ActiveDeadlineSeconds = spec.ActiveDeadlineSeconds
	if old.NodeName == "" {
		mutable.NodeName = spec.NodeName
	}
	var errs field.ErrorList
	if tolerationsAdded(spec.Tolerations, old.Tolerations) {
		mutable.Tolerations = spec.Tolerations
	}
	if !equality.Semantic.DeepEqual(spec, mutable) {
		errs = append(errs, field.Forbidden(field.NewPath("spec"), "pod updates may not change fields other than `spec.containers[*].image`, `spec.initContainers[*].image`, `spec.activeDeadlineSeconds` and `spec.tolerations` (only additions to existing tolerations); delete the pod and create a new one (or change its Deployment's template)"))
	}
	return errs
}

// tolerationsAdded: every old toleration is still there (new ones may be
// added), as Kubernetes allows.
func tolerationsAdded(now, old []corev1.Toleration) bool {
	for _, o := range old {
		found := false
		for _, n := range now {
			if equality.Semantic.DeepEqual(o, n) {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}
