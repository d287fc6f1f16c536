package openapi

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	eventsv1 "k8s.io/api/events/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/managedfields"
	"k8s.io/apimachinery/pkg/version"
	"k8s.io/kube-openapi/pkg/builder"
	"k8s.io/kube-openapi/pkg/builder3"
	openapiutil "k8s.io/kube-openapi/pkg/util"
	"k8s.io/kube-openapi/pkg/validation/spec"

	"github.com/skep-io/skep/controlplane/api"
)

// served is one type the API server will put in its OpenAPI documents: a
// kind (with the group/version/kind kubectl looks its schema up by) or, with
// an empty gvk, a type served only as a body, such as /version's.
type served struct {
	obj any
	gvk schema.GroupVersionKind
}

// servedTypes lists every kind of api.All() and its list, the kinds the
// Kubernetes API adds around them (Secrets, Events, subresources, reviews)
// and the meta.k8s.io types every server answers with.
func servedTypes(t *testing.T, scheme *runtime.Scheme) []served {
	t.Helper()
	var out []served
	for _, r := range api.All() {
		gv := schema.GroupVersion{Group: r.Group, Version: r.Version}
		out = append(out, served{r.New(), gv.WithKind(r.Kind)})
		list, err := scheme.New(gv.WithKind(r.Kind + "List"))
		if err != nil {
			t.Fatalf("the scheme has no list for %s: %v", r.Kind, err)
		}
		out = append(out, served{list, gv.WithKind(r.Kind + "List")})
	}
	return append(out,
		served{&corev1.Secret{}, corev1.SchemeGroupVersion.WithKind("Secret")},
		served{&corev1.ServiceAccount{}, corev1.SchemeGroupVersion.WithKind("ServiceAccount")},
		served{&corev1.Event{}, corev1.SchemeGroupVersion.WithKind("Event")},
		served{&corev1.Binding{}, corev1.SchemeGroupVersion.WithKind("Binding")},
		served{&eventsv1.Event{}, eventsv1.SchemeGroupVersion.WithKind("Event")},
		served{&autoscalingv1.Scale{}, autoscalingv1.SchemeGroupVersion.WithKind("Scale")},
		served{&authorizationv1.SelfSubjectAccessReview{}, authorizationv1.SchemeGroupVersion.WithKind("SelfSubjectAccessReview")},
		served{&authenticationv1.SelfSubjectReview{}, authenticationv1.SchemeGroupVersion.WithKind("SelfSubjectReview")},
		served{&policyv1.Eviction{}, policyv1.SchemeGroupVersion.WithKind("Eviction")},
		served{&metav1.Table{}, metav1.SchemeGroupVersion.WithKind("Table")},
		served{&metav1.PartialObjectMetadataList{}, metav1.SchemeGroupVersion.WithKind("PartialObjectMetadataList")},
		// Every group registers these under its own version, and the
		// unversioned ones (Status, discovery) under plain "v1".
		served{&metav1.Status{}, corev1.SchemeGroupVersion.WithKind("Status")},
		served{&metav1.APIResourceList{}, corev1.SchemeGroupVersion.WithKind("APIResourceList")},
		served{&metav1.WatchEvent{}, corev1.SchemeGroupVersion.WithKind("WatchEvent")},
		served{&metav1.DeleteOptions{}, policyv1.SchemeGroupVersion.WithKind("DeleteOptions")},
		served{&metav1.List{}, schema.GroupVersionKind{}},
		served{&version.Info{}, schema.GroupVersionKind{}},
	)
}

// testScheme registers the groups the server will serve, as its own scheme
// will, so the namer can tag each kind's schema with its group/version/kind.
func testScheme(t *testing.T) *runtime.Scheme {
	t.Helper()
	scheme := runtime.NewScheme()
	groups := runtime.NewSchemeBuilder(
		corev1.AddToScheme, appsv1.AddToScheme, discoveryv1.AddToScheme,
		coordinationv1.AddToScheme, autoscalingv1.AddToScheme, eventsv1.AddToScheme,
		authorizationv1.AddToScheme, authenticationv1.AddToScheme, policyv1.AddToScheme,
		metav1.AddMetaToScheme,
	)
	if err := groups.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	return scheme
}

// definition is the part of a served schema kubectl reads.
type definition struct {
	Description string `json:"description"`
	Properties  map[string]struct {
		Description string `json:"description"`
	} `json:"properties"`
	GVKs []schema.GroupVersionKind `json:"x-kubernetes-group-version-kind"`
}

