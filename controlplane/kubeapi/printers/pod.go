package printers

import (
	"fmt"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

var podPrinter = printer{
	columns: []metav1.TableColumnDefinition{
		nameColumn(),
		column("Ready", "string", "The aggregate readiness state of this pod for accepting traffic."),
		column("Status", "string", "The aggregate status of the containers in this pod."),
		column("Restarts", "string", "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted."),
		ageColumn(),
		wide(column("IP", "string", corev1.PodStatus{}.SwaggerDoc()["podIP"])),
		wide(column("Node", "string", corev1.PodSpec{}.SwaggerDoc()["nodeName"])),
		wide(column("Nominated Node", "string", corev1.PodStatus{}.SwaggerDoc()["nominatedNodeName"])),
		wide(column("Readiness Gates", "string", corev1.PodSpec{}.SwaggerDoc()["readinessGates"])),
	},
	row: rowsOf(podRow),
}

func podRow(p *corev1.Pod, now time.Time) metav1.TableRow {
	s := summarizePod(p)
	restarts := strconv.Itoa(s.restarts)
	if s.restarts != 0 && !s.lastRestart.IsZero() {
		restarts = fmt.Sprintf("%d (%s ago)", s.restarts, age(s.lastRestart, now))
	}
	podIP := ""
	if len(p.Status.PodIPs) > 0 {
		podIP = p.Status.PodIPs[0].IP
	}
	row := metav1.TableRow{Cells: []any{
		p.Name, fmt.Sprintf("%d/%d", s.ready, s.total), s.reason, restarts, age(p.CreationTimestamp, now),
		orNone(podIP), orNone(p.Spec.NodeName), orNone(p.Status.NominatedNodeName), readinessGates(p),
	}}
	// kubectl marks finished pods so that a watch can tell them apart.
	switch p.Status.Phase {
	case corev1.PodSucceeded:
		row.Conditions = []metav1.TableRowCondition{{Type: metav1.RowCompleted, Status: metav1.ConditionTrue, Reason: string(corev1.PodSucceeded), Message: "The pod has completed successfully."}}
	case corev1.PodFailed:
		row.Conditions = []metav1.TableRowCondition{{Type: metav1.RowCompleted, Status: metav1.ConditionTrue, Reason: string(corev1.PodFailed), Message: "The pod failed."}}
	}
	return row
}

// podSummary is what the READY, STATUS and RESTARTS columns say.
type podSummary struct {
	ready, total int
	reason       string
	restarts     int
	lastRestart  metav1.Time
}

// summarizePod words a pod's state as kubectl does. STATUS starts from the
// phase (or the pod's reason, e.g. Evicted); while init containers run it
// names the one that is not done (Init:1/2, Init:CrashLoopBackOff,
// Init:ExitCode:1); after that the reason of the first container that has
// one (CrashLoopBackOff, ErrImagePull, Completed, Error) wins; a pod being
// deleted is Terminating. RESTARTS counts the init containers' restarts
// while they run, then those of the containers and of the sidecars
// (init containers with restartPolicy Always, which also count in READY).
func summarizePod(p *corev1.Pod) podSummary {
	s := podSummary{total: len(p.Spec.Containers), reason: string(p.Status.Phase)}
	if p.Status.Reason != "" {
		s.reason = p.Status.Reason
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Reason == corev1.PodReasonSchedulingGated {
			s.reason = corev1.PodReasonSchedulingGated
		}
	}
	sidecars := map[string]bool{}
	for _, c := range p.Spec.InitContainers {
		if c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			sidecars[c.Name] = true
			s.total++
		}
	}

	var sidecarRestarts int
	var sidecarLast metav1.Time
	initializing := false
	for i, cs := range p.Status.InitContainerStatuses {
		s.restarts += int(cs.RestartCount)
		s.lastRestart = later(s.lastRestart, cs)
		if sidecars[cs.Name] {
			sidecarRestarts += int(cs.RestartCount)
			sidecarLast = later(sidecarLast, cs)
		}
		// Done: exited 0, or a sidecar that has started.
		if t := cs.State.Terminated; t != nil && t.ExitCode == 0 {
			continue
		}
		if sidecars[cs.Name] && cs.Started != nil && *cs.Started {
			if cs.Ready {
				s.ready++
			}
			continue
		}
		// The first init container not done is what the pod waits for.
		s.reason = initReason(cs, i, len(p.Spec.InitContainers))
		initializing = true
		break
	}
	if initializing && !hasCondition(p, corev1.PodInitialized) {
		return withDeletion(p, s)
	}

	s.restarts, s.lastRestart = sidecarRestarts, sidecarLast
	running := false
	// From the last container to the first, so that the first container
	// with a reason gives the pod its STATUS.
	for i := len(p.Status.ContainerStatuses) - 1; i >= 0; i-- {
		cs := p.Status.ContainerStatuses[i]
		s.restarts += int(cs.RestartCount)
		s.lastRestart = later(s.lastRestart, cs)
		switch {
		case cs.State.Waiting != nil && cs.State.Waiting.Reason != "":
			s.reason = cs.State.Waiting.Reason
		case cs.State.Terminated != nil:
			s.reason = terminatedReason(cs.State.Terminated, "")
		case cs.Ready && cs.State.Running != nil:
			running = true
			s.ready++
		}
	}
	// A pod whose finished container says Completed while another still
	// runs is not complete.
	if s.reason == "Completed" && running {
		s.reason = "NotReady"
		if hasCondition(p, corev1.PodReady) {
			s.reason = "Running"
		}
	}
	return withDeletion(p, s)
}

