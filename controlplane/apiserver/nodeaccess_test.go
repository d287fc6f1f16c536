package apiserver_test

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skep-io/skep/controlplane/apiserver"
	"github.com/skep-io/skep/controlplane/apiserver/apiservertest"
	"github.com/skep-io/skep/controlplane/client"
	"github.com/skep-io/skep/controlplane/pki"
)

// joinNode joins as node (declaring the address ip, when not "") and
// registers its Node with the InternalIP ip and the agent port port.
func joinNode(t *testing.T, s *apiservertest.Server, node, ip string, port int32) *client.HTTP {
	t.Helper()
	req := client.JoinRequest{NodeName: node, Password: "password-of-" + node}
	if ip != "" {
		req.Addresses = []string{ip}
		// The stand-in agents of these tests listen on loopback.
		apiserver.AllowLoopbackNodeAddresses(s.Server)
	}
	var jr apiserver.JoinResponse
	if err := httpClient(t, s, s.JoinToken).Do(t.Context(), http.MethodPost, "/skep/v1/join", req, &jr); err != nil {
		t.Fatalf("join %s: %v", node, err)
	}
	c := httpClient(t, s, jr.Token)
	obj, err := c.Create(t.Context(), nodes, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}})
	if err != nil {
		t.Fatal(err)
	}
	n := obj.(*corev1.Node)
	if ip != "" {
		n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}}
	}
	n.Status.DaemonEndpoints.KubeletEndpoint.Port = port
	if _, err := c.UpdateStatus(t.Context(), nodes, n); err != nil {
		t.Fatal(err)
	}
	return c
}

func podOn(name, node string, containers ...string) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}, Spec: corev1.PodSpec{NodeName: node}}
	for _, c := range containers {
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: c, Image: "skep/toolbox"})
	}
	return p
}

