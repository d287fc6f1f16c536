package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skep-io/skep/controlplane/api"
)

// TestDescribeEventsSection checks the Events section as kubectl prints
// it: columns Type, Reason, Age, From, Message; a repeated event's age as
// "<last> (xN over <first>)"; <none> without events.
func TestDescribeEventsSection(t *testing.T) {
	now := time.Date(2026, 12, 2, 14, 0, 0, 0, time.UTC)
	ago := func(d time.Duration) metav1.Time { return metav1.NewTime(now.Add(-d)) }
	evs := []*corev1.Event{
		{Type: "Normal", Reason: "Scheduled", Message: "Successfully assigned default/web-1 to node-1", Count: 1,
			FirstTimestamp: ago(5 * time.Minute), LastTimestamp: ago(5 * time.Minute), Source: corev1.EventSource{Component: "default-scheduler"}},
		{Type: "Warning", Reason: "BackOff", Message: "Back-off restarting failed container web in pod web-1_default(u)", Count: 7,
			FirstTimestamp: ago(4 * time.Minute), LastTimestamp: ago(10 * time.Second), Source: corev1.EventSource{Component: "kubelet", Host: "node-1"}},
	}
	var out bytes.Buffer
	if err := describeEvents(&out, evs, now); err != nil {
		t.Fatal(err)
	}
	want := "Events:\n" +
		"  Type     Reason     Age               From               Message\n" +
		"  ----     ------     ----              ----               -------\n" +
		"  Normal   Scheduled  5m                default-scheduler  Successfully assigned default/web-1 to node-1\n" +
		"  Warning  BackOff    10s (x7 over 4m)  kubelet            Back-off restarting failed container web in pod web-1_default(u)\n"
	if out.String() != want {
		t.Errorf("describeEvents printed\n%s\nwant\n%s", out.String(), want)
	}
	out.Reset()
	if err := describeEvents(&out, nil, now); err != nil || out.String() != "Events:  <none>\n" {
		t.Errorf("describeEvents without events printed %q (%v), want %q", out.String(), err, "Events:  <none>\n")
	}
}

// TestDescribeShowsEvents runs a server (scheduler and controllers in
// it) with no node, and checks that `skep describe` of a pending pod and
// of a Deployment ends with the Events the scheduler and the deployment
// controller recorded, a Service's with none, and a Node's with those
// about it in the default namespace.
func TestDescribeShowsEvents(t *testing.T) {
	p := startServer(t, t.TempDir())
	createPod(t, p, "lonely", nil)
	replicas := int32(1)
	labels := map[string]string{"app": "web"}
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default"},
		Spec: appsv1.DeploymentSpec{Replicas: &replicas, Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "skep/echo:v1"}}}}},
	}
	if _, err := p.client(t).Create(t.Context(), api.MustLookup("deployments"), d); err != nil {
		t.Fatal(err)
	}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default"},
		Spec: corev1.ServiceSpec{Selector: labels, Ports: []corev1.ServicePort{{Port: 80}}}}
	if _, err := p.client(t).Create(t.Context(), api.MustLookup("services"), svc); err != nil {
		t.Fatal(err)
	}
	// A node's events are in default, as the node controller writes them.
	node, err := p.client(t).Create(t.Context(), api.MustLookup("nodes"), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}})
	if err != nil {
		t.Fatal(err)
	}
	seen := metav1.Now()
	if _, err := p.client(t).Create(t.Context(), api.MustLookup("events"), &corev1.Event{
		ObjectMeta:     metav1.ObjectMeta{Name: "n1.1", Namespace: "default"},
		InvolvedObject: corev1.ObjectReference{Kind: "Node", Name: "n1", UID: node.GetUID()},
		Reason:         "NodeNotReady", Message: "Node n1 status is now: NodeNotReady", Type: corev1.EventTypeNormal,
		Source: corev1.EventSource{Component: "node-controller"}, Count: 3, FirstTimestamp: seen, LastTimestamp: seen,
	}); err != nil {
		t.Fatal(err)
	}
	expect := func(args []string, lines ...string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			out, stderr, err := p.run(args...)
			missing := ""
			for _, l := range lines {
				if !strings.Contains(out, l) {
					missing = l
				}
			}
			if err == nil && missing == "" {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("skep %s: %v %s\nprinted:\n%s\nwant a line with %q", strings.Join(args, " "), err, stderr, out, missing)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	expect([]string{"describe", "pod", "lonely"}, "Events:\n  Type     Reason", "Warning  FailedScheduling", "default-scheduler  0/0 nodes are available")
	expect([]string{"describe", "deploy", "web"}, "Normal  ScalingReplicaSet", "deployment-controller  Scaled up replica set web-")
	expect([]string{"describe", "svc", "web"}, "Events:  <none>")
	expect([]string{"describe", "node", "n1"}, "Normal  NodeNotReady  ", " (x3 over ", "  node-controller  Node n1 status is now: NodeNotReady")
	// As in kubectl, the section comes last: only its rows follow it.
	out, _, _ := p.run("describe", "deploy", "web")
	_, section, _ := strings.Cut(out, "Events:\n")
	for _, l := range strings.Split(strings.TrimRight(section, "\n"), "\n") {
		if !strings.HasPrefix(l, "  ") {
			t.Errorf("describe deploy web printed %q after its Events section:\n%s", l, out)
		}
	}
}
