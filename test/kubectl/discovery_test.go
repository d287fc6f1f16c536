package kubectl

import (
	"regexp"
	"strings"
	"testing"
)

// TestVersion: kubectl reads the server's version (and parses it: a
// version it cannot parse makes kubectl fail).
func TestVersion(t *testing.T) {
	t.Parallel()
	out := mustKubectl(t, "version")
	wantContains(t, "kubectl version", out, "Client Version: v1.32")
	if !regexp.MustCompile(`(?m)^Server Version: v1\.\d+\.\d+\+skep$`).MatchString(out) {
		t.Errorf("kubectl version shows no \"Server Version: v1.N.N+skep\" line:\n%s", out)
	}
}

// TestAPIResources: discovery lists each resource with kubectl's columns.
func TestAPIResources(t *testing.T) {
	t.Parallel()
	out := mustKubectl(t, "api-resources")
	lines := tableLines(out)
	if lines[0] != "NAME SHORTNAMES APIVERSION NAMESPACED KIND" {
		t.Errorf("kubectl api-resources header: %q", lines[0])
	}
	for _, row := range []string{
		"pods po v1 true Pod",
		"services svc v1 true Service",
		"nodes no v1 false Node",
		"namespaces ns v1 false Namespace",
		"configmaps cm v1 true ConfigMap",
		"deployments deploy apps/v1 true Deployment",
		"replicasets rs apps/v1 true ReplicaSet",
		"endpointslices discovery.k8s.io/v1 true EndpointSlice",
		"leases coordination.k8s.io/v1 true Lease",
	} {
		wantRow(t, "kubectl api-resources", out, row)
	}
	if out := mustKubectl(t, "api-resources", "--api-group=apps", "-o", "name"); out != "deployments.apps\nreplicasets.apps\n" {
		t.Errorf("kubectl api-resources --api-group=apps -o name printed %q", out)
	}
}

// TestEcosystemResources: the resources issue 13 says clients expect
// (Helm's Secrets, charts' ServiceAccounts, Events for describe, the
// access reviews of kubectl auth) are discovered.
func TestEcosystemResources(t *testing.T) {
	t.Parallel()
	out := mustKubectl(t, "api-resources")
	for _, row := range []string{
		"secrets v1 true Secret",
		"serviceaccounts sa v1 true ServiceAccount",
		"events ev v1 true Event",
		"events ev events.k8s.io/v1 true Event",
		"selfsubjectaccessreviews authorization.k8s.io/v1 false SelfSubjectAccessReview",
		"selfsubjectreviews authentication.k8s.io/v1 false SelfSubjectReview",
	} {
		wantRow(t, "kubectl api-resources", out, row)
	}
}

// TestExplain: kubectl explains fields from the server's OpenAPI schemas.
func TestExplain(t *testing.T) {
	t.Parallel()
	out := mustKubectl(t, "explain", "deployment.spec.replicas")
	wantContains(t, "kubectl explain deployment.spec.replicas", out,
		"GROUP:      apps", "KIND:       Deployment", "VERSION:    v1", "FIELD: replicas <integer>", "Number of desired pods.")
	out = mustKubectl(t, "explain", "pods.spec.containers.image")
	wantContains(t, "kubectl explain pods.spec.containers.image", out, "KIND:       Pod", "FIELD: image <string>", "Container image name.")
	out = mustKubectl(t, "explain", "service.spec", "--recursive")
	wantContains(t, "kubectl explain service.spec --recursive", out, "clusterIP\t<string>", "ports\t<[]ServicePort>", "targetPort\t<IntOrString>")
	wantFails(t, []string{`field "nosuchfield" does not exist`}, "explain", "pods.spec.nosuchfield")
}

// TestClusterInfo: kubectl names the control plane at the server's address.
func TestClusterInfo(t *testing.T) {
	t.Parallel()
	out := mustKubectl(t, "cluster-info")
	// kubectl colours the names when printing to a terminal only.
	if !strings.Contains(out, "Kubernetes control plane is running at "+apiURL+"\n") {
		t.Errorf("kubectl cluster-info printed:\n%s\nwant the control plane at %s", out, apiURL)
	}
}
