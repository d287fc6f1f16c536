package runtime

import (
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// status computes the pod's status from what the worker knows. pw.mu is held.
func (r *Runtime) status(pw *podWorker) corev1.PodStatus {
	pod := pw.pod
	spec := &pod.Spec
	st := corev1.PodStatus{QOSClass: qosClass(pod)}
	if !pw.sandbox.created.IsZero() {
		t := metav1.NewTime(pw.sandbox.created)
		st.StartTime = &t
	}
	if pw.sandbox.id != "" && pw.sandbox.ip.IsValid() {
		st.PodIP = pw.sandbox.ip.String()
		st.PodIPs = []corev1.PodIP{{IP: st.PodIP}}
	}

	initDone, initFailed := true, false
	for _, cs := range spec.InitContainers {
		c := pw.container(cs.Name, true)
		s := containerStatus(c, &cs, reasonPodInitializing)
		if !initDone {
			s.State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reasonPodInitializing}}
		}
		st.InitContainerStatuses = append(st.InitContainerStatuses, s)
		if !c.succeeded() {
			if c.exited != nil && spec.RestartPolicy == corev1.RestartPolicyNever {
				initFailed = true
			}
			initDone = false
		}
	}

	allReady := true
	var running, waiting, stopped, succeeded int
	for i := range spec.Containers {
		cs := &spec.Containers[i]
		c := pw.container(cs.Name, false)
		waitReason := reasonContainerCreating
		if !initDone {
			waitReason = reasonPodInitializing
		}
		s := containerStatus(c, cs, waitReason)
		st.ContainerStatuses = append(st.ContainerStatuses, s)
		if !s.Ready {
			allReady = false
		}
		switch {
		case s.State.Running != nil:
			running++
		case s.State.Terminated != nil:
			stopped++
			if s.State.Terminated.ExitCode == 0 {
				succeeded++
			}
		case s.LastTerminationState.Terminated != nil:
			stopped++ // in back-off: it ran before
		default:
			waiting++
		}
	}

	switch {
	case initFailed:
		st.Phase = corev1.PodFailed
	case !initDone || pw.sandbox.id == "":
		st.Phase = corev1.PodPending
	case waiting > 0:
		st.Phase = corev1.PodPending
	case running > 0:
		st.Phase = corev1.PodRunning
	case stopped > 0:
		switch {
		case spec.RestartPolicy == corev1.RestartPolicyAlways || spec.RestartPolicy == "":
			st.Phase = corev1.PodRunning
		case stopped == succeeded:
			st.Phase = corev1.PodSucceeded
		case spec.RestartPolicy == corev1.RestartPolicyNever:
			st.Phase = corev1.PodFailed
		default:
			st.Phase = corev1.PodRunning
		}
	default:
		st.Phase = corev1.PodPending
	}
	if pw.podError != "" {
		st.Reason, st.Message = "SandboxError", pw.podError
	}

	ready := allReady && initDone && len(spec.Containers) > 0
	if st.Phase == corev1.PodSucceeded {
		ready = false
	}
	st.Conditions = []corev1.PodCondition{
		pw.condition(corev1.PodScheduled, true, ""),
		pw.condition(corev1.PodInitialized, initDone, "ContainersNotInitialized"),
		pw.condition(corev1.ContainersReady, ready, "ContainersNotReady"),
		pw.condition(corev1.PodReady, ready, "ContainersNotReady"),
	}
	return st
}

// condition returns a pod condition whose lastTransitionTime is when its
// status last changed.
func (pw *podWorker) condition(t corev1.PodConditionType, ok bool, falseReason string) corev1.PodCondition {
	status := corev1.ConditionFalse
	if ok {
		status = corev1.ConditionTrue
	}
	cur, seen := pw.transition[t]
	if !seen || cur.status != status {
		cur = conditionState{status: status, since: metav1.NewTime(time.Now().Truncate(time.Second))}
		pw.transition[t] = cur
	}
	c := corev1.PodCondition{Type: t, Status: status, LastTransitionTime: cur.since}
	if !ok {
		c.Reason = falseReason
	}
	return c
}

func containerStatus(c *containerState, spec *corev1.Container, waitReason string) corev1.ContainerStatus {
	s := corev1.ContainerStatus{
		Name:         spec.Name,
		Image:        spec.Image,
		ImageID:      c.imageID,
		RestartCount: int32(c.attempt),
		Ready:        c.running && c.started && c.ready,
	}
	if c.id != "" {
		s.ContainerID = containerIDPrefix + c.id
	}
	started := c.running && c.started
	s.Started = &started
	switch {
	case c.running:
		s.State.Running = &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(c.startedAt)}
	case c.exited != nil && c.nextStart.IsZero():
		s.State.Terminated = c.exited.DeepCopy()
	case c.exited != nil:
		// It will restart: kubelet shows the exit as the last state and
		// the back-off as the current one.
		if c.nextStart.After(time.Now()) {
			s.State.Waiting = &corev1.ContainerStateWaiting{Reason: c.backoffReason, Message: c.waitMessage}
		} else {
			s.State.Waiting = &corev1.ContainerStateWaiting{Reason: waitReason}
		}
		s.LastTerminationState.Terminated = c.exited.DeepCopy()
	default:
		reason := waitReason
		if c.waitReason != "" {
			reason = c.waitReason
		}
		s.State.Waiting = &corev1.ContainerStateWaiting{Reason: reason, Message: c.waitMessage}
	}
	if c.last != nil && s.LastTerminationState.Terminated == nil {
		s.LastTerminationState.Terminated = c.last.DeepCopy()
	}
	return s
}

func qosClass(pod *corev1.Pod) corev1.PodQOSClass {
	any, guaranteed := false, true
	for _, c := range pod.Spec.Containers {
		for _, res := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			limit, hasLimit := c.Resources.Limits[res]
			req, hasReq := c.Resources.Requests[res]
			if hasLimit || hasReq {
				any = true
			}
			if !hasLimit || (hasReq && req.Cmp(limit) != 0) {
				guaranteed = false
			}
		}
	}
	switch {
	case !any:
		return corev1.PodQOSBestEffort
	case guaranteed:
		return corev1.PodQOSGuaranteed
	}
	return corev1.PodQOSBurstable
}

func statusEqual(a, b corev1.PodStatus) bool {
	return equality.Semantic.DeepEqual(a, b)
}
