package gc

import (
	"context"
	"fmt"
	"slices"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"

	"github.com/skep-io/skep/controlplane/api"
	"github.com/skep-io/skep/controlplane/client"
)

// OrphanFinalizer marks an owner being deleted with --cascade=orphan, as
// Kubernetes names it. Controllers leave an owner carrying it alone: in
// particular they do not adopt back the dependents being orphaned.
const OrphanFinalizer = metav1.FinalizerOrphanDependents

// Orphaning reports whether obj is being deleted with its dependents kept.
func Orphaning(obj metav1.Object) bool {
	return slices.Contains(obj.GetFinalizers(), OrphanFinalizer)
}

// Recheck says whether owner may still adopt: read again from the API,
// not a cache, it exists with the same UID and is neither being deleted
// nor orphaning. A controller's cached copy can predate the orphan
// finalizer, and adopting back a dependent DeleteOrphaning has just
// released would hand it to the garbage collector with its owner (as
// Kubernetes' RecheckDeletionTimestamp guards against).
func Recheck(ctx context.Context, c client.Interface, r *api.Resource, owner metav1.Object) (bool, error) {
	fresh, err := c.Get(ctx, r, owner.GetNamespace(), owner.GetName())
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return fresh.GetUID() == owner.GetUID() && fresh.GetDeletionTimestamp() == nil && !Orphaning(fresh), nil
}

// dependentResources are the kinds that can have a controller owner.
var dependentResources = []string{"replicasets", "pods"}

// DeleteOrphaning deletes an object and keeps its dependents, which is
// what `skep delete --cascade=orphan` does: it marks the owner with the
// orphan finalizer (so controllers stop adopting), removes the owner's
// references from every dependent, then deletes the owner.
func DeleteOrphaning(ctx context.Context, c client.Interface, r *api.Resource, namespace, name string) error {
	obj, err := c.Get(ctx, r, namespace, name)
	if err != nil {
		return fmt.Errorf("get %s %s: %w", r.Kind, name, err)
	}
	if !Orphaning(obj) {
		obj.SetFinalizers(append(obj.GetFinalizers(), OrphanFinalizer))
		if obj, err = c.Update(ctx, r, obj); err != nil {
			return fmt.Errorf("mark %s %s for orphaning: %w", r.Kind, name, err)
		}
	}
	uid := obj.GetUID()
	for _, dr := range dependentResources {
		res := api.MustLookup(dr)
		deps, _, err := c.List(ctx, res, namespace, client.ListOptions{})
		if err != nil {
			return fmt.Errorf("list %s: %w", dr, err)
		}
		for _, d := range deps {
			if err := dropOwner(ctx, c, res, d, uid); err != nil {
				return err
			}
		}
	}
	if err := c.Delete(ctx, r, namespace, name, client.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete %s %s: %w", r.Kind, name, err)
	}
	return nil
}

// dropOwner removes the references to uid from d, retrying on conflicts.
func dropOwner(ctx context.Context, c client.Interface, r *api.Resource, d api.Object, uid types.UID) error {
	ns, name := d.GetNamespace(), d.GetName()
	first := true
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if !first { // d was stale: read it again
			obj, err := c.Get(ctx, r, ns, name)
			if err != nil {
				return err
			}
			d = obj
		}
		first = false
		refs := d.GetOwnerReferences()
		kept := slices.DeleteFunc(slices.Clone(refs), func(ref metav1.OwnerReference) bool { return ref.UID == uid })
		if len(kept) == len(refs) {
			return nil
		}
		d.SetOwnerReferences(kept)
		_, err := c.Update(ctx, r, d)
		return err
	})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("orphan %s %s: %w", r.Kind, name, err)
	}
	return nil
}
