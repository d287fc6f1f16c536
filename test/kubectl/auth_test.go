package kubectl

import (
	"strings"
	"testing"
)

// TestAuth: kubectl auth asks the server who it is and what it may do.
func TestAuth(t *testing.T) {
	t.Parallel()
	t.Run("can-i", func(t *testing.T) {
		wantOutput(t, "yes\n", "auth", "can-i", "create", "deployments")
		wantOutput(t, "yes\n", "auth", "can-i", "delete", "nodes")
		wantOutput(t, "yes\n", "auth", "can-i", "*", "*")
		wantOutput(t, "yes\n", "auth", "can-i", "get", "pods", "--subresource=log")
	})
	// can-i --list asks for a SelfSubjectRulesReview.
	t.Run("can-i --list", func(t *testing.T) {
		out := mustKubectl(t, "auth", "can-i", "--list")
		if l := tableLines(out); l[0] != "Resources Non-Resource URLs Resource Names Verbs" {
			t.Errorf("kubectl auth can-i --list header: %q\n%s", l[0], out)
		}
	})
	// Impersonated (the admin may), another user meets skep's authorizer.
	// (kubectl takes discovery from the cache TestMain filled as admin.)
	t.Run("forbidden", func(t *testing.T) {
		wantFails(t, []string{`Error from server (Forbidden): pods is forbidden: User "someone" cannot list resource "pods" in API group "" in the namespace "default"`},
			"get", "pods", "-n", "default", "--as=someone")
		wantFails(t, []string{`error: failed to create deployment: deployments.apps is forbidden: User "system:node:node-1" cannot create resource "deployments" in API group "apps" in the namespace "default"`},
			"create", "deployment", "x", "-n", "default", "--image=x", "--as=system:node:node-1", "--as-group=system:nodes")
	})
	// Without a discovery cache, kubectl first reads discovery as that
	// user: Kubernetes lets every authenticated user read it
	// (system:discovery), so kubectl gets to the request and names what
	// is forbidden.
	t.Run("discovery as another", func(t *testing.T) {
		r := run{env: []string{"HOME=" + t.TempDir()}}.kubectl(t, "get", "pods", "-n", "default", "--as=someone")
		want := `Error from server (Forbidden): pods is forbidden: User "someone" cannot list resource "pods" in API group "" in the namespace "default"`
		if r.Err == nil || !strings.Contains(r.Stderr, want) {
			t.Errorf("kubectl get pods as someone, with no discovery cache: want %q\n%s", want, r)
		}
	})
	t.Run("can-i as another", func(t *testing.T) {
		r := kubectl(t, "auth", "can-i", "create", "deployments", "--as=system:node:node-1", "--as-group=system:nodes")
		// "no", then " - " and the authorizer's reason when it gives one.
		if r.ExitCode() != 1 || !strings.HasPrefix(r.Stdout, "no") || !strings.Contains(r.Stdout, "deployments") {
			t.Errorf("kubectl auth can-i for a node: want \"no\" with the reason, and exit 1\n%s", r)
		}
		wantOutput(t, "yes\n", "auth", "can-i", "get", "nodes/node-1", "--as=system:node:node-1", "--as-group=system:nodes")
	})
	t.Run("whoami", func(t *testing.T) {
		out := mustKubectl(t, "auth", "whoami")
		if l := tableLines(out); len(l) < 3 || l[0] != "ATTRIBUTE VALUE" || l[1] != "Username admin" || l[2] != "Groups [system:masters system:authenticated]" {
			t.Errorf("kubectl auth whoami printed:\n%s\nwant Username admin in system:masters", out)
		}
		wantOutput(t, "admin", "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}")
	})
}