// TestNodeAccessErrors checks the answers of pods/NAME/log, pods/NAME/exec
// and nodes/NAME/proxy that never reach an agent: who may ask, and what
// is wrong with the pod, the container or the node, as Kubernetes Status.
func TestNodeAccessErrors(t *testing.T) {
	s := apiservertest.StartServer(t)
	ctx := t.Context()
	admin := httpClient(t, s, s.AdminToken)
	node := joinNode(t, s, "node-a", "", 0)
	// An agent that is not there: a port nothing listens on.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadPort := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	joinNode(t, s, "node-gone", "127.0.0.1", int32(deadPort))
	for _, p := range []*corev1.Pod{podOn("one", "node-a", "app"), podOn("two", "node-a", "a", "b"), podOn("pending", "", "app"), podOn("far", "node-gone", "app"), podOn("lost", "node-x", "app")} {
		if _, err := admin.Create(ctx, pods, p); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		name     string
		c        *client.HTTP
		method   string
		path     string
		upgrade  bool
		code     int32
		mentions []string
	}{
		{"no token", httpClient(t, s, ""), "GET", "/api/v1/namespaces/default/pods/one/log", false, 401, nil},
		{"a node's token: logs", node, "GET", "/api/v1/namespaces/default/pods/one/log", false, 403, []string{"system:node:node-a", "pods/log", "only the admin"}},
		{"a node's token: exec", node, "POST", "/api/v1/namespaces/default/pods/one/exec?command=true", true, 403, []string{"pods/exec", "only the admin"}},
		{"a node's token: attach", node, "POST", "/api/v1/namespaces/default/pods/one/attach?stdin=true", false, 403, []string{"pods/attach", "only the admin"}},
		{"a node's token: port-forward", node, "POST", "/api/v1/namespaces/default/pods/one/portforward?ports=80", false, 403, []string{"pods/portforward", "only the admin"}},
		{"a node's token: node proxy", node, "POST", "/api/v1/nodes/node-a/proxy/images", false, 403, []string{"nodes/proxy"}},
		{"no such pod", admin, "GET", "/api/v1/namespaces/default/pods/nope/log", false, 404, []string{`pods "nope" not found`}},
		{"not scheduled", admin, "GET", "/api/v1/namespaces/default/pods/pending/log", false, 400, []string{"pod pending does not have a host assigned"}},
		{"no container named, two exist", admin, "GET", "/api/v1/namespaces/default/pods/two/log", false, 400,
			[]string{"a container name must be specified for pod two, choose one of: [a b]"}},
		{"a container that does not exist", admin, "GET", "/api/v1/namespaces/default/pods/two/log?container=nope", false, 400,
			[]string{"container nope is not valid for pod two", "choose one of: [a b]"}},
		{"exec: a container that does not exist", admin, "POST", "/api/v1/namespaces/default/pods/one/exec?container=nope&command=true", true, 400,
			[]string{"container nope is not valid for pod one", "[app]"}},
		{"bad tailLines", admin, "GET", "/api/v1/namespaces/default/pods/one/log?tailLines=-3", false, 422, []string{"tailLines", "must be greater than or equal to 0"}},
		{"tailLines not a number", admin, "GET", "/api/v1/namespaces/default/pods/one/log?tailLines=many", false, 400, []string{`tailLines="many": must be an integer`}},
		{"since twice", admin, "GET", "/api/v1/namespaces/default/pods/one/log?sinceSeconds=3&sinceTime=2026-01-02T03:04:05Z", false, 422, []string{"at most one of `sinceTime` or `sinceSeconds`"}},
		{"sinceTime not a time", admin, "GET", "/api/v1/namespaces/default/pods/one/log?sinceTime=yesterday", false, 400, []string{`sinceTime="yesterday"`, "RFC 3339"}},
		{"exec with no command", admin, "POST", "/api/v1/namespaces/default/pods/one/exec", false, 400, []string{"at least 1 command"}},
		{"exec not upgraded", admin, "POST", "/api/v1/namespaces/default/pods/far/exec?command=true", false, 400, []string{"Upgrade request required"}},
		{"port-forward to no port", admin, "POST", "/api/v1/namespaces/default/pods/far/portforward?ports=0", false, 400, []string{"0 is not a port"}},
		{"port-forward to a port that is not a number", admin, "POST", "/api/v1/namespaces/default/pods/far/portforward?ports=http", false, 400, []string{`ports=["http"]`}},
		{"logs by POST", admin, "POST", "/api/v1/namespaces/default/pods/one/log", false, 405, nil},
		{"node with no address", admin, "GET", "/api/v1/namespaces/default/pods/one/log", false, 503, []string{"node node-a has no InternalIP"}},
		{"bound to a node that does not exist", admin, "GET", "/api/v1/namespaces/default/pods/lost/log", false, 503, []string{"node node-x, which does not exist"}},
		{"agent not answering", admin, "GET", "/api/v1/namespaces/default/pods/far/log", false, 503,
			[]string{fmt.Sprintf("the agent of node node-gone at 127.0.0.1:%d did not answer", deadPort)}},
		{"proxy to a node that does not exist", admin, "POST", "/api/v1/nodes/node-x/proxy/images", false, 404, []string{`nodes "node-x" not found`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.upgrade {
				// What `skep exec` sends (client-go's remotecommand): a
				// refusal comes before the upgrade, and client-go reports
				// it as kubectl prints it, not as a Status.
				_, err := tc.c.Exec(ctx, "default", strings.Split(tc.path, "/")[6], execOptions(tc.path))
				if err == nil || !strings.HasPrefix(err.Error(), "unable to upgrade connection: ") {
					t.Fatalf("exec: got %v, want the refusal", err)
				}
				for _, m := range tc.mentions {
					if !strings.Contains(err.Error(), m) {
						t.Errorf("exec: %q does not mention %q", err, m)
					}
				}
				return
			}
			err := tc.c.Do(ctx, tc.method, tc.path, nil, nil)
			se, ok := err.(apierrors.APIStatus)
			if !ok {
				t.Fatalf("%s %s: got %v, want a Status error", tc.method, tc.path, err)
			}
			st := se.Status()
			if st.Code != tc.code {
				t.Errorf("%s %s: got %d (%s), want %d", tc.method, tc.path, st.Code, st.Message, tc.code)
			}
			for _, m := range tc.mentions {
				if !strings.Contains(st.Message, m) {
					t.Errorf("%s %s: message %q does not mention %q", tc.method, tc.path, st.Message, m)
				}
			}
		})
	}
}

// execOptions turns an exec URL's query back into options.
func execOptions(path string) client.ExecOptions {
	var o client.ExecOptions
	_, query, _ := strings.Cut(path, "?")
	for _, kv := range strings.Split(query, "&") {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "container":
			o.Container = v
		case "command":
			o.Command = append(o.Command, v)
		}
	}
	return o
}

