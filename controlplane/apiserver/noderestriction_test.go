package apiserver_test

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skep-io/skep/controlplane/apiserver"
	"github.com/skep-io/skep/controlplane/apiserver/apiservertest"
	"github.com/skep-io/skep/controlplane/client"
	"github.com/skep-io/skep/controlplane/pki"
)

// TestNodeRestriction checks what a node may not write on its own Node,
// as Kubernetes' NodeRestriction admission refuses it: a pod CIDR, and
// restricted labels; and that a pod CIDR, once set, is fixed for everyone.
func TestNodeRestriction(t *testing.T) {
	s := apiservertest.StartServer(t)
	ctx := t.Context()
	ctl := s.Client() // the control plane's in-process client
	admin := httpClient(t, s, s.AdminToken)
	node := httpClient(t, s, mustJoin(t, s, client.JoinRequest{NodeName: "node-a", Password: passwordOne}).Token)

	withLabels := func(labels map[string]string) *corev1.Node {
		return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a", Labels: labels}}
	}
	for _, key := range []string{"node-role.kubernetes.io/control-plane", "node-restriction.kubernetes.io/trusted", "kubernetes.io/some-label", "x.k8s.io/y"} {
		if _, err := node.Create(ctx, nodes, withLabels(map[string]string{key: "true"})); !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), key) {
			t.Errorf("a node creates its Node with label %s: %v; want 403 naming it", key, err)
		}
	}
	cidr := withLabels(nil)
	cidr.Spec.PodCIDR, cidr.Spec.PodCIDRs = "10.244.7.0/24", []string{"10.244.7.0/24"}
	if _, err := node.Create(ctx, nodes, cidr); !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "podCIDR") {
		t.Errorf("a node creates its Node with a pod CIDR: %v; want 403", err)
	}
	allowed := map[string]string{corev1.LabelHostname: "node-a", corev1.LabelTopologyZone: "z1", "node.kubernetes.io/pool": "p", "example.com/team": "t"}
	if _, err := node.Create(ctx, nodes, withLabels(allowed)); err != nil {
		t.Fatalf("a node creates its Node with a kubelet's labels: %v", err)
	}

	stale, _ := node.Get(ctx, nodes, "", "node-a")
	// The control plane assigns a pod CIDR and a role label.
	obj, _ := ctl.Get(ctx, nodes, "", "node-a")
	n := obj.(*corev1.Node)
	n.Spec.PodCIDR, n.Spec.PodCIDRs = "10.244.1.0/24", []string{"10.244.1.0/24"}
	n.Labels["node-role.kubernetes.io/worker"] = ""
	if _, err := ctl.Update(ctx, nodes, n); err != nil {
		t.Fatalf("the control plane sets a pod CIDR: %v", err)
	}

	// A status write from a copy older than that is a conflict, as any
	// stale write, not a refusal: the agent reads again and goes on.
	if _, err := node.UpdateStatus(ctx, nodes, stale); !apierrors.IsConflict(err) {
		t.Errorf("a node writes its status from a copy without its new pod CIDR: %v; want 409", err)
	}
	update := func(c client.Interface, mutate func(*corev1.Node)) error {
		obj, err := c.Get(ctx, nodes, "", "node-a")
		if err != nil {
			return err
		}
		n := obj.(*corev1.Node)
		mutate(n)
		_, err = c.Update(ctx, nodes, n)
		return err
	}
	// The attack: node-a moves its range onto node-b's.
	if err := update(node, func(n *corev1.Node) { n.Spec.PodCIDR, n.Spec.PodCIDRs = "10.244.2.0/24", []string{"10.244.2.0/24"} }); !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err) {
		t.Errorf("a node moves its pod CIDR: %v; want 403 or 422", err)
	}
	for name, c := range map[string]client.Interface{"the admin": admin, "the control plane": ctl} {
		if err := update(c, func(n *corev1.Node) { n.Spec.PodCIDR, n.Spec.PodCIDRs = "10.244.2.0/24", []string{"10.244.2.0/24"} }); !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "immutable") {
			t.Errorf("%s moves a pod CIDR once set: %v; want 422 (immutable)", name, err)
		}
	}
	if err := update(node, func(n *corev1.Node) { n.Labels["node-restriction.kubernetes.io/trusted"] = "yes" }); !apierrors.IsForbidden(err) {
		t.Errorf("a node adds a restricted label: %v; want 403", err)
	}
	if err := update(node, func(n *corev1.Node) { delete(n.Labels, "node-role.kubernetes.io/worker") }); !apierrors.IsForbidden(err) {
		t.Errorf("a node removes its role label: %v; want 403", err)
	}
	// What a node does write still works: its own labels, keeping what
	// the control plane set as it is.
	if err := update(node, func(n *corev1.Node) { n.Labels["example.com/team"] = "u" }); err != nil {
		t.Errorf("a node changes a label of its own: %v", err)
	}
	if err := update(node, func(n *corev1.Node) {
		n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeHostName, Address: "node-a"}}
	}); err != nil {
		t.Errorf("a node updates its Node keeping its pod CIDR: %v", err)
	}
	if _, err := ctl.Create(ctx, nodes, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-b"}, Spec: corev1.NodeSpec{PodCIDR: "10.244.3.1/24"}}); !apierrors.IsInvalid(err) {
		t.Errorf("a Node with a pod CIDR with host bits: %v; want 422", err)
	}
}

