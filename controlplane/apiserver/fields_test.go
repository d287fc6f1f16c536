package apiserver_test

import (
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/skep-io/skep/controlplane/api"
	"github.com/skep-io/skep/controlplane/apiserver"
	"github.com/skep-io/skep/controlplane/apiserver/apiservertest"
	"github.com/skep-io/skep/controlplane/client"
)

// TestFieldSelectors lists with the field selectors kubectl and
// client-go send (describe's events, drain's pods of a node, secrets of
// a type) and checks which objects come back, and that a field no
// resource selects on is a 400 naming it and what is allowed.
func TestFieldSelectors(t *testing.T) {
	s := apiservertest.StartServer(t)
	admin := httpClient(t, s, s.AdminToken)
	ctx := t.Context()
	secrets, events := api.MustLookup("secrets"), api.MustLookup("events")
	create := func(r *api.Resource, obj api.Object) {
		t.Helper()
		if _, err := admin.Create(ctx, r, obj); err != nil {
			t.Fatalf("create %s %s: %v", r.Kind, obj.GetName(), err)
		}
	}
	pod := func(name, node string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
			Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c", Image: "i"}}}}
	}
	create(pods, pod("on-a", "node-a"))
	create(pods, pod("on-b", "node-b"))
	other := pod("other-scheduler", "")
	other.Spec.SchedulerName = "custom"
	create(pods, other)
	create(nodes, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a"}})
	create(nodes, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-b"}, Spec: corev1.NodeSpec{Unschedulable: true}})
	create(secrets, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "plain", Namespace: "default"}})
	create(secrets, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "release", Namespace: "default"}, Type: "helm.sh/release.v1"})
	event := func(name, kind, objName, reason, typ string) *corev1.Event {
		return &corev1.Event{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
			InvolvedObject: corev1.ObjectReference{Kind: kind, Namespace: "default", Name: objName, UID: types.UID("uid-" + objName)},
			Reason:         reason, Type: typ, Source: corev1.EventSource{Component: "default-scheduler"}}
	}
	create(events, event("on-a.1", "Pod", "on-a", "Scheduled", corev1.EventTypeNormal))
	create(events, event("on-b.1", "Pod", "on-b", "FailedScheduling", corev1.EventTypeWarning))
	create(events, event("web.1", "Deployment", "on-a", "ScalingReplicaSet", corev1.EventTypeNormal))

	cases := []struct {
		resource *api.Resource
		selector string
		want     []string
	}{
		{pods, "spec.nodeName=node-a", []string{"on-a"}},
		{pods, "spec.nodeName=", []string{"other-scheduler"}},
		{pods, "status.phase=Pending", []string{"on-a", "on-b", "other-scheduler"}},
		{pods, "status.phase!=Pending", nil},
		{pods, "spec.schedulerName=custom", []string{"other-scheduler"}},
		{pods, "spec.schedulerName!=custom,metadata.name!=on-b", []string{"on-a"}},
		{nodes, "spec.unschedulable=true", []string{"node-b"}},
		{nodes, "spec.unschedulable=false", []string{"node-a"}},
		{secrets, "type=helm.sh/release.v1", []string{"release"}},
		{secrets, "type=Opaque", []string{"plain"}},
		{events, "involvedObject.kind=Pod,involvedObject.name=on-a,involvedObject.namespace=default", []string{"on-a.1"}},
		{events, "involvedObject.uid=uid-on-b", []string{"on-b.1"}},
		{events, "involvedObject.name=on-a", []string{"on-a.1", "web.1"}},
		{events, "type=Warning", []string{"on-b.1"}},
		{events, "reason=ScalingReplicaSet", []string{"web.1"}},
		{events, "source=default-scheduler,reason!=ScalingReplicaSet", []string{"on-a.1", "on-b.1"}},
	}
	for _, c := range cases {
		t.Run(c.resource.Name+" "+c.selector, func(t *testing.T) {
			objs, _, err := admin.List(ctx, c.resource, "", client.ListOptions{FieldSelector: c.selector})
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, o := range objs {
				got = append(got, o.GetName())
			}
			slices.Sort(got)
			if !slices.Equal(got, c.want) {
				t.Errorf("list %s --field-selector %s = %v, want %v", c.resource.Name, c.selector, got, c.want)
			}
		})
	}

	for _, c := range []struct {
		resource *api.Resource
		selector string
		allowed  string
	}{
		{pods, "spec.unschedulable=true", "spec.nodeName"},
		{nodes, "status.phase=Running", "spec.unschedulable"},
		{events, "involvedObject.color=red", "involvedObject.name"},
	} {
		_, _, err := admin.List(ctx, c.resource, "", client.ListOptions{FieldSelector: c.selector})
		field, _, _ := strings.Cut(c.selector, "=")
		if !apierrors.IsBadRequest(err) || !strings.Contains(err.Error(), "field label not supported: "+field) || !strings.Contains(err.Error(), c.allowed) {
			t.Errorf("list %s --field-selector %s: %v; want a 400 \"field label not supported: %s\" naming %s among the allowed", c.resource.Name, c.selector, err, field, c.allowed)
		}
	}
}

// TestSelectableFieldsAgreeWithList checks the exported field set (for
// another front end's GetAttrs) holds what the list selects on.
func TestSelectableFieldsAgreeWithList(t *testing.T) {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web-1", Namespace: "shop"},
		Spec: corev1.PodSpec{NodeName: "node-1", SchedulerName: "default-scheduler", HostNetwork: true}, Status: corev1.PodStatus{Phase: corev1.PodRunning}}
	set := apiserver.SelectableFields(pods, p)
	for k, v := range map[string]string{"metadata.name": "web-1", "metadata.namespace": "shop", "spec.nodeName": "node-1",
		"spec.schedulerName": "default-scheduler", "status.phase": "Running", "spec.hostNetwork": "true"} {
		if set[k] != v {
			t.Errorf("SelectableFields(pod)[%s] = %q, want %q", k, set[k], v)
		}
	}
	names := apiserver.SelectableFieldNames(api.MustLookup("events"))
	if len(names) != len(apiserver.SelectableFields(api.MustLookup("events"), &corev1.Event{})) || names[0] != "metadata.name" {
		t.Errorf("SelectableFieldNames(events) = %v; want the same fields as SelectableFields, metadata first", names)
	}
}
