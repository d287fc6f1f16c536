package openapi

import (
	"k8s.io/apimachinery/pkg/runtime"
	openapinamer "k8s.io/apiserver/pkg/endpoints/openapi"
	genericapiserver "k8s.io/apiserver/pkg/server"
	openapicommon "k8s.io/kube-openapi/pkg/common"
)

// title is what /openapi/v2 and /openapi/v3 say the API is; the generic
// server fills in the version.
const title = "skep"

// Definitions returns the schema of every generated type, keyed by its
// OpenAPI model name (io.k8s.api.core.v1.Pod). It is an
// openapicommon.GetOpenAPIDefinitions, what the generic server's configs take.
func Definitions(ref openapicommon.ReferenceCallback) map[string]openapicommon.OpenAPIDefinition {
	return GetOpenAPIDefinitions(ref)
}

// Configs returns the OpenAPI v2 and v3 configs for genericapiserver.Config's
// OpenAPIConfig and OpenAPIV3Config. The scheme is the one the server
// registers its kinds in: the namer tags each kind's schema with
// x-kubernetes-group-version-kind, which is how kubectl finds the schema of
// a kind for `explain` and field validation.
func Configs(scheme *runtime.Scheme) (*openapicommon.Config, *openapicommon.OpenAPIV3Config) {
	namer := openapinamer.NewDefinitionNamer(scheme)
	v2 := genericapiserver.DefaultOpenAPIConfig(Definitions, namer)
	v2.Info.Title = title
	v3 := genericapiserver.DefaultOpenAPIV3Config(Definitions, namer)
	v3.Info.Title = title
	return v2, v3
}