// askServing asks for a serving certificate of node for ips with c.
func askServing(t *testing.T, c *client.HTTP, node string, ips ...string) (tls.Certificate, error) {
	t.Helper()
	var addrs []netip.Addr
	for _, ip := range ips {
		addrs = append(addrs, netip.MustParseAddr(ip))
	}
	csr, key, err := pki.NewServingRequest(node, addrs)
	if err != nil {
		t.Fatal(err)
	}
	var resp client.ServingCertificateResponse
	if err := c.Do(t.Context(), http.MethodPost, client.ServingCertificatePath, client.ServingCertificateRequest{CSR: string(csr)}, &resp); err != nil {
		return tls.Certificate{}, err
	}
	kb, _ := x509.MarshalPKCS8PrivateKey(key)
	return tls.X509KeyPair([]byte(resp.Certificate), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}))
}

// TestServingCertificatesOnlyForRecordedAddresses checks a node gets a
// serving certificate only for the addresses recorded at its join, not
// for loopback or another node's address it claims in its status.
func TestServingCertificatesOnlyForRecordedAddresses(t *testing.T) {
	s := apiservertest.StartServer(t)
	clk := newClock() // joins are rate-limited: the clock refills the bucket
	apiserver.SetClock(s.Server, clk.now)
	ctx := t.Context()
	for _, bad := range []string{"127.0.0.1", "::1", "0.0.0.0", "224.0.0.1", "not-an-ip"} {
		if _, err := join(t, s, client.JoinRequest{NodeName: "node-x", Password: passwordOne, Addresses: []string{bad}}); !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "addresses[0]") {
			t.Errorf("join declaring %s: %v; want 422 naming addresses[0]", bad, err)
		}
		clk.advance(time.Minute)
	}
	a := httpClient(t, s, mustJoin(t, s, client.JoinRequest{NodeName: "node-a", Password: passwordOne, Addresses: []string{"10.0.0.1"}}).Token)
	b := httpClient(t, s, mustJoin(t, s, client.JoinRequest{NodeName: "node-b", Password: passwordTwo, Addresses: []string{"10.0.0.2"}}).Token)
	if _, err := join(t, s, client.JoinRequest{NodeName: "node-c", Password: passwordOne, Addresses: []string{"10.0.0.1"}}); !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "node-a") {
		t.Errorf("join declaring node-a's address: %v; want 403 naming node-a", err)
	}
	// node-b claims loopback and node-a's address in its status.
	if _, err := b.Create(ctx, nodes, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-b"}}); err != nil {
		t.Fatal(err)
	}
	obj, _ := b.Get(ctx, nodes, "", "node-b")
	n := obj.(*corev1.Node)
	n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "127.0.0.1"}, {Type: corev1.NodeInternalIP, Address: "10.0.0.1"}}
	if _, err := b.UpdateStatus(ctx, nodes, n); err != nil {
		t.Fatal(err)
	}
	for _, ip := range []string{"127.0.0.1", "10.0.0.1"} {
		if _, err := askServing(t, b, "node-b", ip); !apierrors.IsForbidden(err) {
			t.Errorf("node-b asks for a serving certificate for %s: %v; want 403", ip, err)
		}
	}
	if _, err := askServing(t, b, "node-a", "10.0.0.2"); !apierrors.IsForbidden(err) {
		t.Errorf("node-b asks for a certificate in node-a's name: %v; want 403", err)
	}
	cert, err := askServing(t, a, "node-a", "10.0.0.1")
	if err != nil {
		t.Fatalf("node-a asks for a serving certificate for its recorded address: %v", err)
	}
	leaf, _ := x509.ParseCertificate(cert.Certificate[0])
	if leaf.Subject.CommonName != "system:node:node-a" || len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != "node-a" {
		t.Errorf("node-a's certificate names %q and %v; want system:node:node-a and the DNS name node-a", leaf.Subject.CommonName, leaf.DNSNames)
	}
}

