package apiserver

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/skep-io/skep/controlplane/api"
	"github.com/skep-io/skep/controlplane/store"
)

// Identity is who made a request.
type Identity struct {
	Admin bool
	// Node is set for an agent's own credentials: "system:node:<Node>".
	Node string
	// Joining is set for the node-join token, which may only exchange
	// itself for a node credential.
	Joining bool
}

func (id Identity) String() string {
	switch {
	case id.Admin:
		return "admin"
	case id.Node != "":
		return "system:node:" + id.Node
	case id.Joining:
		return "node-join"
	}
	return "anonymous"
}

// authenticator maps bearer tokens to identities. Node credentials and
// identities live in the store (credentials as hashes) so every API server
// of an HA set knows them; see nodeidentity.go.
type authenticator struct {
	adminToken string
	joinToken  string
	store      *store.Store
	getNode    func(context.Context, string) (*corev1.Node, error)
	log        *slog.Logger
	now        func() time.Time
	// ttl is how long a node credential lives; recheck how long one is
	// trusted from the cache before the store is asked again (a Node
	// deletion another server saw reaches this one by then at the latest).
	ttl, recheck time.Duration
	// allowLoopback lets nodes declare loopback addresses
	// (Config.AllowLoopbackNodeAddresses).
	allowLoopback bool

	mu    sync.Mutex
	cache map[string]cachedToken // token hash → node
}

func hashToken(t string) string {
	sum := sha256.Sum256([]byte(t))
	return hex.EncodeToString(sum[:])
}

func equal(a, b string) bool { return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }

var errUnauthorized = errors.New("Unauthorized")

// bearerToken is the token of an Authorization header. The scheme is
// case-insensitive (RFC 9110), as kube-apiserver takes it.
func bearerToken(header string) (string, bool) {
	scheme, token, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

func (a *authenticator) authenticate(ctx context.Context, header string) (Identity, error) {
	token, ok := bearerToken(header)
	if !ok {
		return Identity{}, errUnauthorized
	}
	switch {
	case equal(token, a.adminToken):
		return Identity{Admin: true}, nil
	case equal(token, a.joinToken):
		return Identity{Joining: true}, nil
	}
	return a.nodeToken(ctx, token)
}

// request is what authorization looks at.
type request struct {
	verb      string // get, list, watch, create, update, delete
	resource  *api.Resource
	namespace string
	name      string
	status    bool
	// old is the stored object for update and delete, new the one sent.
	old, new api.Object
	// beforeBody: neither object is read yet, and a create's name is
	// still in its body. Authorization then decides on the URL and verb
	// alone, before the server spends a decode or a store read on the
	// request or tells whether the object exists (kube-apiserver's
	// authorization filter runs before any handler); it runs again on the
	// objects once they are read.
	beforeBody bool
}

// authorize says whether id may do req, as Kubernetes' Node authorizer
// and NodeRestriction admission do for kubelets: an agent reads what it
// needs to run pods and program services, and writes only its own Node,
// its Lease, the status of pods bound to it, and Events.
func authorize(id Identity, req request) error {
	if id.Admin {
		return nil
	}
	if id.Node == "" {
		return fmt.Errorf("%s may not %s %s", id, req.verb, req.resource.Name)
	}
	forbid := func(why string) error {
		return fmt.Errorf("%s may not %s %s %q: %s", id, req.verb, req.resource.Name, req.name, why)
	}
	switch req.verb {
	case "get", "list", "watch":
		switch req.resource.Name {
		case "pods", "services", "endpoints", "endpointslices", "nodes", "namespaces", "leases":
			return nil
		}
		return forbid("agents read only pods, services, endpoints, endpointslices, nodes, namespaces and leases")
	}
	ownName := req.name == id.Node || req.beforeBody && req.verb == "create" && req.name == ""
	switch req.resource.Name {
	case "nodes":
		if !ownName || req.verb == "delete" {
			return forbid("an agent writes only its own Node")
		}
		if why := nodeRestriction(req); why != "" {
			return forbid(why)
		}
		return nil
	case "leases":
		if req.namespace == "kube-node-lease" && ownName && req.verb != "delete" {
			return nil
		}
		return forbid("an agent writes only its own Lease in kube-node-lease")
	case "pods":
		if !(req.verb == "update" && req.status || req.verb == "delete") {
			return forbid("an agent writes only the status of its pods, and deletes them when they have terminated")
		}
		if req.beforeBody {
			return nil
		}
		if pod, _ := req.old.(*corev1.Pod); pod == nil || pod.Spec.NodeName != id.Node {
			return forbid("the pod is not bound to this node")
		}
		return nil
	case "events":
		// As Kubernetes' system:node role: a kubelet reports what it did
		// to its pods (Pulled, Started, BackOff...) and counts repeats
		// into the Event it wrote; it reads and deletes none.
		if req.verb == "create" || req.verb == "update" {
			return nil
		}
		return forbid("an agent creates and updates Events, and deletes none")
	}
	return forbid("agents may not write " + req.resource.Name)
}
