package runtime

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/skep-io/skep/test/images"
)

// recordedEvents keeps what the runtime recorded, as "Type Reason
// fieldPath: message".
type recordedEvents struct {
	mu     sync.Mutex
	events []string
}

func (r *recordedEvents) Record(ref corev1.ObjectReference, eventType, reason, message string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, fmt.Sprintf("%s %s %s/%s %s: %s", eventType, reason, ref.Namespace, ref.Name, ref.FieldPath, message))
}

func (r *recordedEvents) has(prefix string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.ContainsFunc(r.events, func(e string) bool { return strings.HasPrefix(e, prefix) })
}

func (r *recordedEvents) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.events, "\n")
}

// TestRuntimeRecordsEvents runs a pod with a container whose liveness
// probe fails and one that crashes, and checks the kubelet's events for
// them: Pulled, Created, Started; Unhealthy and Killing for the probe;
// BackOff for the crash loop.
func TestRuntimeRecordsEvents(t *testing.T) {
	env := newTestEnv(t)
	rec := &recordedEvents{}
	env.events = rec
	r, _ := env.start()
	app := toolbox("app", `touch /tmp/alive; sleep 2; rm /tmp/alive; while true; do sleep 1; done`)
	app.LivenessProbe = &corev1.Probe{
		ProbeHandler:     corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"cat", "/tmp/alive"}}},
		PeriodSeconds:    1,
		FailureThreshold: 1,
	}
	pod := newPod("evented", app, toolbox("crash", `exit 3`))
	want := []string{
		fmt.Sprintf("Normal Pulled default/evented spec.containers{app}: Container image %q already present on machine", images.Toolbox),
		"Normal Created default/evented spec.containers{app}: Created container: app",
		"Normal Started default/evented spec.containers{app}: Started container app",
		"Warning Unhealthy default/evented spec.containers{app}: Liveness probe failed: ",
		"Normal Killing default/evented spec.containers{app}: Container app failed liveness probe, will be restarted",
		"Normal Started default/evented spec.containers{crash}: Started container crash",
		fmt.Sprintf("Warning BackOff default/evented spec.containers{crash}: Back-off restarting failed container crash in pod evented_default(%s)", pod.UID),
	}
	waitStatus(t, r, pod, 60*time.Second, "with every event recorded", func(corev1.PodStatus) bool {
		for _, w := range want {
			if !rec.has(w) {
				return false
			}
		}
		return true
	})
	if t.Failed() {
		t.Logf("recorded:\n%s", rec)
	}
}
