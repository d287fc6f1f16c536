package apiserver

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skep-io/skep/controlplane/api"
	"github.com/skep-io/skep/controlplane/client"
	"github.com/skep-io/skep/controlplane/store"
	"github.com/skep-io/skep/controlplane/store/storetest"
)

// TestDeleteWhileStatusChanges: a delete without a resourceVersion
// precondition succeeds when the pod's status changes between the
// server's read and its write (an agent writing status at that moment), as
// kubectl delete does; a delete naming a stale resourceVersion is a 409.
func TestDeleteWhileStatusChanges(t *testing.T) {
	s, _ := bootstrapped(t)
	ctx := t.Context()
	pods := api.MustLookup("pods")
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "busy"},
		Spec: corev1.PodSpec{NodeName: "node-1", Containers: []corev1.Container{{Name: "c", Image: "skep/echo:latest"}}}}
	created, err := s.reg.create(ctx, pods, pod, false)
	if err != nil {
		t.Fatal(err)
	}

	// The delete reads the clock between its read and its write: the
	// agent's status write lands right there, twice.
	var interpose atomic.Int32
	interpose.Store(2)
	s.reg.now = func() time.Time {
		if interpose.Add(-1) >= 0 {
			cur, err := s.reg.get(ctx, pods, "default", "busy")
			if err != nil {
				t.Error(err)
			} else {
				p := cur.(*corev1.Pod)
				p.Status.Message = "written by the agent"
				if _, err := s.reg.update(ctx, pods, p, true, false); err != nil {
					t.Error(err)
				}
			}
		}
		return time.Now()
	}
	if _, err := s.reg.delete(ctx, pods, "default", "busy", client.DeleteOptions{}); err != nil {
		t.Fatalf("delete while the pod's status changed under it: %v; want it marked terminating", err)
	}
	got, err := s.reg.get(ctx, pods, "default", "busy")
	if err != nil || got.(*corev1.Pod).DeletionTimestamp == nil || got.(*corev1.Pod).Status.Message != "written by the agent" {
		t.Fatalf("pod after delete: %+v %v; want it terminating with the agent's status kept", got, err)
	}
	_, err = s.reg.delete(ctx, pods, "default", "busy", client.DeleteOptions{ResourceVersion: created.GetResourceVersion()})
	if !apierrors.IsConflict(err) {
		t.Fatalf("delete with a stale resourceVersion: %v; want 409 Conflict", err)
	}
}

// bootstrapped is an API server, without HTTP, on a store of its own,
// with the namespaces a cluster starts with.
func bootstrapped(t *testing.T) (*Server, *store.Store) {
	t.Helper()
	st := storetest.Open(t)
	s, err := New(st, Config{AdminToken: "a", JoinToken: "j"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Bootstrap(t.Context()); err != nil {
		t.Fatal(err)
	}
	return s, st
}

// TestDeleteUIDPrecondition: a delete that names the UID of the object it
// meant does not remove another of the same name created since. The API
// server sets it for an agent's pod deletes, which it authorized on the
// pod it read (bound to that node).
func TestDeleteUIDPrecondition(t *testing.T) {
	s, _ := bootstrapped(t)
	ctx := t.Context()
	pods := api.MustLookup("pods")
	newPod := func() *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web-0"},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "skep/echo:latest"}}}}
	}
	first, err := s.reg.create(ctx, pods, newPod(), false)
	if err != nil {
		t.Fatal(err)
	}
	zero := int64(0)
	if _, err := s.reg.delete(ctx, pods, "default", "web-0", client.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		t.Fatal(err)
	}
	second, err := s.reg.create(ctx, pods, newPod(), false)
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.reg.delete(ctx, pods, "default", "web-0", client.DeleteOptions{UID: first.GetUID(), GracePeriodSeconds: &zero})
	if !apierrors.IsConflict(err) || !strings.Contains(err.Error(), "UID in precondition") {
		t.Fatalf("delete naming the first pod's UID: %v; want 409", err)
	}
	if got, err := s.reg.get(ctx, pods, "default", "web-0"); err != nil || got.GetUID() != second.GetUID() {
		t.Fatalf("the second pod after that: %v %v; want it there", got, err)
	}
	if _, err := s.reg.delete(ctx, pods, "default", "web-0", client.DeleteOptions{UID: second.GetUID(), GracePeriodSeconds: &zero}); err != nil {
		t.Fatalf("delete naming the second pod's UID: %v", err)
	}
}
