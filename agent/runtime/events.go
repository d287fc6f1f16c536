package runtime

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
)

// EventRecorder records what happens to a pod's containers, as the
// kubelet's events: Pulled, Created, Started, Killing, BackOff, Unhealthy.
// It must not block; controlplane/events' Recorder is one.
type EventRecorder interface {
	Record(ref corev1.ObjectReference, eventType, reason, message string)
}

// event records an event about container c of pod (the pod itself when c
// is nil), naming the container by its field path as the kubelet does.
func (r *Runtime) event(pod *corev1.Pod, c *containerState, eventType, reason, format string, args ...any) {
	if r.cfg.Events == nil {
		return
	}
	ref := corev1.ObjectReference{Kind: "Pod", APIVersion: "v1", Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID}
	if c != nil {
		list := "containers"
		if c.init {
			list = "initContainers"
		}
		ref.FieldPath = fmt.Sprintf("spec.%s{%s}", list, c.name)
	}
	r.cfg.Events.Record(ref, eventType, reason, fmt.Sprintf(format, args...))
}
