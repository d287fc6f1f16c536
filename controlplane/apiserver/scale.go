package apiserver

import (
	"context"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
	genericrequest "k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/apiserver/pkg/registry/rest"

	"github.com/skep-io/skep/controlplane/api"
)

// scaleREST is the scale subresource (autoscaling/v1 Scale) of
// Deployments, ReplicaSets and ReplicationControllers: what `kubectl
// scale` and autoscalers read and write instead of the whole object.
type scaleREST struct{ main *resourceREST }

var (
	_ rest.Patcher                  = (*scaleREST)(nil)
	_ rest.GroupVersionKindProvider = (*scaleREST)(nil)
)

// hasScale lists the resources with a scale subresource.
func hasScale(r *api.Resource) bool {
	switch r.Kind {
	case "Deployment", "ReplicaSet", "ReplicationController":
		return true
	}
	return false
}

func (s *scaleREST) New() runtime.Object { return &autoscalingv1.Scale{} }
func (s *scaleREST) Destroy()            {}

func (s *scaleREST) GroupVersionKind(schema.GroupVersion) schema.GroupVersionKind {
	return autoscalingv1.SchemeGroupVersion.WithKind("Scale")
}

func (s *scaleREST) Get(ctx context.Context, name string, _ *metav1.GetOptions) (runtime.Object, error) {
	obj, err := s.main.s.reg.get(ctx, s.main.r, genericrequest.NamespaceValue(ctx), name)
	if err != nil {
		return nil, err
	}
	return scaleOf(obj)
}

// Update sets the replicas of the object from the Scale the handler made
// (a PUT, or kubectl scale's patch of the Scale read here).
func (s *scaleREST) Update(ctx context.Context, name string, objInfo rest.UpdatedObjectInfo, createValidation rest.ValidateObjectFunc, updateValidation rest.ValidateObjectUpdateFunc, _ bool, options *metav1.UpdateOptions) (runtime.Object, bool, error) {
	scaled := scaledObject{objInfo}
	out, _, err := s.main.update(ctx, name, scaled, nil, nil, false, len(options.DryRun) > 0, false)
	if err != nil {
		return nil, false, err
	}
	sc, err := scaleOf(out.(api.Object))
	return sc, false, err
}

// scaledObject turns the handler's change of a Scale into the change of
// the object it stands for.
type scaledObject struct{ scale rest.UpdatedObjectInfo }

func (u scaledObject) Preconditions() *metav1.Preconditions { return u.scale.Preconditions() }

func (u scaledObject) UpdatedObject(ctx context.Context, old runtime.Object) (runtime.Object, error) {
	obj := old.(api.Object)
	cur, err := scaleOf(obj)
	if err != nil {
		return nil, err
	}
	next, err := u.scale.UpdatedObject(ctx, cur)
	if err != nil {
		return nil, err
	}
	sc := next.(*autoscalingv1.Scale)
	if sc.Spec.Replicas < 0 {
		return nil, apierrors.NewInvalid(schema.GroupKind{Group: "autoscaling", Kind: "Scale"}, obj.GetName(), field.ErrorList{
			field.Invalid(field.NewPath("spec", "replicas"), sc.Spec.Replicas, "must be greater than or equal to 0")})
	}
	if sc.ResourceVersion != "" && sc.ResourceVersion != obj.GetResourceVersion() {
		return nil, apierrors.NewConflict(schema.GroupResource{Resource: "scale"}, obj.GetName(), fmt.Errorf("the object has been modified; please apply your changes to the latest version and try again"))
	}
	out := obj.DeepCopyObject().(api.Object)
	replicas := sc.Spec.Replicas
	switch o := out.(type) {
	case *appsv1.Deployment:
		o.Spec.Replicas = &replicas
	case *appsv1.ReplicaSet:
		o.Spec.Replicas = &replicas
	case *corev1.ReplicationController:
		o.Spec.Replicas = &replicas
	}
	return out, nil
}

// scaleOf is the Scale of an object: its desired and current replicas and
// the selector of its pods, as a string (autoscaling/v1's form).
func scaleOf(obj api.Object) (*autoscalingv1.Scale, error) {
	var spec, status int32
	var selector string
	switch o := obj.(type) {
	case *appsv1.Deployment:
		spec, status = deref(o.Spec.Replicas), o.Status.Replicas
		selector = metav1.FormatLabelSelector(o.Spec.Selector)
	case *appsv1.ReplicaSet:
		spec, status = deref(o.Spec.Replicas), o.Status.Replicas
		selector = metav1.FormatLabelSelector(o.Spec.Selector)
	case *corev1.ReplicationController:
		spec, status = deref(o.Spec.Replicas), o.Status.Replicas
		selector = labels.SelectorFromSet(o.Spec.Selector).String()
	default:
		return nil, apierrors.NewBadRequest(fmt.Sprintf("%T has no scale subresource", obj))
	}
	return &autoscalingv1.Scale{
		ObjectMeta: metav1.ObjectMeta{Name: obj.GetName(), Namespace: obj.GetNamespace(), UID: obj.GetUID(),
			ResourceVersion: obj.GetResourceVersion(), CreationTimestamp: obj.GetCreationTimestamp()},
		Spec:   autoscalingv1.ScaleSpec{Replicas: spec},
		Status: autoscalingv1.ScaleStatus{Replicas: status, Selector: selector},
	}, nil
}

func deref(p *int32) int32 {
	if p == nil {
		return 1 // Kubernetes' default replicas
	}
	return *p
}
