package apiserver

import (
	"context"
	"fmt"
	"strings"

	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metainternalversion "k8s.io/apimachinery/pkg/apis/meta/internalversion"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	genericrequest "k8s.io/apiserver/pkg/endpoints/request"
	genericregistry "k8s.io/apiserver/pkg/registry/generic/registry"
	"k8s.io/apiserver/pkg/registry/rest"

	"github.com/skep-io/skep/controlplane/api"
	"github.com/skep-io/skep/controlplane/client"
	"github.com/skep-io/skep/controlplane/controllers/gc"
)

// resourceREST serves one resource to the generic API server's handlers.
// Reads (get, list, watch) are the generic registry's, through the watch
// cache over the store, which gives clients Kubernetes' list and watch
// semantics. Writes go through skep's registry, which owns defaulting,
// validation, allocation, quota, namespace lifecycle and graceful pod
// deletion; the handlers in front of it decode, patch (all four kinds,
// server-side apply included), and keep managedFields.
type resourceREST struct {
	*genericregistry.Store
	s *Server
	r *api.Resource
}

var (
	_ rest.StandardStorage    = (*resourceREST)(nil)
	_ rest.ShortNamesProvider = (*resourceREST)(nil)
	_ rest.CategoriesProvider = (*resourceREST)(nil)
)

func (rr *resourceREST) ShortNames() []string { return rr.r.ShortNames }

// Categories puts workloads and services in `kubectl get all`, as
// Kubernetes does.
func (rr *resourceREST) Categories() []string {
	switch rr.r.Name {
	case "pods", "services", "replicationcontrollers", "deployments", "replicasets":
		return []string{"all"}
	}
	return nil
}

func (rr *resourceREST) forbidden(name string, err error) error {
	return apierrors.NewForbidden(rr.r.GroupResource(), name, err)
}

// Create admits and stores a new object.
func (rr *resourceREST) Create(ctx context.Context, obj runtime.Object, createValidation rest.ValidateObjectFunc, options *metav1.CreateOptions) (runtime.Object, error) {
	o, ok := obj.(api.Object)
	if !ok {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("not a %s: %T", rr.r.Kind, obj))
	}
	id := identityFrom(ctx)
	if err := authorize(id, request{verb: "create", resource: rr.r, namespace: o.GetNamespace(), name: o.GetName(), new: o}); err != nil {
		return nil, rr.forbidden(o.GetName(), err)
	}
	if createValidation != nil {
		if err := createValidation(ctx, obj); err != nil {
			return nil, err
		}
	}
	dryRun := len(options.DryRun) > 0
	out, err := rr.s.reg.create(ctx, rr.r, o, dryRun)
	if err != nil {
		return nil, err
	}
	if !dryRun {
		rr.s.log.Info("created", "resource", rr.r.Name, "object", out.GetNamespace()+"/"+out.GetName(), "by", id.String())
		if rr.r.Name == "nodes" {
			rr.s.auth.nodeCreated(ctx, out.GetName())
		}
	}
	return out, nil
}

// Update replaces an object: a PUT, or a patch the handler applies to the
// object read here. A write that loses a compare-and-set race is tried
// again on the new object, and a resourceVersion the client sent is a
// precondition, as in Kubernetes' registry.
func (rr *resourceREST) Update(ctx context.Context, name string, objInfo rest.UpdatedObjectInfo, createValidation rest.ValidateObjectFunc, updateValidation rest.ValidateObjectUpdateFunc, forceAllowCreate bool, options *metav1.UpdateOptions) (runtime.Object, bool, error) {
	return rr.update(ctx, name, objInfo, createValidation, updateValidation, forceAllowCreate, len(options.DryRun) > 0, false)
}