// initReason is STATUS while the i-th of n init containers is not done.
func initReason(cs corev1.ContainerStatus, i, n int) string {
	switch {
	case cs.State.Terminated != nil:
		return terminatedReason(cs.State.Terminated, "Init:")
	case cs.State.Waiting != nil && cs.State.Waiting.Reason != "" && cs.State.Waiting.Reason != "PodInitializing":
		return "Init:" + cs.State.Waiting.Reason
	}
	return fmt.Sprintf("Init:%d/%d", i, n)
}

// terminatedReason is the reason of a container that exited, or its
// signal or exit code when it gives none.
func terminatedReason(t *corev1.ContainerStateTerminated, prefix string) string {
	switch {
	case t.Reason != "":
		return prefix + t.Reason
	case t.Signal != 0:
		return fmt.Sprintf("%sSignal:%d", prefix, t.Signal)
	}
	return fmt.Sprintf("%sExitCode:%d", prefix, t.ExitCode)
}

// withDeletion overrides STATUS for a pod being deleted: Unknown when its
// node is lost (NodeLost), Terminating while it has not finished.
func withDeletion(p *corev1.Pod, s podSummary) podSummary {
	if p.DeletionTimestamp == nil {
		return s
	}
	if p.Status.Reason == "NodeLost" {
		s.reason = "Unknown"
	} else if p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed {
		s.reason = "Terminating"
	}
	return s
}

// later is the later of t and when the container last exited.
func later(t metav1.Time, cs corev1.ContainerStatus) metav1.Time {
	if last := cs.LastTerminationState.Terminated; last != nil && t.Before(&last.FinishedAt) {
		return last.FinishedAt
	}
	return t
}

func hasCondition(p *corev1.Pod, typ corev1.PodConditionType) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == typ && c.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}

// readinessGates is how many of the pod's readiness gates are met, "2/3",
// or <none> for a pod without any.
func readinessGates(p *corev1.Pod) string {
	if len(p.Spec.ReadinessGates) == 0 {
		return "<none>"
	}
	met := 0
	for _, g := range p.Spec.ReadinessGates {
		for _, c := range p.Status.Conditions {
			if c.Type == g.ConditionType {
				if c.Status == corev1.ConditionTrue {
					met++
				}
				break
			}
		}
	}
	return fmt.Sprintf("%d/%d", met, len(p.Spec.ReadinessGates))
}
