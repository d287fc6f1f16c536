package apiserver

import (
	"fmt"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/validation/path"
	"k8s.io/apimachinery/pkg/util/validation"
)

// mayAttempt is authorization on what the URL and the verb say, before
// the server reads the body or the store, as kube-apiserver's authorization
// filter runs before any handler: a credential that may not write a
// resource at all is refused without costing the server a decode or telling
// it whether the object exists. What depends on the objects themselves (is
// this pod bound to this node, is this its own Node's name in the body) is
// checked afterwards by authorize.
func mayAttempt(id Identity, req request) error {
	if id.Admin {
		return nil
	}
	if id.Node == "" {
		return fmt.Errorf("%s may not %s %s", id, req.verb, req.resource.Name)
	}
	switch req.verb {
	case "get", "list", "watch":
		return authorize(id, req) // reads depend on the resource alone
	}
	forbid := func(why string) error {
		return fmt.Errorf("%s may not %s %s %q: %s", id, req.verb, req.resource.Name, req.name, why)
	}
	// The name is on the URL except on create, where it is in the body.
	nameIsOwn := req.name == id.Node || req.verb == "create" && req.name == ""
	switch req.resource.Name {
	case "nodes":
		if nameIsOwn && req.verb != "delete" {
			return nil
		}
		return forbid("an agent writes only its own Node")
	case "leases":
		if req.namespace == "kube-node-lease" && nameIsOwn && req.verb != "delete" {
			return nil
		}
		return forbid("an agent writes only its own Lease in kube-node-lease")
	case "pods":
		if req.verb == "update" && req.status || req.verb == "delete" {
			return nil
		}
		return forbid("an agent writes only the status of its pods, and deletes them when they have terminated")
	}
	return forbid("agents may not write " + req.resource.Name)
}

// checkPathSegments refuses a namespace or name on the URL that no object
// can have, before the store sees it: a namespace is a DNS label, and a
// name a path segment Kubernetes allows (not "." or "..", no "/" or "%").
// What a given resource allows beyond that is validation's business; a
// GET of a name no object can have is simply not found.
func checkPathSegments(t target) error {
	if t.namespace != "" {
		if errs := validation.IsDNS1123Label(t.namespace); len(errs) > 0 {
			return apierrors.NewBadRequest(fmt.Sprintf("namespace %q on the URL is not a valid namespace name: %s", t.namespace, strings.Join(errs, "; ")))
		}
	}
	if t.name != "" {
		if errs := path.IsValidPathSegmentName(t.name); len(errs) > 0 {
			return apierrors.NewBadRequest(fmt.Sprintf("name %q on the URL is not a valid object name: %s", t.name, strings.Join(errs, "; ")))
		}
	}
	return nil
}
