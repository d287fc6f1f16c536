package apiserver_test

import (
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skep-io/skep/controlplane/api"
	"github.com/skep-io/skep/controlplane/apiserver/apiservertest"
	"github.com/skep-io/skep/controlplane/store"
)

// TestObjectSizeLimit: objects up to Kubernetes' 1.5 MiB are stored; a
// larger one, created or updated, is a 413 naming the limit, not a 500
// from NATS, and leaves nothing behind.
func TestObjectSizeLimit(t *testing.T) {
	s := apiservertest.StartServer(t)
	admin := httpClient(t, s, s.AdminToken)
	ctx := t.Context()
	configmaps := api.MustLookup("configmaps")
	cm := func(name string, size int) *corev1.ConfigMap {
		return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
			Data: map[string]string{"blob": strings.Repeat("x", size)}}
	}
	const mib = 1 << 20
	limit := strconv.Itoa(store.MaxObjectBytes)

	created, err := admin.Create(ctx, configmaps, cm("fits", 14*mib/10))
	if err != nil {
		t.Fatalf("create a 1.4 MiB ConfigMap: %v", err)
	}
	got, err := admin.Get(ctx, configmaps, "default", "fits")
	if err != nil || len(got.(*corev1.ConfigMap).Data["blob"]) != 14*mib/10 {
		t.Fatalf("get the 1.4 MiB ConfigMap: %v", err)
	}

	_, err = admin.Create(ctx, configmaps, cm("too-big", 2*mib))
	if !apierrors.IsRequestEntityTooLargeError(err) || !strings.Contains(err.Error(), limit) {
		t.Fatalf("create a 2 MiB ConfigMap: got %v; want a 413 naming the limit of %s bytes", err, limit)
	}
	if _, err := admin.Get(ctx, configmaps, "default", "too-big"); !apierrors.IsNotFound(err) {
		t.Fatalf("get the refused ConfigMap: got %v; want NotFound", err)
	}

	grown := cm("fits", 2*mib)
	grown.ResourceVersion = created.GetResourceVersion()
	_, err = admin.Update(ctx, configmaps, grown)
	if !apierrors.IsRequestEntityTooLargeError(err) || !strings.Contains(err.Error(), limit) {
		t.Fatalf("update the ConfigMap to 2 MiB: got %v; want a 413 naming the limit of %s bytes", err, limit)
	}
	after, err := admin.Get(ctx, configmaps, "default", "fits")
	if err != nil {
		t.Fatal(err)
	}
	if rv := after.GetResourceVersion(); rv != created.GetResourceVersion() {
		t.Fatalf("after a refused update: resourceVersion %s; want %s unchanged", rv, created.GetResourceVersion())
	}
}