func (rr *resourceREST) update(ctx context.Context, name string, objInfo rest.UpdatedObjectInfo, createValidation rest.ValidateObjectFunc, updateValidation rest.ValidateObjectUpdateFunc, forceAllowCreate, dryRun, status bool) (runtime.Object, bool, error) {
	ns := genericrequest.NamespaceValue(ctx)
	id := identityFrom(ctx)
	for {
		old, err := rr.s.reg.get(ctx, rr.r, ns, name)
		if apierrors.IsNotFound(err) && forceAllowCreate && !status {
			return rr.createOnUpdate(ctx, objInfo, createValidation, dryRun)
		}
		if err != nil {
			return nil, false, err
		}
		if err := checkPreconditions(rr.r, name, objInfo.Preconditions(), old); err != nil {
			return nil, false, err
		}
		next, err := objInfo.UpdatedObject(ctx, old.DeepCopyObject())
		if err != nil {
			return nil, false, err
		}
		obj, ok := next.(api.Object)
		if !ok {
			return nil, false, apierrors.NewBadRequest(fmt.Sprintf("not a %s: %T", rr.r.Kind, next))
		}
		switch rv := obj.GetResourceVersion(); rv {
		case "":
			obj.SetResourceVersion(old.GetResourceVersion())
		case old.GetResourceVersion():
		default:
			return nil, false, apierrors.NewConflict(rr.r.GroupResource(), name, fmt.Errorf("the object has been modified; please apply your changes to the latest version and try again"))
		}
		if err := authorize(id, request{verb: "update", resource: rr.r, namespace: ns, name: name, status: status, old: old, new: obj}); err != nil {
			return nil, false, rr.forbidden(name, err)
		}
		if updateValidation != nil {
			if err := updateValidation(ctx, obj, old); err != nil {
				return nil, false, err
			}
		}
		if apiequality.Semantic.DeepEqual(obj, old) {
			// Nothing changes (a patch already applied, an apply of
			// the same fields): no write, no new resourceVersion, and
			// kubectl says "(no change)", as with Kubernetes.
			return old, false, nil
		}
		out, err := rr.s.reg.update(ctx, rr.r, obj, status, dryRun)
		if apierrors.IsConflict(err) && rr.changedSince(ctx, old) {
			// Lost a race between the read above and the write: read
			// again, and the resourceVersion check above decides
			// whether the client's object is now stale.
			continue
		}
		if err != nil {
			return nil, false, err
		}
		return out, false, nil
	}
}

// changedSince says whether the object was written since old was read: a
// conflict is then a lost race, not the registry refusing the write (a
// namespace that still holds objects, say).
func (rr *resourceREST) changedSince(ctx context.Context, old api.Object) bool {
	cur, err := rr.s.reg.get(ctx, rr.r, old.GetNamespace(), old.GetName())
	return err == nil && ctx.Err() == nil && cur.GetResourceVersion() != old.GetResourceVersion()
}

// createOnUpdate is server-side apply of an object that does not exist
// yet: the patch applied to an empty object is created.
func (rr *resourceREST) createOnUpdate(ctx context.Context, objInfo rest.UpdatedObjectInfo, createValidation rest.ValidateObjectFunc, dryRun bool) (runtime.Object, bool, error) {
	next, err := objInfo.UpdatedObject(ctx, rr.r.New())
	if err != nil {
		return nil, false, err
	}
	o, ok := next.(api.Object)
	if !ok {
		return nil, false, apierrors.NewBadRequest(fmt.Sprintf("not a %s: %T", rr.r.Kind, next))
	}
	o.SetResourceVersion("")
	opts := &metav1.CreateOptions{}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	out, err := rr.Create(ctx, o, createValidation, opts)
	return out, err == nil, err
}

func checkPreconditions(r *api.Resource, name string, pre *metav1.Preconditions, old api.Object) error {
	if pre == nil {
		return nil
	}
	if pre.UID != nil && *pre.UID != old.GetUID() {
		return apierrors.NewConflict(r.GroupResource(), name, preconditionMismatch("UID", *pre.UID, old.GetUID()))
	}
	if pre.ResourceVersion != nil && *pre.ResourceVersion != old.GetResourceVersion() {
		return apierrors.NewConflict(r.GroupResource(), name, preconditionMismatch("ResourceVersion", *pre.ResourceVersion, old.GetResourceVersion()))
	}
	return nil
}

// preconditionMismatch is kube-apiserver's message for a precondition an
// object fails (k8s.io/apiserver's storage.Preconditions.Check), word for
// word, since clients match it.
func preconditionMismatch(field string, want, got any) error {
	//lint:ignore ST1005 kube-apiserver's wording, capital included
	return fmt.Errorf("Precondition failed: %s in precondition: %v, %s in object meta: %v", field, want, field, got)
}

// Delete deletes one object, as skep's registry does: a bound pod and a
// namespace are first marked terminating.
func (rr *resourceREST) Delete(ctx context.Context, name string, deleteValidation rest.ValidateObjectFunc, options *metav1.DeleteOptions) (runtime.Object, bool, error) {
	ns := genericrequest.NamespaceValue(ctx)
	id := identityFrom(ctx)
	old, err := rr.s.reg.get(ctx, rr.r, ns, name)
	if err != nil {
		return nil, false, err
	}
	if err := authorize(id, request{verb: "delete", resource: rr.r, namespace: ns, name: name, old: old}); err != nil {
		return nil, false, rr.forbidden(name, err)
	}
	opts := deleteOptionsOf(options)
	if id.Node != "" {
		// A node was authorized for the pod it read (bound to it): the
		// delete must not reach another of that name created since,
		// bound elsewhere. Its own precondition still holds.
		if opts.UID != "" && opts.UID != old.GetUID() {
			return nil, false, apierrors.NewConflict(rr.r.GroupResource(), name, preconditionMismatch("UID", opts.UID, old.GetUID()))
		}
		opts.UID = old.GetUID()
	}
	if deleteValidation != nil {
		if err := deleteValidation(ctx, old); err != nil {
			return nil, false, err
		}
	}
	if orphans(opts) && hasDependents(rr.r) {
		// kubectl delete --cascade=orphan: the dependents lose their
		// owner reference and stay, then the owner goes.
		if opts.DryRun {
			return old, true, nil
		}
		if err := gc.DeleteOrphaning(ctx, rr.s.Client(), rr.r, ns, name); err != nil {
			return nil, false, err
		}
		rr.s.log.Info("deleted, keeping its dependents", "resource", rr.r.Name, "object", strings.TrimPrefix(ns+"/"+name, "/"), "by", id.String())
		return old, true, nil
	}
	out, err := rr.s.reg.delete(ctx, rr.r, ns, name, opts)
	if err != nil {
		return nil, false, err
	}
	if !opts.DryRun {
		rr.s.log.Info("deleted", "resource", rr.r.Name, "object", strings.TrimPrefix(ns+"/"+name, "/"), "by", id.String())
	}
	// A pod or namespace marked terminating is still there.
	return out, out.GetDeletionTimestamp() == nil, nil
}

