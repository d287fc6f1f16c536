package kubectlstreams

import (
	"strings"
	"testing"
)

// testForbidden: a node's own credential (impersonated, as the admin may)
// cannot exec, attach or port-forward into a pod, not even one of its own
// node's, while it may read the pod; the refusal names the subresource.
func (s *suite) testForbidden(t *testing.T) {
	t.Parallel()
	s.waitReady(t, "tools")
	as := []string{"--as=system:node:" + s.node, "--as-group=system:nodes"}
	for _, c := range []struct {
		subresource string
		args        []string
	}{
		{"pods/exec", []string{"exec", "tools", "--", "true"}},
		{"pods/attach", []string{"attach", "tools"}},
		{"pods/portforward", []string{"port-forward", "pod/tools", ":8080"}},
	} {
		t.Run(c.args[0], func(t *testing.T) {
			t.Parallel()
			r := s.run(t, "", append(as, c.args...)...)
			if r.Err == nil || !strings.Contains(r.Stderr, "forbidden") || !strings.Contains(r.Stderr, `User "system:node:`+s.node+`"`) ||
				!strings.Contains(r.Stderr, c.subresource) {
				t.Errorf("kubectl %s as node %s: want refused as Forbidden for %s\n%s", c.args[0], s.node, c.subresource, r)
			}
		})
	}
}