// TestAgentWithAnotherNodesCertificate checks the API server talks to a
// node's agent only if it presents that node's certificate: node-b, which
// claims node-a's address, reaches nothing there.
func TestAgentWithAnotherNodesCertificate(t *testing.T) {
	s := apiservertest.StartServer(t)
	apiserver.AllowLoopbackNodeAddresses(s.Server)
	ctx := t.Context()
	admin := httpClient(t, s, s.AdminToken)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	a := joinNode(t, s, "node-a", "127.0.0.1", int32(port))
	nb := joinNode(t, s, "node-b", "127.0.0.2", int32(port))
	cert, err := askServing(t, a, "node-a", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	var reached atomic.Int32
	agent := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached.Add(1)
		io.WriteString(w, "secret logs\n")
	}))
	agent.Listener = ln
	agent.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	agent.StartTLS()
	t.Cleanup(agent.Close)

	// node-b's status now says its agent is at node-a's address.
	obj, _ := nb.Get(ctx, nodes, "", "node-b")
	n := obj.(*corev1.Node)
	n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "127.0.0.1"}}
	if _, err := nb.UpdateStatus(ctx, nodes, n); err != nil {
		t.Fatal(err)
	}
	for _, p := range []*corev1.Pod{podOn("on-a", "node-a", "app"), podOn("on-b", "node-b", "app")} {
		if _, err := admin.Create(ctx, pods, p); err != nil {
			t.Fatal(err)
		}
	}
	rc, err := admin.Logs(ctx, "default", "on-b", &corev1.PodLogOptions{})
	if err == nil {
		body, _ := io.ReadAll(rc)
		rc.Close()
		t.Fatalf("logs of a pod on node-b were read from node-a's agent: %q", body)
	}
	if !apierrors.IsServiceUnavailable(err) || !strings.Contains(err.Error(), "node-b") {
		t.Errorf("logs of a pod on node-b, whose address holds node-a's agent: %v; want 503", err)
	}
	if reached.Load() != 0 {
		t.Errorf("the API server sent %d requests for node-b to node-a's agent", reached.Load())
	}
	// The same agent, for its own node, answers.
	rc, err = admin.Logs(ctx, "default", "on-a", &corev1.PodLogOptions{})
	if err != nil {
		t.Fatalf("logs of a pod on node-a: %v", err)
	}
	rc.Close()
	if reached.Load() != 1 {
		t.Errorf("node-a's agent was reached %d times; want once", reached.Load())
	}
}
