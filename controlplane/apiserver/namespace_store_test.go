package apiserver

import (
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skep-io/skep/controlplane/api"
	"github.com/skep-io/skep/controlplane/client"
	"github.com/skep-io/skep/controlplane/store"
)

// TestDeleteOfOlderNamespaceAddsTheFinalizer: a namespace stored before
// namespaces had the "kubernetes" finalizer is not removed at once with its
// content left behind: its DELETE adds the finalizer, and it terminates as
// any other.
func TestDeleteOfOlderNamespaceAddsTheFinalizer(t *testing.T) {
	s, st := bootstrapped(t)
	ctx := t.Context()
	namespaces, configmaps := api.MustLookup("namespaces"), api.MustLookup("configmaps")
	old := `{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"legacy","uid":"6f1c0a52-0000-4000-8000-000000000001"},"status":{"phase":"Active"}}`
	if _, err := st.Create(ctx, store.Key{Resource: "namespaces", Name: "legacy"}, []byte(old)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.reg.create(ctx, configmaps, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "legacy", Name: "settings"}}, false); err != nil {
		t.Fatal(err)
	}
	got, err := s.reg.delete(ctx, namespaces, "", "legacy", client.DeleteOptions{})
	if err != nil {
		t.Fatalf("delete namespace legacy: %v", err)
	}
	ns := got.(*corev1.Namespace)
	if ns.DeletionTimestamp == nil || ns.Status.Phase != corev1.NamespaceTerminating || !slices.Contains(ns.Spec.Finalizers, corev1.FinalizerKubernetes) {
		t.Fatalf("older namespace after DELETE: deletionTimestamp %v, phase %q, finalizers %v; want Terminating with the kubernetes finalizer",
			ns.DeletionTimestamp, ns.Status.Phase, ns.Spec.Finalizers)
	}
	if _, err := s.reg.get(ctx, namespaces, "", "legacy"); err != nil {
		t.Fatalf("older namespace after DELETE: %v; want it kept until its content is gone", err)
	}
	if _, err := s.reg.get(ctx, configmaps, "legacy", "settings"); apierrors.IsNotFound(err) {
		t.Fatal("configmap gone with the DELETE's request; want it left to the namespace controller")
	}
}