func orphans(opts client.DeleteOptions) bool {
	return opts.PropagationPolicy != nil && *opts.PropagationPolicy == metav1.DeletePropagationOrphan
}

// hasDependents lists the kinds that own other objects (Deployments own
// ReplicaSets, which own pods), which orphaning concerns.
func hasDependents(r *api.Resource) bool {
	switch r.Kind {
	case "Deployment", "ReplicaSet", "ReplicationController":
		return true
	}
	return false
}

func deleteOptionsOf(o *metav1.DeleteOptions) client.DeleteOptions {
	var opts client.DeleteOptions
	if o == nil {
		return opts
	}
	opts.GracePeriodSeconds = o.GracePeriodSeconds
	opts.PropagationPolicy = o.PropagationPolicy
	//lint:ignore SA1019 kubectl before 1.11 and some clients still send orphanDependents
	if orphan := o.OrphanDependents; o.PropagationPolicy == nil && orphan != nil {
		p := metav1.DeletePropagationBackground
		if *orphan {
			p = metav1.DeletePropagationOrphan
		}
		opts.PropagationPolicy = &p
	}
	if o.Preconditions != nil {
		if o.Preconditions.ResourceVersion != nil {
			opts.ResourceVersion = *o.Preconditions.ResourceVersion
		}
		if o.Preconditions.UID != nil {
			opts.UID = *o.Preconditions.UID
		}
	}
	opts.DryRun = len(o.DryRun) > 0
	return opts
}

// DeleteCollection deletes what a list with the same options returns, one
// object at a time through Delete, so each gets its checks.
func (rr *resourceREST) DeleteCollection(ctx context.Context, deleteValidation rest.ValidateObjectFunc, options *metav1.DeleteOptions, listOptions *metainternalversion.ListOptions) (runtime.Object, error) {
	list, err := rr.Store.List(ctx, listOptions)
	if err != nil {
		return nil, err
	}
	items, err := meta.ExtractList(list)
	if err != nil {
		return nil, err
	}
	deleted := make([]runtime.Object, 0, len(items))
	for _, item := range items {
		o, err := meta.Accessor(item)
		if err != nil {
			return nil, err
		}
		out, _, err := rr.Delete(genericrequest.WithNamespace(ctx, o.GetNamespace()), o.GetName(), deleteValidation, options.DeepCopy())
		if apierrors.IsNotFound(err) {
			continue // gone meanwhile: what was asked for
		}
		if err != nil {
			return nil, err
		}
		deleted = append(deleted, out)
	}
	if err := meta.SetList(list, deleted); err != nil {
		return nil, err
	}
	return list, nil
}

// statusREST is the /status subresource: writes change only the status.
type statusREST struct{ main *resourceREST }

var _ rest.Patcher = (*statusREST)(nil)

func (s *statusREST) New() runtime.Object { return s.main.New() }
func (s *statusREST) Destroy()            {} // the main resource owns the storage

func (s *statusREST) Get(ctx context.Context, name string, options *metav1.GetOptions) (runtime.Object, error) {
	return s.main.Get(ctx, name, options)
}

func (s *statusREST) Update(ctx context.Context, name string, objInfo rest.UpdatedObjectInfo, createValidation rest.ValidateObjectFunc, updateValidation rest.ValidateObjectUpdateFunc, _ bool, options *metav1.UpdateOptions) (runtime.Object, bool, error) {
	return s.main.update(ctx, name, objInfo, createValidation, updateValidation, false, len(options.DryRun) > 0, true)
}

func (s *statusREST) ConvertToTable(ctx context.Context, object runtime.Object, tableOptions runtime.Object) (*metav1.Table, error) {
	return s.main.ConvertToTable(ctx, object, tableOptions)
}
