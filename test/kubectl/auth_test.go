package kubectl

import (
	"testing"
)

// TestAuth: kubectl auth asks the server who it is and what it may do.
func TestAuth(t *testing.T) {
	t.Run("can-i", func(t *testing.T) {
		wantOutput(t, "yes\n", "auth", "can-i", "create", "deployments")
		wantOutput(t, "yes\n", "auth", "can-i", "delete", "nodes")
		wantOutput(t, "yes\n", "auth", "can-i", "*", "*")
		wantOutput(t, "yes\n", "auth", "can-i", "get", "pods", "--subresource=log")
		out := mustKubectl(t, "auth", "can-i", "--list")
		if l := tableLines(out); l[0] != "Resources Non-Resource URLs Resource Names Verbs" {
			t.Errorf("kubectl auth can-i --list header: %q\n%s", l[0], out)
		}
	})
	t.Run("whoami", func(t *testing.T) {
		out := mustKubectl(t, "auth", "whoami")
		if l := tableLines(out); len(l) < 3 || l[0] != "ATTRIBUTE VALUE" || l[1] != "Username admin" || l[2] != "Groups [system:masters system:authenticated]" {
			t.Errorf("kubectl auth whoami printed:\n%s\nwant Username admin in system:masters", out)
		}
		wantOutput(t, "admin", "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}")
	})
}
