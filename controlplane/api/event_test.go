package api_test

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skep-io/skep/controlplane/api"
)

func TestEventAndServiceAccountResources(t *testing.T) {
	for _, c := range []struct{ name, kind string }{{"ev", "Event"}, {"events", "Event"}, {"sa", "ServiceAccount"}, {"secret", "Secret"}, {"secrets", "Secret"}} {
		r, err := api.Lookup(c.name)
		if err != nil || r.Kind != c.kind || !r.Namespaced || r.APIVersion() != "v1" {
			t.Errorf("Lookup(%q) = %+v, %v; want the namespaced v1 %s", c.name, r, err, c.kind)
		}
	}
}

func TestValidateEvent(t *testing.T) {
	events := api.MustLookup("events")
	podEvent := func(mutate func(*corev1.Event)) *corev1.Event {
		e := &corev1.Event{
			ObjectMeta:     metav1.ObjectMeta{Name: "web-1.17a0b1c2d3e4f5a6", Namespace: "shop"},
			InvolvedObject: corev1.ObjectReference{Kind: "Pod", Namespace: "shop", Name: "web-1"},
			Reason:         "Scheduled", Message: "Successfully assigned shop/web-1 to node-1", Type: corev1.EventTypeNormal,
			Source: corev1.EventSource{Component: "default-scheduler"},
		}
		if mutate != nil {
			mutate(e)
		}
		return e
	}
	cases := []struct {
		name  string
		event *corev1.Event
		want  string
	}{
		{"old-style pod event", podEvent(nil), ""},
		{"node event in default", podEvent(func(e *corev1.Event) {
			e.Namespace = "default"
			e.InvolvedObject = corev1.ObjectReference{Kind: "Node", Name: "node-1"}
		}), ""},
		{"node event elsewhere", podEvent(func(e *corev1.Event) { e.InvolvedObject = corev1.ObjectReference{Kind: "Node", Name: "node-1"} }),
			"involvedObject.namespace: Invalid value: \"\": does not match event.namespace"},
		{"namespace not the object's", podEvent(func(e *corev1.Event) { e.InvolvedObject.Namespace = "other" }),
			"involvedObject.namespace: Invalid value: \"other\": does not match event.namespace"},
		{"new-style without who and what", podEvent(func(e *corev1.Event) { e.EventTime = metav1.NewMicroTime(time.Now()) }),
			"reportingComponent: Required value"},
		{"new-style complete", podEvent(func(e *corev1.Event) {
			e.EventTime = metav1.NewMicroTime(time.Now())
			e.ReportingController, e.ReportingInstance, e.Action = "skep.io/scheduler", "server-1", "Binding"
		}), ""},
		{"new-style note too long", podEvent(func(e *corev1.Event) {
			e.EventTime = metav1.NewMicroTime(time.Now())
			e.ReportingController, e.ReportingInstance, e.Action = "skep.io/scheduler", "server-1", "Binding"
			e.Message = strings.Repeat("x", 1025)
		}), "message: Too long"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := api.Validate(events, c.event).ToAggregate()
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("Validate = %v, want no error", err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
				t.Fatalf("Validate = %v, want %q", err, c.want)
			}
		})
	}
}
