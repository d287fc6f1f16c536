package apiserver_test

import (
	"net/http"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skep-io/skep/controlplane/api"
	"github.com/skep-io/skep/controlplane/apiserver/apiservertest"
	"github.com/skep-io/skep/controlplane/client"
)

var (
	namespacesR = api.MustLookup("namespaces")
	configmapsR = api.MustLookup("configmaps")
)

// TestImmortalNamespacesMayNotBeDeleted: the namespaces the cluster runs
// in are refused with Kubernetes' 403 to everyone, the admin over HTTPS and
// the in-process client included, dry run or not, and stay as they were.
func TestImmortalNamespacesMayNotBeDeleted(t *testing.T) {
	s := apiservertest.StartServer(t)
	admin := httpClient(t, s, s.AdminToken)
	local := s.Client()
	ctx := t.Context()
	for _, name := range []string{"default", "kube-system", "kube-node-lease"} {
		deletes := []struct {
			how string
			del func() error
		}{
			{"admin", func() error { return admin.Delete(ctx, namespacesR, "", name, client.DeleteOptions{}) }},
			{"admin dry run", func() error { return admin.Delete(ctx, namespacesR, "", name, client.DeleteOptions{DryRun: true}) }},
			{"in-process", func() error { return local.Delete(ctx, namespacesR, "", name, client.DeleteOptions{}) }},
		}
		for _, d := range deletes {
			err := d.del()
			want := `namespaces "` + name + `" is forbidden: this namespace may not be deleted`
			if !apierrors.IsForbidden(err) || err.Error() != want {
				t.Errorf("%s: delete namespace %s: %v; want 403 %q", d.how, name, err, want)
			}
		}
		got, err := admin.Get(ctx, namespacesR, "", name)
		if err != nil {
			t.Fatalf("namespace %s after the refused deletes: %v", name, err)
		}
		if ns := got.(*corev1.Namespace); ns.DeletionTimestamp != nil || ns.Status.Phase != corev1.NamespaceActive {
			t.Errorf("namespace %s after the refused deletes: deletionTimestamp %v, phase %q; want untouched and Active", name, ns.DeletionTimestamp, ns.Status.Phase)
		}
	}
}

