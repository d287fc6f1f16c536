package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skep-io/skep/controlplane/api"
)

// threeHoursAgo prints as AGE 3h for the minute after it is taken.
func threeHoursAgo() metav1.Time { return metav1.NewTime(time.Now().Add(-3 * time.Hour)) }

func tablePods() []api.Object {
	return []api.Object{
		&corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "web-1", Namespace: "default", CreationTimestamp: threeHoursAgo()},
			Spec:       corev1.PodSpec{NodeName: "node-1", Containers: []corev1.Container{{Name: "web"}}},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIPs: []corev1.PodIP{{IP: "10.244.1.5"}},
				ContainerStatuses: []corev1.ContainerStatus{{Name: "web", Ready: true, State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}}},
		},
		&corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "api-0", Namespace: "team", CreationTimestamp: threeHoursAgo()},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "api"}}},
			Status:     corev1.PodStatus{Phase: corev1.PodPending},
		},
	}
}

// fields is every line of out split into its cells (kubectl pads with
// spaces, and no cell here holds one).
func lineFields(out string) []string {
	var lines []string
	for _, l := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		lines = append(lines, strings.Join(strings.Fields(l), " "))
	}
	return lines
}

// TestGetTable checks the tables `skep get` prints against what kubectl
// get prints for the same objects: kubectl's columns and alignment, the
// wide columns only with -o wide, NAMESPACE first with -A, kind.group/name
// when several kinds are printed.
func TestGetTable(t *testing.T) {
	pods, deployments := api.MustLookup("pods"), api.MustLookup("deployments")
	printed := func(r *api.Resource, objs []api.Object, out string, withNS, withKind bool) string {
		t.Helper()
		var b bytes.Buffer
		if err := printRows(t.Context(), &b, r, objs, out, withNS, withKind, true); err != nil {
			t.Fatalf("printRows: %v", err)
		}
		return b.String()
	}

	// Exactly as kubectl aligns it: each column as wide as its widest
	// cell plus three spaces.
	got := printed(pods, tablePods(), "", false, false)
	want := "NAME    READY   STATUS    RESTARTS   AGE\n" +
		"web-1   1/1     Running   0          3h\n" +
		"api-0   0/1     Pending   0          3h\n"
	if got != want {
		t.Errorf("skep get pods printed\n%s\nwant\n%s", got, want)
	}

	for _, tc := range []struct {
		what           string
		r              *api.Resource
		objs           []api.Object
		out            string
		withNS, ofKind bool
		want           []string
	}{
		{"get pods -o wide", pods, tablePods(), "wide", false, false, []string{
			"NAME READY STATUS RESTARTS AGE IP NODE NOMINATED NODE READINESS GATES",
			"web-1 1/1 Running 0 3h 10.244.1.5 node-1 <none> <none>",
			"api-0 0/1 Pending 0 3h <none> <none> <none> <none>",
		}},
		{"get pods -A", pods, tablePods(), "", true, false, []string{
			"NAMESPACE NAME READY STATUS RESTARTS AGE",
			"default web-1 1/1 Running 0 3h",
			"team api-0 0/1 Pending 0 3h",
		}},
		{"get pods,deploy (the pods)", pods, tablePods()[:1], "", false, true, []string{
			"NAME READY STATUS RESTARTS AGE",
			"pod/web-1 1/1 Running 0 3h",
		}},
		{"get pods,deploy -o wide (the deployments)", deployments, []api.Object{&appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default", CreationTimestamp: threeHoursAgo()},
			Spec: appsv1.DeploymentSpec{Replicas: func() *int32 { n := int32(2); return &n }(),
				Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
				Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "nginx:1.27"}}}}},
			Status: appsv1.DeploymentStatus{ReadyReplicas: 1, UpdatedReplicas: 2, AvailableReplicas: 1},
		}}, "wide", false, true, []string{
			"NAME READY UP-TO-DATE AVAILABLE AGE CONTAINERS IMAGES SELECTOR",
			"deployment.apps/web 1/2 2 1 3h web nginx:1.27 app=web",
		}},
	} {
		if got := lineFields(printed(tc.r, tc.objs, tc.out, tc.withNS, tc.ofKind)); strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
			t.Errorf("skep %s printed\n%s\nwant\n%s", tc.what, strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
		}
	}

	if got := printed(pods, nil, "", false, false); got != "" {
		t.Errorf("skep get pods with no pods printed %q; want nothing (No resources found goes to stderr)", got)
	}
}

// TestPrintServerTable checks printTable on a Table as the API server
// sends it (decoded from JSON, rows carrying only the objects' metadata):
// the namespace comes from that metadata, JSON numbers print as integers,
// a multi-line message prints its first line and "...".
func TestPrintServerTable(t *testing.T) {
	const sent = `{"kind":"Table","apiVersion":"meta.k8s.io/v1","metadata":{"resourceVersion":"9"},
	"columnDefinitions":[
		{"name":"Name","type":"string","format":"name","description":"","priority":0},
		{"name":"Data","type":"string","format":"","description":"","priority":0},
		{"name":"Note","type":"string","format":"","description":"","priority":0},
		{"name":"Age","type":"string","format":"","description":"","priority":0},
		{"name":"Hidden","type":"string","format":"","description":"","priority":1}],
	"rows":[{"cells":["settings",3,"first line\nsecond line","5m","x"],
		"object":{"kind":"PartialObjectMetadata","apiVersion":"meta.k8s.io/v1","metadata":{"name":"settings","namespace":"team"}}}]}`
	var table metav1.Table
	if err := json.Unmarshal([]byte(sent), &table); err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := printTable(&b, &table, tableOptions{withNamespace: true, kind: "configmap"}); err != nil {
		t.Fatal(err)
	}
	want := "NAMESPACE   NAME                 DATA   NOTE            AGE\n" +
		"team        configmap/settings   3      first line...   5m\n"
	if b.String() != want {
		t.Errorf("printed\n%s\nwant\n%s", b.String(), want)
	}
}