// TestAgentChannel walks the channel to an agent with a stand-in for the
// agent's HTTPS endpoint: a node gets a serving certificate for its own
// address only; the API server then reaches it with the client
// certificate the agent requires, without passing on the caller's token,
// and streams the answer back.
func TestAgentChannel(t *testing.T) {
	s := apiservertest.StartServer(t)
	ctx := t.Context()
	admin := httpClient(t, s, s.AdminToken)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	node := joinNode(t, s, "node-a", "127.0.0.1", int32(port))

	ask := func(c *client.HTTP, ip string) error {
		_, _, err := askServingCert(t, c, ip)
		return err
	}
	if err := ask(node, "10.1.2.3"); !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "not an address of node node-a") {
		t.Errorf("a serving certificate for another node's address: %v; want 403", err)
	}
	if err := ask(admin, "127.0.0.1"); !apierrors.IsForbidden(err) {
		t.Errorf("the admin asked for a node's serving certificate: %v; want 403", err)
	}

	// The stand-in agent: it serves the API server's certificate only.
	type seen struct{ path, query, auth, cn string }
	got := make(chan seen, 1)
	startStandInAgent(t, node, ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(r.TLS.PeerCertificates) == 0 {
			http.Error(w, "who are you", http.StatusUnauthorized)
			return
		}
		got <- seen{r.URL.Path, r.URL.RawQuery, r.Header.Get("Authorization"), r.TLS.PeerCertificates[0].Subject.CommonName}
		io.WriteString(w, "line 1\nline 2\n")
	}))

	p := podOn("one", "node-a", "app")
	created, err := admin.Create(ctx, pods, p)
	if err != nil {
		t.Fatal(err)
	}
	tail := int64(2)
	rc, err := admin.Logs(ctx, "default", "one", &corev1.PodLogOptions{Follow: true, TailLines: &tail})
	if err != nil {
		t.Fatalf("logs through the API server: %v", err)
	}
	body, _ := io.ReadAll(rc)
	rc.Close()
	if string(body) != "line 1\nline 2\n" {
		t.Errorf("logs through the API server: %q; want the agent's answer", body)
	}
	req := <-got
	if req.path != "/containerLogs/default/one/app" || !strings.Contains(req.query, "follow=true") || !strings.Contains(req.query, "tailLines=2") ||
		!strings.Contains(req.query, "podUID="+string(created.GetUID())) {
		t.Errorf("the agent was asked %s?%s; want /containerLogs/default/one/app with follow, tailLines and the pod's UID", req.path, req.query)
	}
	if req.auth != "" {
		t.Errorf("the caller's token reached the node: %q", req.auth)
	}
	if req.cn != pki.APIServerClientName {
		t.Errorf("the API server presented %q; want %q", req.cn, pki.APIServerClientName)
	}
}

// askServingCert has c ask for a serving certificate of node-a for ip,
// as an agent does.
func askServingCert(t *testing.T, c *client.HTTP, ip string) (client.ServingCertificateResponse, []byte, error) {
	csr, key, err := pki.NewServingRequest("node-a", []netip.Addr{netip.MustParseAddr(ip)})
	if err != nil {
		t.Fatal(err)
	}
	var resp client.ServingCertificateResponse
	err = c.Do(t.Context(), http.MethodPost, client.ServingCertificatePath, client.ServingCertificateRequest{CSR: string(csr)}, &resp)
	kb, _ := x509.MarshalPKCS8PrivateKey(key)
	return resp, kb, err
}

// startStandInAgent serves h on ln (127.0.0.1) as node-a's agent does:
// with the serving certificate node (node-a's credential) gets for the
// address, taking client certificates of the node CA.
func startStandInAgent(t *testing.T, node *client.HTTP, ln net.Listener, h http.Handler) {
	t.Helper()
	resp, keyDER, err := askServingCert(t, node, "127.0.0.1")
	if err != nil {
		t.Fatalf("node-a asks for a serving certificate of its own address: %v", err)
	}
	cert, err := tls.X509KeyPair([]byte(resp.Certificate), pemBlock("PRIVATE KEY", keyDER))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(resp.CA))
	agent := httptest.NewUnstartedServer(h)
	agent.Listener = ln
	agent.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: pool, ClientAuth: tls.VerifyClientCertIfGiven}
	agent.StartTLS()
	t.Cleanup(agent.Close)
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}
