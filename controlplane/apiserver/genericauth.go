package apiserver

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	authn "k8s.io/apiserver/pkg/authentication/authenticator"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	genericrequest "k8s.io/apiserver/pkg/endpoints/request"

	"github.com/skep-io/skep/controlplane/api"
)

// The generic API server knows users (a name and groups); skep's rules
// know Identities. These map one to the other, the way Kubernetes names
// the same parties: the admin is in system:masters, an agent is
// system:node:<name> in system:nodes, and the join token is a bootstrap
// user that may only join (on skep's own path, not through this API).

const (
	adminUser       = "admin"
	nodeUserPrefix  = "system:node:"
	joinUser        = "system:bootstrap:node-join"
	bootstrapGroup  = "system:bootstrappers"
	nodesGroup      = "system:nodes"
	authenticatedGr = user.AllAuthenticated
)

func userOf(id Identity) user.Info {
	switch {
	case id.Admin:
		return &user.DefaultInfo{Name: adminUser, Groups: []string{user.SystemPrivilegedGroup, authenticatedGr}}
	case id.Node != "":
		return &user.DefaultInfo{Name: nodeUserPrefix + id.Node, Groups: []string{nodesGroup, authenticatedGr}}
	case id.Joining:
		return &user.DefaultInfo{Name: joinUser, Groups: []string{bootstrapGroup, authenticatedGr}}
	}
	return &user.DefaultInfo{Name: user.Anonymous, Groups: []string{user.AllUnauthenticated}}
}

// identityOf reads back what userOf made. The generic server's own
// loopback user is in system:masters too, and is the admin.
func identityOf(u user.Info) Identity {
	if u == nil {
		return Identity{}
	}
	groups := u.GetGroups()
	has := func(g string) bool {
		for _, x := range groups {
			if x == g {
				return true
			}
		}
		return false
	}
	switch {
	case has(user.SystemPrivilegedGroup):
		return Identity{Admin: true}
	case has(nodesGroup) && strings.HasPrefix(u.GetName(), nodeUserPrefix):
		return Identity{Node: strings.TrimPrefix(u.GetName(), nodeUserPrefix)}
	case has(bootstrapGroup) && u.GetName() == joinUser:
		return Identity{Joining: true}
	}
	return Identity{}
}

// identityFrom is the identity the generic server authenticated for ctx.
func identityFrom(ctx context.Context) Identity {
	u, _ := genericrequest.UserFrom(ctx)
	return identityOf(u)
}

// requestAuthenticator is skep's bearer-token check as the generic
// server's authenticator.
func (s *Server) requestAuthenticator() authn.Request {
	return authn.RequestFunc(func(r *http.Request) (*authn.Response, bool, error) {
		id, err := s.auth.authenticate(r.Context(), r.Header.Get("Authorization"))
		if err != nil {
			return nil, false, nil // 401, as for any unknown token
		}
		return &authn.Response{User: userOf(id)}, true, nil
	})
}

// requestAuthorizer decides on the URL and verb alone, before the body or
// the store is read (kube-apiserver's authorization filter); the objects
// are checked again once read (rest.go).
func requestAuthorizer() authorizer.Authorizer {
	return authorizer.AuthorizerFunc(func(ctx context.Context, a authorizer.Attributes) (authorizer.Decision, string, error) {
		id := identityOf(a.GetUser())
		if id.Admin {
			return authorizer.DecisionAllow, "", nil
		}
		if !a.IsResourceRequest() {
			// Discovery, OpenAPI and /version describe the API to any
			// authenticated user, as Kubernetes' system:discovery role
			// does; the join token, which may only join, excepted.
			if !id.Joining && a.GetVerb() == "get" && isAuthenticated(a.GetUser()) && discoveryPath(a.GetPath()) {
				return authorizer.DecisionAllow, "", nil
			}
			return authorizer.DecisionDeny, fmt.Sprintf("%s may not %s %s", id, a.GetVerb(), a.GetPath()), nil
		}
		if !id.Joining && a.GetVerb() == "create" && selfReview(a) && isAuthenticated(a.GetUser()) {
			return authorizer.DecisionAllow, "", nil // any user may ask what it may do
		}
		if streamSubresources.Has(a.GetSubresource()) {
			return authorizer.DecisionDeny, fmt.Sprintf("%s may not %s %s/%s: only the admin reads logs, runs commands in pods, attaches to them, forwards their ports and reaches nodes' agents",
				id, a.GetVerb(), a.GetResource(), a.GetSubresource()), nil
		}
		req, ok := requestOf(a)
		if !ok {
			return authorizer.DecisionDeny, fmt.Sprintf("%s may not %s %s", id, a.GetVerb(), a.GetResource()), nil
		}
		if err := authorize(id, req); err != nil {
			return authorizer.DecisionDeny, err.Error(), nil
		}
		return authorizer.DecisionAllow, "", nil
	})
}

// discoveryPath says whether a path only describes the API.
func discoveryPath(p string) bool {
	switch {
	case p == "/api", p == "/apis", p == "/version", p == "/openapi/v2":
		return true
	}
	for _, prefix := range []string{"/api/", "/apis/", "/openapi/"} {
		if strings.HasPrefix(p, prefix) {
			return true
		}
	}
	return false
}

func isAuthenticated(u user.Info) bool {
	if u == nil {
		return false
	}
	for _, g := range u.GetGroups() {
		if g == user.AllAuthenticated {
			return true
		}
	}
	return false
}

// selfReview says whether a request asks about the caller itself
// (kubectl auth can-i, auth whoami).
func selfReview(a authorizer.Attributes) bool {
	switch a.GetAPIGroup() + "/" + a.GetResource() {
	case "authorization.k8s.io/selfsubjectaccessreviews", "authorization.k8s.io/selfsubjectrulesreviews", "authentication.k8s.io/selfsubjectreviews":
		return true
	}
	return false
}

// requestOf turns the generic server's attributes into skep's request,
// before the body: patch is an update, for skep's rules. Only the admin
// deletes collections.
func requestOf(a authorizer.Attributes) (request, bool) {
	r, ok := api.ForPath(a.GetAPIGroup(), a.GetAPIVersion(), a.GetResource())
	if !ok {
		r, ok = eventsV1Resource(a.GetAPIGroup(), a.GetAPIVersion(), a.GetResource())
	}
	if !ok {
		return request{}, false
	}
	req := request{verb: a.GetVerb(), resource: r, namespace: a.GetNamespace(), name: a.GetName(), beforeBody: true}
	switch a.GetVerb() {
	case "patch":
		req.verb = "update"
	case "deletecollection":
		return request{}, false
	}
	switch a.GetSubresource() {
	case "":
	case "status":
		req.status = true
	default:
		return request{}, false
	}
	return req, true
}
