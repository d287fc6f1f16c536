package apiserver

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/apiserver/pkg/registry/rest"

	"github.com/skep-io/skep/controlplane/api"
)

// bindingREST is pods/binding: a scheduler binds a pod to a node by
// creating a Binding, as Kubernetes' schedulers do. It makes the write
// skep's own scheduler makes: spec.nodeName set on an unbound pod, which
// also marks it scheduled.
type bindingREST struct{ pods *resourceREST }

var (
	_ rest.NamedCreater             = (*bindingREST)(nil)
	_ rest.GroupVersionKindProvider = (*bindingREST)(nil)
	_ rest.NamedCreater             = (*evictionREST)(nil)
	_ rest.GroupVersionKindProvider = (*evictionREST)(nil)
)

func (*bindingREST) New() runtime.Object { return &corev1.Binding{} }
func (*bindingREST) Destroy()            {}
func (*bindingREST) GroupVersionKind(schema.GroupVersion) schema.GroupVersionKind {
	return corev1.SchemeGroupVersion.WithKind("Binding")
}

func (b *bindingREST) Create(ctx context.Context, name string, obj runtime.Object, _ rest.ValidateObjectFunc, options *metav1.CreateOptions) (runtime.Object, error) {
	binding, ok := obj.(*corev1.Binding)
	if !ok {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("not a Binding: %T", obj))
	}
	if binding.Name != "" && binding.Name != name {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("the Binding's name (%s) is not the pod's (%s)", binding.Name, name))
	}
	if binding.Target.Kind != "" && binding.Target.Kind != "Node" || binding.Target.Name == "" {
		return nil, apierrors.NewInvalid(schema.GroupKind{Kind: "Binding"}, name, field.ErrorList{
			field.Invalid(field.NewPath("target"), binding.Target, "must name a Node")})
	}
	bind := updateFunc(func(old api.Object) (api.Object, error) {
		pod := old.DeepCopyObject().(*corev1.Pod)
		if pod.DeletionTimestamp != nil {
			return nil, apierrors.NewConflict(corev1.Resource("pods/binding"), name, fmt.Errorf("pod %s is being deleted, cannot be assigned to a host", name))
		}
		if pod.Spec.NodeName != "" {
			return nil, apierrors.NewConflict(corev1.Resource("pods/binding"), name, fmt.Errorf("pod %s is already assigned to node %q", name, pod.Spec.NodeName))
		}
		if binding.UID != "" && binding.UID != pod.UID {
			return nil, apierrors.NewConflict(corev1.Resource("pods/binding"), name, fmt.Errorf("the Binding's uid %s is not the pod's", binding.UID))
		}
		pod.Spec.NodeName = binding.Target.Name
		return pod, nil
	})
	if _, _, err := b.pods.update(ctx, name, bind, nil, nil, false, len(options.DryRun) > 0, false); err != nil {
		return nil, err
	}
	return &metav1.Status{Status: metav1.StatusSuccess, Code: 201}, nil
}

// evictionREST is pods/eviction (policy/v1), what `kubectl drain` uses.
// skep has no PodDisruptionBudgets, so an eviction is allowed at once and
// is the pod's graceful delete, as Kubernetes answers one without a budget.
type evictionREST struct{ pods *resourceREST }

func (*evictionREST) New() runtime.Object { return &policyv1.Eviction{} }
func (*evictionREST) Destroy()            {}
func (*evictionREST) GroupVersionKind(schema.GroupVersion) schema.GroupVersionKind {
	return policyv1.SchemeGroupVersion.WithKind("Eviction")
}

func (e *evictionREST) Create(ctx context.Context, name string, obj runtime.Object, _ rest.ValidateObjectFunc, options *metav1.CreateOptions) (runtime.Object, error) {
	ev, ok := obj.(*policyv1.Eviction)
	if !ok {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("not an Eviction: %T", obj))
	}
	if ev.Name != "" && ev.Name != name {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("the Eviction's name (%s) is not the pod's (%s)", ev.Name, name))
	}
	opts := ev.DeleteOptions
	if opts == nil {
		opts = &metav1.DeleteOptions{}
	}
	if len(options.DryRun) > 0 {
		opts.DryRun = options.DryRun
	}
	if _, _, err := e.pods.Delete(ctx, name, nil, opts); err != nil {
		return nil, err
	}
	return &metav1.Status{Status: metav1.StatusSuccess, Code: 201}, nil
}

// updateFunc is a rest.UpdatedObjectInfo made of a function of the
// stored object.
type updateFunc func(old api.Object) (api.Object, error)

func (f updateFunc) Preconditions() *metav1.Preconditions { return nil }
func (f updateFunc) UpdatedObject(_ context.Context, old runtime.Object) (runtime.Object, error) {
	return f(old.(api.Object))
}
