package node

import (
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skep-io/skep/controlplane/api"
	"github.com/skep-io/skep/controlplane/apiserver/apiservertest"
	"github.com/skep-io/skep/controlplane/client"
	"github.com/skep-io/skep/controlplane/client/events"
	"github.com/skep-io/skep/controlplane/client/events/eventstest"
)

// TestKillingEvents checks that stopping a deleted pod records, as the
// kubelet does, "Stopping container X" for each container that runs, from
// the kubelet of this node, and nothing for one that already exited.
func TestKillingEvents(t *testing.T) {
	c := apiservertest.Start(t)
	b := eventstest.Start(t, c, events.Options{})
	a := &Agent{events: b.Recorder(corev1.EventSource{Component: "kubelet", Host: "node-1"})}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web-1", Namespace: "default", UID: "uid-1"},
		Status: corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{
			{Name: "web", State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}},
			{Name: "done", State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{}}},
		}},
	}
	a.recordKilling(pod)
	deadline := time.Now().Add(5 * time.Second)
	for {
		objs, _, err := c.List(t.Context(), api.MustLookup("events"), "default", client.ListOptions{FieldSelector: "involvedObject.name=web-1,reason=Killing"})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, o := range objs {
			e := o.(*corev1.Event)
			got = append(got, fmt.Sprintf("%s %s %s/%s: %s", e.InvolvedObject.FieldPath, e.InvolvedObject.UID, e.Source.Component, e.Source.Host, e.Message))
		}
		want := "spec.containers{web} uid-1 kubelet/node-1: Stopping container web"
		if len(got) == 1 && got[0] == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Killing events %q, want only %q", got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
