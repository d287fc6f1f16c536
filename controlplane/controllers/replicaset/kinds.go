package replicaset

import (
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/skep-io/skep/controlplane/api"
)

// Status is what the controller reports on a ReplicaSet or a
// ReplicationController; both carry the same fields.
type Status struct {
	Replicas, FullyLabeledReplicas, ReadyReplicas, AvailableReplicas int32
	ObservedGeneration                                               int64
}

// kind adapts one of the two replicated kinds to the shared machinery.
type kind struct {
	resource *api.Resource
	spec     func(obj api.Object) (sel labels.Selector, replicas, minReadySeconds int32, tmpl *corev1.PodTemplateSpec, err error)
	status   func(obj api.Object) Status
	// withStatus returns a copy of obj carrying st.
	withStatus func(obj api.Object, st Status) api.Object
}

var replicaSets = kind{
	resource: api.MustLookup("replicasets"),
	spec: func(obj api.Object) (labels.Selector, int32, int32, *corev1.PodTemplateSpec, error) {
		rs := obj.(*appsv1.ReplicaSet)
		sel, err := metav1.LabelSelectorAsSelector(rs.Spec.Selector)
		return sel, replicasOf(rs.Spec.Replicas), rs.Spec.MinReadySeconds, &rs.Spec.Template, err
	},
	status: func(obj api.Object) Status {
		s := obj.(*appsv1.ReplicaSet).Status
		return Status{s.Replicas, s.FullyLabeledReplicas, s.ReadyReplicas, s.AvailableReplicas, s.ObservedGeneration}
	},
	withStatus: func(obj api.Object, st Status) api.Object {
		rs := obj.(*appsv1.ReplicaSet).DeepCopy()
		rs.Status.Replicas, rs.Status.FullyLabeledReplicas = st.Replicas, st.FullyLabeledReplicas
		rs.Status.ReadyReplicas, rs.Status.AvailableReplicas = st.ReadyReplicas, st.AvailableReplicas
		rs.Status.ObservedGeneration = st.ObservedGeneration
		return rs
	},
}

var replicationControllers = kind{
	resource: api.MustLookup("replicationcontrollers"),
	spec: func(obj api.Object) (labels.Selector, int32, int32, *corev1.PodTemplateSpec, error) {
		rc := obj.(*corev1.ReplicationController)
		tmpl := rc.Spec.Template
		if tmpl == nil {
			tmpl = &corev1.PodTemplateSpec{}
		}
		sel := labels.SelectorFromSet(rc.Spec.Selector)
		if len(rc.Spec.Selector) == 0 {
			sel = labels.Nothing() // never adopt every pod in the namespace
		}
		return sel, replicasOf(rc.Spec.Replicas), rc.Spec.MinReadySeconds, tmpl, nil
	},
	status: func(obj api.Object) Status {
		s := obj.(*corev1.ReplicationController).Status
		return Status{s.Replicas, s.FullyLabeledReplicas, s.ReadyReplicas, s.AvailableReplicas, s.ObservedGeneration}
	},
	withStatus: func(obj api.Object, st Status) api.Object {
		rc := obj.(*corev1.ReplicationController).DeepCopy()
		rc.Status.Replicas, rc.Status.FullyLabeledReplicas = st.Replicas, st.FullyLabeledReplicas
		rc.Status.ReadyReplicas, rc.Status.AvailableReplicas = st.ReadyReplicas, st.AvailableReplicas
		rc.Status.ObservedGeneration = st.ObservedGeneration
		return rc
	},
}

func replicasOf(n *int32) int32 {
	if n == nil {
		return 1
	}
	return *n
}
