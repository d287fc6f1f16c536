package controllers

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skep-io/skep/controlplane/api"
	"github.com/skep-io/skep/controlplane/apiserver/apiservertest"
	"github.com/skep-io/skep/controlplane/client"
	"github.com/skep-io/skep/internal/testwait"
)

var (
	namespacesR = api.MustLookup("namespaces")
	configMapsR = api.MustLookup("configmaps")
)

// TestNamespaceDeletion deletes a namespace holding a few hundred
// ConfigMaps, a Service and a pod no node has taken, as `skep delete ns`
// does: the DELETE answers at once with the namespace Terminating, the
// controllers then delete everything in it and the namespace itself, and a
// namespace made again under the same name holds none of the old objects.
func TestNamespaceDeletion(t *testing.T) {
	s := apiservertest.StartServer(t)
	c := s.Client()
	startManager(t, c, fastConfig("cm-1"))
	ctx := context.Background()

	const configMaps = 300
	mustCreate(t, c, namespacesR, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team"}})
	for i := range configMaps {
		mustCreate(t, c, configMapsR, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: fmt.Sprintf("cm-%03d", i)},
			Data: map[string]string{"i": fmt.Sprint(i)}})
	}
	svc := serviceOf("web")
	svc.Namespace = "team"
	mustCreate(t, c, servicesR, svc)
	mustCreate(t, c, podsR, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "web"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "web:v1"}}}})

	admin, err := client.New(client.Config{Server: s.URL, CAPEM: s.CAPEM, Token: s.AdminToken})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	var answer corev1.Namespace
	if err := admin.Do(ctx, http.MethodDelete, namespacesR.Path("", "team"), nil, &answer); err != nil {
		t.Fatalf("delete namespace team: %v", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("DELETE of a namespace holding %d objects took %s; want it answered at once", configMaps+2, took)
	}
	if answer.DeletionTimestamp == nil || answer.Status.Phase != corev1.NamespaceTerminating {
		t.Fatalf("DELETE answered deletionTimestamp %v, phase %q; want the namespace Terminating", answer.DeletionTimestamp, answer.Status.Phase)
	}

	testwait.For(t, 60*time.Second, 25*time.Millisecond, func() error {
		_, err := c.Get(ctx, namespacesR, "", "team")
		if err == nil {
			return fmt.Errorf("namespace team still there; it holds %s", namespaceContent(t, c, "team"))
		}
		if !apierrors.IsNotFound(err) {
			t.Fatalf("get namespace team: %v", err)
		}
		return nil
	})
	if left := namespaceContent(t, c, "team"); left != "nothing" {
		t.Fatalf("after namespace team was removed, it still holds %s", left)
	}

	mustCreate(t, c, namespacesR, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team"}})
	if left := namespaceContent(t, c, "team"); left != "nothing" {
		t.Fatalf("a new namespace team holds %s; want none of the old one's objects", left)
	}
}

// namespaceContent says what objects the namespace holds, by resource.
func namespaceContent(t *testing.T, c client.Interface, ns string) string {
	t.Helper()
	var out string
	for _, r := range api.All() {
		if !r.Namespaced {
			continue
		}
		objs, _, err := c.List(context.Background(), r, ns, client.ListOptions{})
		if err != nil {
			t.Fatalf("list %s in %s: %v", r.Name, ns, err)
		}
		if len(objs) > 0 {
			out += fmt.Sprintf("%d %s ", len(objs), r.Name)
		}
	}
	if out == "" {
		return "nothing"
	}
	return out
}
