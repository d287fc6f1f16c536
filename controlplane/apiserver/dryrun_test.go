package apiserver_test

import (
	"encoding/json"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"net/http"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skep-io/skep/controlplane/api"
	"github.com/skep-io/skep/controlplane/apiserver/apiservertest"
	"github.com/skep-io/skep/controlplane/client"
)

// TestDeleteDryRunKeepsTheObject sends deletes as kubectl's
// `delete --dry-run=server` sends them (dryRun in the DeleteOptions body)
// and as other clients do (dryRun=All in the query): each is answered as a
// delete would be, and the object, a bound pod and a namespace with its
// contents among them, is still there, unchanged, afterwards.
func TestDeleteDryRunKeepsTheObject(t *testing.T) {
	s := apiservertest.StartServer(t)
	admin := httpClient(t, s, s.AdminToken)
	ctx := t.Context()
	namespaces := api.MustLookup("namespaces")
	configmaps := api.MustLookup("configmaps")
	if _, err := admin.Create(ctx, namespaces, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team"}}); err != nil {
		t.Fatal(err)
	}
	cm, err := admin.Create(ctx, configmaps, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "settings"}, Data: map[string]string{"k": "v"}})
	if err != nil {
		t.Fatal(err)
	}
	pod, err := admin.Create(ctx, pods, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "web"},
		Spec: corev1.PodSpec{NodeName: "node-1", Containers: []corev1.Container{{Name: "c", Image: "skep/echo:latest"}}}})
	if err != nil {
		t.Fatal(err)
	}
	kubectlBody := `{"kind":"DeleteOptions","apiVersion":"v1","propagationPolicy":"Background","dryRun":["All"]}`
	cases := []struct {
		name, path, query, body string
	}{
		{"configmap, dryRun in the body (kubectl)", configmaps.Path("team", "settings"), "", kubectlBody},
		{"configmap, dryRun in the query", configmaps.Path("team", "settings"), "?dryRun=All", ""},
		{"bound pod, dryRun in the body (kubectl)", pods.Path("team", "web"), "", kubectlBody},
		{"bound pod, no grace, dryRun in the query", pods.Path("team", "web"), "?dryRun=All&gracePeriodSeconds=0", ""},
		{"namespace, dryRun in the body (kubectl)", namespaces.Path("", "team"), "", kubectlBody},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var answer map[string]any
			if err := admin.Do(ctx, http.MethodDelete, c.path+c.query, rawJSON(c.body), &answer); err != nil {
				t.Fatalf("dry-run delete: %v; want it answered as a delete", err)
			}
			got, err := admin.Get(ctx, configmaps, "team", "settings")
			if err != nil || got.GetResourceVersion() != cm.GetResourceVersion() {
				t.Fatalf("configmap after a dry-run delete: %v, resourceVersion %v; want it unchanged at %s", err, got, cm.GetResourceVersion())
			}
			p, err := admin.Get(ctx, pods, "team", "web")
			if err != nil || p.GetResourceVersion() != pod.GetResourceVersion() || p.GetDeletionTimestamp() != nil {
				t.Fatalf("pod after a dry-run delete: %v %v; want it unchanged and not terminating", p, err)
			}
			if _, err := admin.Get(ctx, namespaces, "", "team"); err != nil {
				t.Fatalf("namespace after a dry-run delete: %v", err)
			}
		})
	}

	// A dryRun value Kubernetes does not define is refused, not taken as
	// a real delete.
	err = admin.Do(ctx, http.MethodDelete, configmaps.Path("team", "settings")+"?dryRun=Some", nil, nil)
	if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), `dryRun: Unsupported value: ["Some"]`) {
		t.Fatalf("delete with dryRun=Some: %v; want a 422 naming the value, as Kubernetes answers", err)
	}
	if _, err := admin.Get(ctx, configmaps, "team", "settings"); err != nil {
		t.Fatalf("configmap after a refused delete: %v", err)
	}

	// The client's DryRun option does the same.
	if err := admin.Delete(ctx, configmaps, "team", "settings", client.DeleteOptions{DryRun: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Get(ctx, configmaps, "team", "settings"); err != nil {
		t.Fatalf("configmap after client.DeleteOptions{DryRun: true}: %v", err)
	}
	// And a real delete still deletes.
	if err := admin.Delete(ctx, configmaps, "team", "settings", client.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Get(ctx, configmaps, "team", "settings"); err == nil {
		t.Fatal("configmap still there after a real delete")
	}
}

// rawJSON is a request body sent as written ("" sends none).
func rawJSON(s string) any {
	if s == "" {
		return nil
	}
	return json.RawMessage(s)
}
