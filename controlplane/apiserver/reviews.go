package apiserver

import (
	"context"
	"fmt"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	genericrequest "k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/apiserver/pkg/registry/rest"
)

// selfSubjectAccessReviews answers `kubectl auth can-i`: may the caller do
// this? The answer is skep's authorizer's, asked with the caller's
// identity, exactly as a real request would be asked.
type selfSubjectAccessReviews struct{ authz authorizer.Authorizer }

var (
	_ rest.Creater                  = (*selfSubjectAccessReviews)(nil)
	_ rest.Scoper                   = (*selfSubjectAccessReviews)(nil)
	_ rest.SingularNameProvider     = (*selfSubjectAccessReviews)(nil)
	_ rest.Creater                  = (*selfSubjectReviews)(nil)
	_ rest.SingularNameProvider     = (*selfSubjectReviews)(nil)
	_ rest.GroupVersionKindProvider = (*selfSubjectReviews)(nil)
)

func (*selfSubjectAccessReviews) New() runtime.Object {
	return &authorizationv1.SelfSubjectAccessReview{}
}
func (*selfSubjectAccessReviews) Destroy() {}
func (*selfSubjectAccessReviews) NamespaceScoped() bool {
	return false
}
func (*selfSubjectAccessReviews) GetSingularName() string { return "selfsubjectaccessreview" }

func (s *selfSubjectAccessReviews) Create(ctx context.Context, obj runtime.Object, _ rest.ValidateObjectFunc, _ *metav1.CreateOptions) (runtime.Object, error) {
	review, ok := obj.(*authorizationv1.SelfSubjectAccessReview)
	if !ok {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("not a SelfSubjectAccessReview: %T", obj))
	}
	u, ok := genericrequest.UserFrom(ctx)
	if !ok {
		return nil, apierrors.NewBadRequest("no user in the request")
	}
	attrs := authorizer.AttributesRecord{User: u}
	switch ra, na := review.Spec.ResourceAttributes, review.Spec.NonResourceAttributes; {
	case ra != nil && na == nil:
		attrs.Verb, attrs.Namespace, attrs.Name = ra.Verb, ra.Namespace, ra.Name
		attrs.APIGroup, attrs.APIVersion, attrs.Resource, attrs.Subresource = ra.Group, ra.Version, ra.Resource, ra.Subresource
		attrs.ResourceRequest = true
		if attrs.APIVersion == "" || attrs.APIVersion == "*" {
			attrs.APIVersion = "v1" // every group skep serves is at v1
		}
	case na != nil && ra == nil:
		attrs.Verb, attrs.Path = na.Verb, na.Path
	default:
		return nil, apierrors.NewBadRequest("spec: exactly one of resourceAttributes and nonResourceAttributes must be set")
	}
	decision, reason, err := s.authz.Authorize(ctx, attrs)
	review.Status = authorizationv1.SubjectAccessReviewStatus{
		Allowed: decision == authorizer.DecisionAllow,
		Denied:  decision == authorizer.DecisionDeny,
		Reason:  reason,
	}
	if err != nil {
		review.Status.EvaluationError = err.Error()
	}
	return review, nil
}

// selfSubjectReviews answers `kubectl auth whoami`.
type selfSubjectReviews struct{}

func (*selfSubjectReviews) New() runtime.Object     { return &authenticationv1.SelfSubjectReview{} }
func (*selfSubjectReviews) Destroy()                {}
func (*selfSubjectReviews) NamespaceScoped() bool   { return false }
func (*selfSubjectReviews) GetSingularName() string { return "selfsubjectreview" }
func (*selfSubjectReviews) GroupVersionKind(_ schema.GroupVersion) schema.GroupVersionKind {
	return authenticationv1.SchemeGroupVersion.WithKind("SelfSubjectReview")
}

func (*selfSubjectReviews) Create(ctx context.Context, obj runtime.Object, _ rest.ValidateObjectFunc, _ *metav1.CreateOptions) (runtime.Object, error) {
	review, ok := obj.(*authenticationv1.SelfSubjectReview)
	if !ok {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("not a SelfSubjectReview: %T", obj))
	}
	u, ok := genericrequest.UserFrom(ctx)
	if !ok {
		return nil, apierrors.NewBadRequest("no user in the request")
	}
	review.Status.UserInfo = authenticationv1.UserInfo{Username: u.GetName(), UID: u.GetUID(), Groups: u.GetGroups()}
	return review, nil
}

// selfSubjectRulesReviews answers `kubectl auth can-i --list`: what the
// caller may do in a namespace. The admin may do everything; an agent
// gets the rules of the node authorizer, marked incomplete because that
// authorizer also looks at the objects (a node writes only its own Node
// and the status of pods bound to it).
type selfSubjectRulesReviews struct{}

func (*selfSubjectRulesReviews) New() runtime.Object {
	return &authorizationv1.SelfSubjectRulesReview{}
}
func (*selfSubjectRulesReviews) Destroy()                {}
func (*selfSubjectRulesReviews) NamespaceScoped() bool   { return false }
func (*selfSubjectRulesReviews) GetSingularName() string { return "selfsubjectrulesreview" }

func (*selfSubjectRulesReviews) Create(ctx context.Context, obj runtime.Object, _ rest.ValidateObjectFunc, _ *metav1.CreateOptions) (runtime.Object, error) {
	review, ok := obj.(*authorizationv1.SelfSubjectRulesReview)
	if !ok {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("not a SelfSubjectRulesReview: %T", obj))
	}
	id := identityFrom(ctx)
	all := []string{"*"}
	switch {
	case id.Admin:
		review.Status.ResourceRules = []authorizationv1.ResourceRule{{Verbs: all, APIGroups: all, Resources: all}}
		review.Status.NonResourceRules = []authorizationv1.NonResourceRule{{Verbs: all, NonResourceURLs: all}}
	case id.Node != "":
		review.Status.ResourceRules = []authorizationv1.ResourceRule{
			{Verbs: []string{"get", "list", "watch"}, APIGroups: []string{"", "discovery.k8s.io", "coordination.k8s.io"},
				Resources: []string{"pods", "services", "endpoints", "endpointslices", "nodes", "namespaces", "leases"}},
			{Verbs: []string{"create", "update", "patch"}, APIGroups: []string{""}, Resources: []string{"nodes", "nodes/status", "events"}},
			{Verbs: []string{"create", "update", "patch"}, APIGroups: []string{"events.k8s.io"}, Resources: []string{"events"}},
			{Verbs: []string{"update", "patch"}, APIGroups: []string{""}, Resources: []string{"pods/status"}},
			{Verbs: []string{"delete"}, APIGroups: []string{""}, Resources: []string{"pods"}},
			{Verbs: []string{"create", "update", "patch"}, APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}},
		}
		review.Status.Incomplete = true
		review.Status.EvaluationError = "the node authorizer also checks each object: a node writes only its own Node and Lease, and the status of pods bound to it"
	}
	review.Status.NonResourceRules = append(review.Status.NonResourceRules,
		authorizationv1.NonResourceRule{Verbs: []string{"get"}, NonResourceURLs: []string{"/api", "/api/*", "/apis", "/apis/*", "/version", "/openapi/*"}})
	return review, nil
}
