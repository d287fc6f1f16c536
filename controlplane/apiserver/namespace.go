package apiserver

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skep-io/skep/controlplane/api"
	"github.com/skep-io/skep/controlplane/store"
)

// Namespace deletion works as in Kubernetes: a DELETE only marks the
// namespace terminating (deletionTimestamp, status.phase Terminating) and
// leaves the "kubernetes" finalizer in spec.finalizers; the namespace
// controller deletes what the namespace holds and then removes the
// finalizer with an update, and that update, finding no finalizer left,
// removes the namespace. Every step is in the store, so a controller that
// restarts (or another server's, after a failover) carries on where the
// last one stopped, and no request has to outlive the work.

// immortalNamespaces are the namespaces the cluster itself runs in; no one,
// the admin included, may delete them (Kubernetes' NamespaceLifecycle
// admission refuses the same three).
var immortalNamespaces = []string{metav1.NamespaceDefault, metav1.NamespaceSystem, corev1.NamespaceNodeLease}

// checkNamespaceDelete refuses the delete of an immortal namespace with
// Kubernetes' 403.
func checkNamespaceDelete(r *api.Resource, name string) error {
	if r.Kind == "Namespace" && slices.Contains(immortalNamespaces, name) {
		return apierrors.NewForbidden(gr(r), name, errors.New("this namespace may not be deleted"))
	}
	return nil
}

// checkNamespaceActive refuses new content in a terminating namespace: the
// namespace controller may already have listed what it holds, and an
// object created now would outlive it. Updates and deletes of what is
// there stay allowed; the controller and the agents need them.
func checkNamespaceActive(r *api.Resource, obj api.Object, ns api.Object) error {
	if ns.GetDeletionTimestamp() == nil {
		return nil
	}
	msg := fmt.Sprintf("unable to create new content in namespace %s because it is being terminated", ns.GetName())
	err := apierrors.NewForbidden(gr(r), obj.GetName(), errors.New(msg))
	err.ErrStatus.Details.Causes = append(err.ErrStatus.Details.Causes, metav1.StatusCause{
		Type: corev1.NamespaceTerminatingCause, Message: msg, Field: "metadata.namespace",
	})
	return err
}

// terminateNamespace answers the DELETE of a namespace: it marks it
// terminating (adding the "kubernetes" finalizer to a namespace stored
// before namespaces had one) and answers at once. A namespace already
// terminating is answered as it is.
func (g *registry) terminateNamespace(ctx context.Context, r *api.Resource, cur store.Entry, ns *corev1.Namespace, dryRun bool) (api.Object, error) {
	if ns.DeletionTimestamp != nil {
		return ns, nil
	}
	now := metav1.NewTime(g.now())
	ns.DeletionTimestamp = &now
	ns.Status.Phase = corev1.NamespaceTerminating
	if !slices.Contains(ns.Spec.Finalizers, corev1.FinalizerKubernetes) {
		ns.Spec.Finalizers = append(ns.Spec.Finalizers, corev1.FinalizerKubernetes)
	}
	if dryRun {
		return ns, nil
	}
	data, err := encode(ns)
	if err != nil {
		return nil, apierrors.NewInternalError(err)
	}
	rev, err := g.store.Update(ctx, cur.Key, data, cur.Revision)
	if err != nil {
		return nil, g.storeErr(r, ns.Name, err)
	}
	ns.ResourceVersion = strconv.FormatUint(rev, 10)
	return ns, nil
}

// namespaceFinalized reports whether obj is a terminating namespace that
// nothing holds back any more: the store may let it go.
func namespaceFinalized(obj api.Object) bool {
	ns, ok := obj.(*corev1.Namespace)
	return ok && ns.DeletionTimestamp != nil && len(ns.Spec.Finalizers) == 0 && len(ns.Finalizers) == 0
}

// prepareNamespaceUpdate decides spec.finalizers on an update, as
// Kubernetes' namespace strategy does: an active namespace keeps the ones
// it has (a `skep apply` of its manifest must not drop the "kubernetes"
// finalizer), and a terminating one may only lose some. The "kubernetes"
// finalizer is lost only once the namespace holds nothing, whoever asks:
// that is what keeps objects from outliving their namespace.
func (g *registry) prepareNamespaceUpdate(ctx context.Context, obj, old api.Object) error {
	ns, ok := obj.(*corev1.Namespace)
	if !ok {
		return nil
	}
	oldNS := old.(*corev1.Namespace)
	if oldNS.DeletionTimestamp == nil {
		ns.Spec.Finalizers = oldNS.Spec.Finalizers
		return nil
	}
	kept := make([]corev1.FinalizerName, 0, len(oldNS.Spec.Finalizers))
	for _, f := range oldNS.Spec.Finalizers {
		if slices.Contains(ns.Spec.Finalizers, f) {
			kept = append(kept, f)
		}
	}
	ns.Spec.Finalizers = kept
	if slices.Contains(oldNS.Spec.Finalizers, corev1.FinalizerKubernetes) && !slices.Contains(kept, corev1.FinalizerKubernetes) {
		return g.checkNamespaceEmpty(ctx, ns.Name)
	}
	return nil
}

// checkNamespaceEmpty is a 409 naming what the namespace still holds.
func (g *registry) checkNamespaceEmpty(ctx context.Context, ns string) error {
	var left []string
	for _, r := range api.All() {
		if !r.Namespaced {
			continue
		}
		entries, _, err := g.store.List(ctx, r.Name, ns)
		if err != nil {
			return g.storeErr(r, "", err)
		}
		if len(entries) > 0 {
			left = append(left, fmt.Sprintf("%d %s", len(entries), r.Name))
		}
	}
	if len(left) == 0 {
		return nil
	}
	return apierrors.NewConflict(gr(api.MustLookup("namespaces")), ns,
		fmt.Errorf("the %q finalizer is removed only when the namespace is empty; it still holds %s", corev1.FinalizerKubernetes, strings.Join(left, ", ")))
}

// deleteFinalized removes a namespace whose last finalizer an update has
// just removed, instead of storing it.
func (g *registry) deleteFinalized(ctx context.Context, r *api.Resource, k store.Key, obj, old api.Object, rev uint64) (api.Object, error) {
	if err := g.store.Delete(ctx, k, rev); err != nil {
		return nil, g.storeErr(r, obj.GetName(), err)
	}
	g.alloc.release(ctx, r, old)
	g.quota.uncharge(ctx, r, old)
	return obj, nil
}