// asServed turns built schemas into what a client reads from the wire.
func asServed(t *testing.T, schemas any) map[string]definition {
	t.Helper()
	b, err := json.Marshal(schemas)
	if err != nil {
		t.Fatal(err)
	}
	var defs map[string]definition
	if err := json.Unmarshal(b, &defs); err != nil {
		t.Fatal(err)
	}
	return defs
}

// TestServedTypesHaveSchemas builds the v2 and v3 definitions for every
// served type as the generic server does (by canonical type name, following
// every reference), so a type whose package is missing from the generation
// fails here as it would fail the server's start.
func TestServedTypesHaveSchemas(t *testing.T) {
	scheme := testScheme(t)
	types := servedTypes(t, scheme)
	var names []string
	for _, s := range types {
		names = append(names, openapiutil.GetCanonicalTypeName(s.obj))
	}
	v2, v3 := Configs(scheme)

	swagger, err := builder.BuildOpenAPIDefinitionsForResources(v2, names...)
	if err != nil {
		t.Fatalf("build /openapi/v2 definitions: %v", err)
	}
	components, err := builder3.BuildOpenAPIDefinitionsForResources(v3, names...)
	if err != nil {
		t.Fatalf("build /openapi/v3 schemas: %v", err)
	}
	for doc, defs := range map[string]map[string]definition{
		"v2": asServed(t, swagger.Definitions),
		"v3": asServed(t, components),
	} {
		for i, s := range types {
			def, ok := defs[names[i]]
			if !ok {
				t.Errorf("%s: no schema for %T (%s)", doc, s.obj, names[i])
				continue
			}
			if def.Description == "" {
				t.Errorf("%s: schema %s has no description", doc, names[i])
			}
			if !s.gvk.Empty() && !slices.Contains(def.GVKs, s.gvk) {
				t.Errorf("%s: schema %s is tagged %v, want it to include %v (kubectl finds schemas by it)", doc, names[i], def.GVKs, s.gvk)
			}
		}
		// What `kubectl explain configmap.data` prints.
		cm := defs[openapiutil.GetCanonicalTypeName(&corev1.ConfigMap{})]
		if got := cm.Properties["data"].Description; !strings.Contains(got, "Data contains the configuration data") {
			t.Errorf("%s: ConfigMap.data description is %q, want the field's doc comment", doc, got)
		}
	}
}

// TestEveryReferenceIsGenerated walks the generated definitions: a type that
// refers to one outside the generated packages (a package left off the
// generate line in doc.go) would make the server fail when it serves that
// type.
func TestEveryReferenceIsGenerated(t *testing.T) {
	defs := Definitions(func(name string) spec.Ref { return spec.MustCreateRef("#/definitions/" + name) })
	for name, def := range defs {
		for _, dep := range def.Dependencies {
			if _, ok := defs[dep]; !ok {
				t.Errorf("%s refers to %s, which is not generated: add its package to the go:generate line in doc.go", name, dep)
			}
		}
	}
}

// TestServerSideApplyTypes builds the managed-fields type converter from the
// v3 schemas, as the generic server does for server-side apply, and converts
// an object through it: the schema must know the kind and accept its fields.
func TestServerSideApplyTypes(t *testing.T) {
	scheme := testScheme(t)
	var names []string
	for _, s := range servedTypes(t, scheme) {
		names = append(names, openapiutil.GetCanonicalTypeName(s.obj))
	}
	_, v3 := Configs(scheme)
	components, err := builder3.BuildOpenAPIDefinitionsForResources(v3, names...)
	if err != nil {
		t.Fatalf("build /openapi/v3 schemas: %v", err)
	}
	tc, err := managedfields.NewTypeConverter(components, false)
	if err != nil {
		t.Fatalf("type converter from the v3 schemas: %v", err)
	}
	deploy := &appsv1.Deployment{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default"},
		Spec: appsv1.DeploymentSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
			Containers: []corev1.Container{{Name: "web", Image: "nginx", Ports: []corev1.ContainerPort{{ContainerPort: 80}}}},
		}}},
	}
	typed, err := tc.ObjectToTyped(deploy)
	if err != nil {
		t.Fatalf("Deployment through the type converter: %v", err)
	}
	set, err := typed.ToFieldSet()
	if err != nil {
		t.Fatalf("field set of the Deployment: %v", err)
	}
	// Containers are a list keyed by name: apply merges them by name.
	if want := `.spec.template.spec.containers[name="web"].image`; !strings.Contains(set.String(), want) {
		t.Errorf("Deployment's fields are %s, want %s among them", set, want)
	}
}
