package apiserver_test

import (
	"net/http"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skep-io/skep/controlplane/api"
	"github.com/skep-io/skep/controlplane/apiserver"
	"github.com/skep-io/skep/controlplane/apiserver/apiservertest"
	"github.com/skep-io/skep/controlplane/client"
)

// TestNodeWritesEvents checks what an agent's credential may do with
// Events, as Kubernetes' system:node role allows a kubelet: create them
// and update them (counting a repeat), but not read, list or delete them,
// nor touch Secrets.
func TestNodeWritesEvents(t *testing.T) {
	s := apiservertest.StartServer(t)
	ctx := t.Context()
	events, secrets := api.MustLookup("events"), api.MustLookup("secrets")
	admin := httpClient(t, s, s.AdminToken)
	joiner := httpClient(t, s, s.JoinToken)
	var jr apiserver.JoinResponse
	if err := joiner.Do(ctx, http.MethodPost, "/skep/v1/join", client.JoinRequest{NodeName: "node-a", Password: "password-of-node-a"}, &jr); err != nil {
		t.Fatalf("join: %v", err)
	}
	node := httpClient(t, s, jr.Token)
	now := metav1.NewTime(time.Now())
	ev := &corev1.Event{
		ObjectMeta:     metav1.ObjectMeta{Name: "web-1.1", Namespace: "default"},
		InvolvedObject: corev1.ObjectReference{Kind: "Pod", APIVersion: "v1", Namespace: "default", Name: "web-1", FieldPath: "spec.containers{web}"},
		Reason:         "BackOff", Message: "Back-off restarting failed container web", Type: corev1.EventTypeWarning,
		Source: corev1.EventSource{Component: "kubelet", Host: "node-a"}, Count: 1, FirstTimestamp: now, LastTimestamp: now,
	}
	if _, err := admin.Create(ctx, secrets, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "s", Namespace: "default"}}); err != nil {
		t.Fatal(err)
	}

	created, err := node.Create(ctx, events, ev)
	if err != nil {
		t.Fatalf("node creates an Event about its pod: %v, want it allowed", err)
	}
	again := created.(*corev1.Event)
	again.Count = 2
	if _, err := node.Update(ctx, events, again); err != nil {
		t.Fatalf("node updates its Event's count: %v, want it allowed", err)
	}
	got, err := admin.Get(ctx, events, "default", "web-1.1")
	if err != nil || got.(*corev1.Event).Count != 2 {
		t.Fatalf("the Event after the node's update: %v, %v; want count 2", got, err)
	}
	refused := map[string]error{
		"delete an Event": node.Delete(ctx, events, "default", "web-1.1", client.DeleteOptions{}),
	}
	_, refused["get an Event"] = node.Get(ctx, events, "default", "web-1.1")
	_, _, refused["list Events"] = node.List(ctx, events, "", client.ListOptions{})
	_, refused["get a Secret"] = node.Get(ctx, secrets, "default", "s")
	_, _, refused["list Secrets"] = node.List(ctx, secrets, "", client.ListOptions{})
	_, refused["create a Secret"] = node.Create(ctx, secrets, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "mine", Namespace: "default"}})
	_, refused["create a ServiceAccount"] = node.Create(ctx, api.MustLookup("serviceaccounts"), &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "sa", Namespace: "default"}})
	for what, err := range refused {
		if !apierrors.IsForbidden(err) {
			t.Errorf("node may %s: got %v, want 403", what, err)
		}
	}
}
