package apiserver

import (
	"fmt"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"

	"github.com/skep-io/skep/controlplane/api"
)

// newScheme registers every served kind under its version and, with the
// same Go type, as the group's internal version. The generic API
// server's handlers convert what they decode to the internal version and
// back; skep has no internal types (its objects are k8s.io/api's v1
// types throughout), so that conversion must be the identity, and it is
// when both versions name one type.
func newScheme() (*runtime.Scheme, serializer.CodecFactory, error) {
	scheme := runtime.NewScheme()
	// k8s.io/api registers each group's types, lists and options (and no
	// defaulting: skep's own defaults run in the registry).
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme, appsv1.AddToScheme, discoveryv1.AddToScheme, coordinationv1.AddToScheme,
		autoscalingv1.AddToScheme, authorizationv1.AddToScheme, authenticationv1.AddToScheme, policyv1.AddToScheme,
		addEventsV1,             // the core Events' second view (eventsv1.go)
		addPodOptionConversions, // the pod subresources' query options (podoptions.go)
	} {
		if err := add(scheme); err != nil {
			return nil, serializer.CodecFactory{}, err
		}
	}
	for _, r := range api.All() {
		gvk := schema.GroupVersionKind{Group: r.Group, Version: r.Version, Kind: r.Kind}
		list, err := scheme.New(gvk.GroupVersion().WithKind(r.Kind + "List"))
		if err != nil {
			return nil, serializer.CodecFactory{}, fmt.Errorf("%s: %w", r.Name, err)
		}
		scheme.AddKnownTypes(schema.GroupVersion{Group: r.Group, Version: runtime.APIVersionInternal}, r.New(), list)
		if err := scheme.AddFieldLabelConversionFunc(gvk, fieldLabelConversion(r)); err != nil {
			return nil, serializer.CodecFactory{}, err
		}
	}
	// The kinds served beside the stored ones: the scale subresource's and
	// the access reviews'.
	scheme.AddKnownTypes(schema.GroupVersion{Group: autoscalingv1.GroupName, Version: runtime.APIVersionInternal}, &autoscalingv1.Scale{})
	scheme.AddKnownTypes(schema.GroupVersion{Group: policyv1.GroupName, Version: runtime.APIVersionInternal}, &policyv1.Eviction{})
	scheme.AddKnownTypes(schema.GroupVersion{Version: runtime.APIVersionInternal}, &corev1.Binding{})
	scheme.AddKnownTypes(schema.GroupVersion{Group: authorizationv1.GroupName, Version: runtime.APIVersionInternal}, &authorizationv1.SelfSubjectAccessReview{}, &authorizationv1.SelfSubjectRulesReview{})
	scheme.AddKnownTypes(schema.GroupVersion{Group: authenticationv1.GroupName, Version: runtime.APIVersionInternal}, &authenticationv1.SelfSubjectReview{})
	unversioned := schema.GroupVersion{Version: "v1"}
	scheme.AddUnversionedTypes(unversioned, &metav1.Status{}, &metav1.APIVersions{}, &metav1.APIGroupList{}, &metav1.APIGroup{}, &metav1.APIResourceList{})
	return scheme, serializer.NewCodecFactory(scheme), nil
}

// fieldLabelConversion accepts the field selectors a resource supports
// (registry.go's fieldValue) and refuses the others as Kubernetes does,
// naming the field.
func fieldLabelConversion(r *api.Resource) runtime.FieldLabelConversionFunc {
	return func(label, value string) (string, string, error) {
		if _, ok := fieldValue(r, nil, label); !ok {
			return "", "", fmt.Errorf("field label not supported: %s (%s support %s)", label, r.Name, strings.Join(selectableFieldNames(r), ", "))
		}
		return label, value, nil
	}
}

// newListFunc makes empty lists of a resource's List type.
func newListFunc(scheme *runtime.Scheme, r *api.Resource) func() runtime.Object {
	gvk := schema.GroupVersionKind{Group: r.Group, Version: r.Version, Kind: r.Kind + "List"}
	return func() runtime.Object {
		l, err := scheme.New(gvk)
		if err != nil {
			panic(err) // newScheme registered every list
		}
		return l
	}
}
