// Package api holds what the control plane and the agent agree on about
// objects: which resources exist and where they live, strict decoding,
// Kubernetes defaulting and validation. The object types themselves are
// Kubernetes' own (k8s.io/api), so users' YAML means what it means there.
package api

import (
	"fmt"
	"sort"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Object is any stored object: Kubernetes metadata plus a kind.
type Object interface {
	metav1.Object
	runtime.Object
}

// Resource describes one kind of object the API serves.
type Resource struct {
	Group      string // "" for the core group
	Version    string
	Kind       string
	Name       string   // plural, lowercase: the path segment and the store prefix
	ShortNames []string // as kubectl knows them
	Namespaced bool
	New        func() Object
	// HasStatus means the /status subresource exists: the main resource
	// ignores status changes and /status ignores everything else.
	HasStatus bool
}

// APIVersion is the apiVersion field for objects of the resource.
func (r *Resource) APIVersion() string {
	if r.Group == "" {
		return r.Version
	}
	return r.Group + "/" + r.Version
}

// Path is the URL path of a collection (ns "" for all namespaces) or, with a
// name, of one object.
func (r *Resource) Path(ns, name string) string {
	var b strings.Builder
	if r.Group == "" {
		b.WriteString("/api/" + r.Version)
	} else {
		b.WriteString("/apis/" + r.Group + "/" + r.Version)
	}
	if r.Namespaced && ns != "" {
		b.WriteString("/namespaces/" + ns)
	}
	b.WriteString("/" + r.Name)
	if name != "" {
		b.WriteString("/" + name)
	}
	return b.String()
}

var resources = []*Resource{
	{Version: "v1", Kind: "Namespace", Name: "namespaces", ShortNames: []string{"ns"}, New: func() Object { return &corev1.Namespace{} }, HasStatus: true},
	{Version: "v1", Kind: "Node", Name: "nodes", ShortNames: []string{"no"}, New: func() Object { return &corev1.Node{} }, HasStatus: true},
	{Version: "v1", Kind: "Pod", Name: "pods", ShortNames: []string{"po"}, Namespaced: true, New: func() Object { return &corev1.Pod{} }, HasStatus: true},
	{Version: "v1", Kind: "Service", Name: "services", ShortNames: []string{"svc"}, Namespaced: true, New: func() Object { return &corev1.Service{} }, HasStatus: true},
	//lint:ignore SA1019 v1 Endpoints are still served, for old clients and selectorless Services
	{Version: "v1", Kind: "Endpoints", Name: "endpoints", ShortNames: []string{"ep"}, Namespaced: true, New: func() Object { return &corev1.Endpoints{} }},
	{Version: "v1", Kind: "ReplicationController", Name: "replicationcontrollers", ShortNames: []string{"rc"}, Namespaced: true, New: func() Object { return &corev1.ReplicationController{} }, HasStatus: true},
	{Version: "v1", Kind: "ConfigMap", Name: "configmaps", ShortNames: []string{"cm"}, Namespaced: true, New: func() Object { return &corev1.ConfigMap{} }},
	{Version: "v1", Kind: "Secret", Name: "secrets", Namespaced: true, New: func() Object { return &corev1.Secret{} }},
	{Version: "v1", Kind: "ServiceAccount", Name: "serviceaccounts", ShortNames: []string{"sa"}, Namespaced: true, New: func() Object { return &corev1.ServiceAccount{} }},
	{Version: "v1", Kind: "Event", Name: "events", ShortNames: []string{"ev"}, Namespaced: true, New: func() Object { return &corev1.Event{} }},
	{Version: "v1", Kind: "ResourceQuota", Name: "resourcequotas", ShortNames: []string{"quota"}, Namespaced: true, New: func() Object { return &corev1.ResourceQuota{} }, HasStatus: true},
	{Group: "apps", Version: "v1", Kind: "Deployment", Name: "deployments", ShortNames: []string{"deploy"}, Namespaced: true, New: func() Object { return &appsv1.Deployment{} }, HasStatus: true},
	{Group: "apps", Version: "v1", Kind: "ReplicaSet", Name: "replicasets", ShortNames: []string{"rs"}, Namespaced: true, New: func() Object { return &appsv1.ReplicaSet{} }, HasStatus: true},
	{Group: "discovery.k8s.io", Version: "v1", Kind: "EndpointSlice", Name: "endpointslices", Namespaced: true, New: func() Object { return &discoveryv1.EndpointSlice{} }},
	{Group: "coordination.k8s.io", Version: "v1", Kind: "Lease", Name: "leases", Namespaced: true, New: func() Object { return &coordinationv1.Lease{} }},
}

// Lookup finds a resource by plural name, singular kind (any case) or short
// name, as `kubectl get` accepts them.
func Lookup(name string) (*Resource, error) {
	n := strings.ToLower(name)
	for _, r := range resources {
		if n == r.Name || n == strings.ToLower(r.Kind) {
			return r, nil
		}
		for _, s := range r.ShortNames {
			if n == s {
				return r, nil
			}
		}
	}
	return nil, fmt.Errorf("the server doesn't have a resource type %q (known: %s)", name, strings.Join(Names(), ", "))
}

// ForKind finds the resource of an apiVersion and kind.
func ForKind(apiVersion, kind string) (*Resource, error) {
	for _, r := range resources {
		if r.Kind == kind {
			if r.APIVersion() != apiVersion {
				return nil, fmt.Errorf("kind %s is served as apiVersion %q, not %q", kind, r.APIVersion(), apiVersion)
			}
			return r, nil
		}
	}
	return nil, fmt.Errorf("no kind %q is served (known: %s)", kind, strings.Join(Kinds(), ", "))
}

// ForPath finds the resource of a group, version and plural name from a URL.
func ForPath(group, version, name string) (*Resource, bool) {
	for _, r := range resources {
		if r.Group == group && r.Version == version && r.Name == name {
			return r, true
		}
	}
	return nil, false
}

// Names lists the plural names of every resource.
func Names() []string {
	var out []string
	for _, r := range resources {
		out = append(out, r.Name)
	}
	sort.Strings(out)
	return out
}

// Kinds lists every kind.
func Kinds() []string {
	var out []string
	for _, r := range resources {
		out = append(out, r.Kind)
	}
	sort.Strings(out)
	return out
}

// All returns every resource, in registration order.
func All() []*Resource { return resources }

// SetTypeMeta fills apiVersion and kind, which Go values do not carry.
func SetTypeMeta(r *Resource, obj Object) {
	obj.GetObjectKind().SetGroupVersionKind(schemaGVK(r))
}

// MustLookup is Lookup for names fixed in the code.
func MustLookup(name string) *Resource {
	r, err := Lookup(name)
	if err != nil {
		panic(err)
	}
	return r
}

// GroupResource names the resource in Kubernetes errors.
func (r *Resource) GroupResource() schema.GroupResource {
	return schema.GroupResource{Group: r.Group, Resource: r.Name}
}
