// Package openapi holds the OpenAPI schemas of every type skep's Kubernetes
// API serves, so the generic API server can answer /openapi/v2 and
// /openapi/v3: kubectl reads them for `explain` and to decide whether the
// server validates fields itself.
//
// zz_generated.openapi.go is written by kube-openapi's openapi-gen (a go.mod
// tool, so its version is the k8s.io/kube-openapi the API server links) from
// the doc comments of the k8s.io/api and k8s.io/apimachinery packages listed
// below. It is committed, like bpf2go's output. Regenerate it with
// `make openapi` after changing the list or bumping k8s.io/api. Every
// package holding a type the server serves, or one such a type refers to,
// must be in the list: the generic server refuses to start on a missing
// schema, and openapi_test.go fails first (add new kinds to its list too).
// openapi-gen's API rule report goes to /dev/null: it lists Kubernetes' own
// known exceptions in k8s.io/api, which are not ours to fix.
// boilerplate.go.txt is the header openapi-gen puts above its output: it
// tells staticcheck that the schema of the deprecated v1 Endpoints is there
// on purpose (the API serves Endpoints, as kube-apiserver does).
package openapi

//go:generate go tool openapi-gen --go-header-file boilerplate.go.txt --output-dir . --output-pkg github.com/skep-io/skep/controlplane/kubeapi/openapi --output-file zz_generated.openapi.go --report-filename /dev/null k8s.io/api/core/v1 k8s.io/api/apps/v1 k8s.io/api/discovery/v1 k8s.io/api/coordination/v1 k8s.io/api/autoscaling/v1 k8s.io/api/events/v1 k8s.io/api/authorization/v1 k8s.io/api/authentication/v1 k8s.io/api/policy/v1 k8s.io/apimachinery/pkg/apis/meta/v1 k8s.io/apimachinery/pkg/runtime k8s.io/apimachinery/pkg/version k8s.io/apimachinery/pkg/api/resource k8s.io/apimachinery/pkg/util/intstr
