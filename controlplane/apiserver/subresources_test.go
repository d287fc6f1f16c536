package apiserver_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/skep-io/skep/controlplane/apiserver/apiservertest"
)

// TestSubresources drives the subresources Kubernetes clients use, as
// they send them: scale (kubectl scale), binding (a scheduler), eviction
// (kubectl drain), and the self reviews (kubectl auth can-i, whoami).
func TestSubresources(t *testing.T) {
	s := apiservertest.StartServer(t)
	c := newRawClient(t, s)
	admin := s.AdminToken
	post := func(path, body string) (int, string) {
		code, out, _ := c.do(http.MethodPost, path, admin, "application/json", strings.NewReader(body))
		return code, out
	}
	deploy := `{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web"},"spec":{"replicas":1,"selector":{"matchLabels":{"app":"web"}},"template":{"metadata":{"labels":{"app":"web"}},"spec":{"containers":[{"name":"c","image":"i"}]}}}}`
	if code, out := post("/apis/apps/v1/namespaces/default/deployments", deploy); code != 201 {
		t.Fatalf("create deployment: %d %s", code, out)
	}

	scale := "/apis/apps/v1/namespaces/default/deployments/web/scale"
	code, out, _ := c.do(http.MethodGet, scale, admin, "", nil)
	if code != 200 || !strings.Contains(out, `"kind":"Scale","apiVersion":"autoscaling/v1"`) || !strings.Contains(out, `"replicas":1`) || !strings.Contains(out, `"selector":"app=web"`) {
		t.Errorf("GET scale: %d %s; want an autoscaling/v1 Scale of 1 replica selecting app=web", code, out)
	}
	code, out, _ = c.do(http.MethodPatch, scale, admin, "application/merge-patch+json", strings.NewReader(`{"spec":{"replicas":4}}`))
	if code != 200 || !strings.Contains(out, `"spec":{"replicas":4}`) {
		t.Errorf("PATCH scale to 4: %d %s", code, out)
	}
	if _, out, _ := c.do(http.MethodGet, "/apis/apps/v1/namespaces/default/deployments/web", admin, "", nil); !strings.Contains(out, `"replicas":4`) {
		t.Errorf("deployment after scaling: %s; want replicas 4", out)
	}
	if code, out, _ := c.do(http.MethodPatch, scale, admin, "application/merge-patch+json", strings.NewReader(`{"spec":{"replicas":-1}}`)); code != 422 || !strings.Contains(out, "spec.replicas") {
		t.Errorf("scale to -1: %d %s; want 422 naming spec.replicas", code, out)
	}

	pod := `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"name":"c","image":"i"}]}}`
	if code, out := post("/api/v1/namespaces/default/pods", pod); code != 201 {
		t.Fatalf("create pod: %d %s", code, out)
	}
	bind := `{"apiVersion":"v1","kind":"Binding","metadata":{"name":"p"},"target":{"kind":"Node","name":"node-a"}}`
	if code, out := post("/api/v1/namespaces/default/pods/p/binding", bind); code != 201 {
		t.Errorf("bind: %d %s", code, out)
	}
	if _, out, _ := c.do(http.MethodGet, "/api/v1/namespaces/default/pods/p", admin, "", nil); !strings.Contains(out, `"nodeName":"node-a"`) || !strings.Contains(out, `"type":"PodScheduled","status":"True"`) {
		t.Errorf("pod after binding: %s; want it on node-a and scheduled", out)
	}
	if code, out := post("/api/v1/namespaces/default/pods/p/binding", strings.Replace(bind, "node-a", "node-b", 1)); code != 409 || !strings.Contains(out, "already assigned") {
		t.Errorf("second bind: %d %s; want 409", code, out)
	}
	evict := `{"apiVersion":"policy/v1","kind":"Eviction","metadata":{"name":"p"}}`
	if code, out := post("/api/v1/namespaces/default/pods/p/eviction", evict); code != 201 {
		t.Errorf("evict: %d %s", code, out)
	}
	if _, out, _ := c.do(http.MethodGet, "/api/v1/namespaces/default/pods/p", admin, "", nil); !strings.Contains(out, "deletionTimestamp") {
		t.Errorf("pod after eviction: %s; want it terminating (its node's agent stops it)", out)
	}

	review := func(token, body string) string {
		code, out, _ := c.do(http.MethodPost, "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", token, "application/json", strings.NewReader(body))
		if code != 201 {
			t.Fatalf("access review: %d %s", code, out)
		}
		return out
	}
	canCreatePods := `{"apiVersion":"authorization.k8s.io/v1","kind":"SelfSubjectAccessReview","spec":{"resourceAttributes":{"verb":"create","resource":"pods","namespace":"default"}}}`
	if out := review(admin, canCreatePods); !strings.Contains(out, `"allowed":true`) {
		t.Errorf("can the admin create pods: %s", out)
	}
	node := joinNodeRaw(t, c, s, "node-a")
	if out := review(node, canCreatePods); strings.Contains(out, `"allowed":true`) || !strings.Contains(out, "system:node:node-a may not create pods") {
		t.Errorf("can a node create pods: %s; want no, with the authorizer's reason", out)
	}
	code, out, _ = c.do(http.MethodPost, "/apis/authentication.k8s.io/v1/selfsubjectreviews", node, "application/json", strings.NewReader(`{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}`))
	if code != 201 || !strings.Contains(out, `"username":"system:node:node-a"`) || !strings.Contains(out, "system:nodes") {
		t.Errorf("whoami as a node: %d %s", code, out)
	}
}

// TestDeletePreconditionsAreConflicts: a delete whose UID precondition
// names another object is a 409 (client-go's IsConflict), for the admin
// and for a node deleting a pod bound to it, which keeps its own
// precondition.
func TestDeletePreconditionsAreConflicts(t *testing.T) {
	s := apiservertest.StartServer(t)
	c := newRawClient(t, s)
	node := joinNodeRaw(t, c, s, "node-a")
	pod := `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"nodeName":"node-a","containers":[{"name":"c","image":"i"}]}}`
	if code, out, _ := c.do(http.MethodPost, "/api/v1/namespaces/default/pods", s.AdminToken, "application/json", strings.NewReader(pod)); code != 201 {
		t.Fatalf("create pod: %d %s", code, out)
	}
	wrongUID := `{"preconditions":{"uid":"00000000-0000-0000-0000-000000000000"}}`
	for _, who := range []struct{ name, token string }{{"admin", s.AdminToken}, {"its node", node}} {
		code, out, _ := c.do(http.MethodDelete, "/api/v1/namespaces/default/pods/p", who.token, "application/json", strings.NewReader(wrongUID))
		if code != 409 || !strings.Contains(out, "Precondition failed") {
			t.Errorf("delete by %s with another UID as precondition: %d %s; want 409", who.name, code, out)
		}
	}
	if _, out, _ := c.do(http.MethodGet, "/api/v1/namespaces/default/pods/p", s.AdminToken, "", nil); strings.Contains(out, "deletionTimestamp") {
		t.Errorf("pod after refused deletes: %s; want it untouched", out)
	}
}