// TestNamespaceTerminates walks a namespace through its deletion as the
// API server sees it, the namespace controller played by hand: the DELETE
// answers at once with the namespace Terminating and its content still
// there; nothing new may be created in it, what is there may still be
// changed and deleted; the "kubernetes" finalizer goes only once it is
// empty, and with it the namespace; a namespace of the same name made
// afterwards starts empty.
func TestNamespaceTerminates(t *testing.T) {
	s := apiservertest.StartServer(t)
	admin := httpClient(t, s, s.AdminToken)
	ctx := t.Context()

	created, err := admin.Create(ctx, namespacesR, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team"}})
	if err != nil {
		t.Fatal(err)
	}
	if f := created.(*corev1.Namespace).Spec.Finalizers; !slices.Equal(f, []corev1.FinalizerName{corev1.FinalizerKubernetes}) {
		t.Fatalf("new namespace spec.finalizers %v; want [kubernetes]", f)
	}
	// An update that leaves spec.finalizers out (a `skep apply` of the
	// manifest) keeps the finalizer.
	upd := created.DeepCopyObject().(*corev1.Namespace)
	upd.Spec.Finalizers, upd.Labels = nil, map[string]string{"team": "a"}
	if got, err := admin.Update(ctx, namespacesR, upd); err != nil || len(got.(*corev1.Namespace).Spec.Finalizers) != 1 {
		t.Fatalf("update without spec.finalizers: %v %v; want the kubernetes finalizer kept", got, err)
	}
	cm := mustCreateConfigMap(t, admin, "team", "settings")

	var answer corev1.Namespace
	if err := admin.Do(ctx, http.MethodDelete, namespacesR.Path("", "team"), nil, &answer); err != nil {
		t.Fatalf("delete namespace: %v", err)
	}
	if answer.DeletionTimestamp == nil || answer.Status.Phase != corev1.NamespaceTerminating {
		t.Fatalf("DELETE answered deletionTimestamp %v, phase %q; want the namespace Terminating", answer.DeletionTimestamp, answer.Status.Phase)
	}
	if _, err := admin.Get(ctx, configmapsR, "team", "settings"); err != nil {
		t.Fatalf("configmap right after the DELETE: %v; want it left for the namespace controller", err)
	}
	// A second DELETE changes nothing and is no error.
	var again corev1.Namespace
	if err := admin.Do(ctx, http.MethodDelete, namespacesR.Path("", "team"), nil, &again); err != nil {
		t.Fatalf("second delete: %v", err)
	}
	if again.ResourceVersion != answer.ResourceVersion || !again.DeletionTimestamp.Equal(answer.DeletionTimestamp) {
		t.Errorf("second delete answered resourceVersion %s, deletionTimestamp %v; want the first's %s, %v unchanged",
			again.ResourceVersion, again.DeletionTimestamp, answer.ResourceVersion, answer.DeletionTimestamp)
	}

	// No new content, dry run or not.
	for _, dryRun := range []bool{false, true} {
		path := configmapsR.Path("team", "")
		if dryRun {
			path += "?dryRun=All"
		}
		err := admin.Do(ctx, http.MethodPost, path, &corev1.ConfigMap{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
			ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "late"}}, nil)
		want := `configmaps "late" is forbidden: unable to create new content in namespace team because it is being terminated`
		if !apierrors.IsForbidden(err) || err.Error() != want {
			t.Errorf("create in a terminating namespace (dryRun %v): %v; want 403 %q", dryRun, err, want)
		}
		var status apierrors.APIStatus
		if !errorsAs(err, &status) {
			continue
		}
		if d := status.Status().Details; d == nil || len(d.Causes) == 0 || d.Causes[0].Type != corev1.NamespaceTerminatingCause {
			t.Errorf("create in a terminating namespace: details %+v; want a NamespaceTerminating cause", d)
		}
	}
	// What is there may still change.
	cm.Data = map[string]string{"k": "changed"}
	if _, err := admin.Update(ctx, configmapsR, cm); err != nil {
		t.Fatalf("update of a configmap in a terminating namespace: %v", err)
	}

	// The finalizer stays while anything is left.
	ns := getNamespace(t, admin, "team")
	ns.Spec.Finalizers = nil
	_, err = admin.Update(ctx, namespacesR, ns)
	if !apierrors.IsConflict(err) || !strings.Contains(err.Error(), "1 configmaps") {
		t.Fatalf("removing the kubernetes finalizer from a namespace holding a configmap: %v; want 409 naming what is left", err)
	}
	if err := admin.Delete(ctx, configmapsR, "team", "settings", client.DeleteOptions{}); err != nil {
		t.Fatalf("delete of a configmap in a terminating namespace: %v", err)
	}
	ns = getNamespace(t, admin, "team")
	if ns.DeletionTimestamp == nil {
		t.Fatal("namespace no longer terminating after its content was deleted")
	}
	ns.Spec.Finalizers = nil
	if _, err := admin.Update(ctx, namespacesR, ns); err != nil {
		t.Fatalf("removing the kubernetes finalizer from the empty namespace: %v", err)
	}
	if _, err := admin.Get(ctx, namespacesR, "", "team"); !apierrors.IsNotFound(err) {
		t.Fatalf("namespace after its last finalizer was removed: %v; want 404", err)
	}

	if _, err := admin.Create(ctx, namespacesR, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team"}}); err != nil {
		t.Fatal(err)
	}
	left, _, err := admin.List(ctx, configmapsR, "team", client.ListOptions{})
	if err != nil || len(left) != 0 {
		t.Fatalf("configmaps in the new namespace team: %d, %v; want none of the old one's", len(left), err)
	}
}

func mustCreateConfigMap(t *testing.T, c client.Interface, ns, name string) *corev1.ConfigMap {
	t.Helper()
	o, err := c.Create(t.Context(), configmapsR, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Data: map[string]string{"k": "v"}})
	if err != nil {
		t.Fatalf("create configmap %s/%s: %v", ns, name, err)
	}
	return o.(*corev1.ConfigMap)
}

func getNamespace(t *testing.T, c client.Interface, name string) *corev1.Namespace {
	t.Helper()
	o, err := c.Get(t.Context(), namespacesR, "", name)
	if err != nil {
		t.Fatalf("get namespace %s: %v", name, err)
	}
	return o.(*corev1.Namespace)
}
