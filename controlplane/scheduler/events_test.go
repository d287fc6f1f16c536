package scheduler

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/skep-io/skep/controlplane/api"
	"github.com/skep-io/skep/controlplane/apiserver/apiservertest"
	"github.com/skep-io/skep/controlplane/client"
	"github.com/skep-io/skep/controlplane/client/events"
	"github.com/skep-io/skep/controlplane/client/events/eventstest"
	"github.com/skep-io/skep/internal/testwait"
)

// TestSchedulerRecordsEvents checks the Events `kubectl describe pod`
// shows for scheduling: FailedScheduling (Warning) with the reason while
// a pod fits nowhere, then Scheduled naming the node, both from
// default-scheduler.
func TestSchedulerRecordsEvents(t *testing.T) {
	c := apiservertest.Start(t)
	b := eventstest.Start(t, c, events.Options{})
	startScheduler(t, c, Options{Events: b.Recorder(corev1.EventSource{Component: corev1.DefaultSchedulerName})})

	create(t, c, nodesResource, node("node-a", "2", "2Gi"))
	create(t, c, podsResource, pod("big", "100m", "16Gi"))
	eventsOf := func() map[string]*corev1.Event {
		objs, _, err := c.List(context.Background(), api.MustLookup("events"), "default", client.ListOptions{FieldSelector: "involvedObject.kind=Pod,involvedObject.name=big"})
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]*corev1.Event{}
		for _, o := range objs {
			e := o.(*corev1.Event)
			out[e.Reason] = e
		}
		return out
	}
	testwait.For(t, 10*time.Second, 20*time.Millisecond, func() error {
		e := eventsOf()["FailedScheduling"]
		if e == nil || e.Type != corev1.EventTypeWarning || e.Message != "0/1 nodes are available: 1 Insufficient memory." || e.Source.Component != "default-scheduler" {
			return fmt.Errorf("FailedScheduling event: %+v; want a Warning from default-scheduler saying 0/1 nodes are available: 1 Insufficient memory.", e)
		}
		return nil
	})
	create(t, c, nodesResource, node("node-big", "4", "32Gi"))
	testwait.For(t, 10*time.Second, 20*time.Millisecond, func() error {
		e := eventsOf()["Scheduled"]
		if e == nil || e.Type != corev1.EventTypeNormal || e.Message != "Successfully assigned default/big to node-big" {
			return fmt.Errorf("Scheduled event: %+v; want Normal \"Successfully assigned default/big to node-big\"", e)
		}
		return nil
	})
}
