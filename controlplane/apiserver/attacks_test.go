package apiserver_test

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/skep-io/skep/controlplane/apiserver"
	"github.com/skep-io/skep/controlplane/apiserver/apiservertest"
)

// rawClient speaks HTTP to the test server without skep's client, so a
// test can send what an attacker sends.
type rawClient struct {
	t   *testing.T
	s   *apiservertest.Server
	hc  *http.Client
	tls *tls.Config
}

func newRawClient(t *testing.T, s *apiservertest.Server) *rawClient {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(s.CAPEM)
	cfg := &tls.Config{RootCAs: pool}
	return &rawClient{t: t, s: s, tls: cfg, hc: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true}}}
}

// do sends one request and returns the status code and body.
func (c *rawClient) do(method, path, token, contentType string, body io.Reader) (int, string, http.Header) {
	c.t.Helper()
	req, err := http.NewRequest(method, c.s.URL+path, body)
	if err != nil {
		c.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(data), resp.Header
}

// aliasBomb is a ConfigMap whose 1 MB value is aliased n times: about
// 1 MB to send, n MB once expanded.
func aliasBomb(n int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bomb\ndata:\n  k0: &v %s\n", strings.Repeat("x", 1<<20))
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, "  k%d: *v\n", i)
	}
	return b.String()
}

func allocatedDuring(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// TestAmplificationRefused repeats the attack of the security review: a
// 1 MB YAML value aliased 300 times. With the join token it is refused
// before the body is read; with credentials that may write, the expansion
// is refused with a 413 before it happens. Either way the server allocates
// a few MB, not the 300 MB+ the expansion costs.
func TestAmplificationRefused(t *testing.T) {
	s := apiservertest.StartServer(t)
	c := newRawClient(t, s)
	bomb := aliasBomb(300)
	cms := "/api/v1/namespaces/default/configmaps"
	cases := []struct {
		name, token, method, path, contentType string
		code                                   int
		mentions                               string
	}{
		{"join token", s.JoinToken, http.MethodPost, cms, "application/yaml", 403, "node-join may not create configmaps"},
		{"admin", s.AdminToken, http.MethodPost, cms, "application/yaml", 413, "expands to more than"},
		// The patch handler cuts the content type at its first ';'
		// rather than parsing it: parameters a strict parser refuses
		// must not hide the YAML from the bound.
		{"apply with a stray parameter", s.AdminToken, http.MethodPatch, cms + "/bomb?fieldManager=m", "application/apply-patch+yaml; x", 413, "expands to more than"},
		{"apply with a bare parameter", s.AdminToken, http.MethodPatch, cms + "/bomb?fieldManager=m", "application/apply-patch+yaml;charset", 413, "expands to more than"},
		{"apply with a repeated parameter", s.AdminToken, http.MethodPatch, cms + "/bomb?fieldManager=m", "application/apply-patch+yaml; a=1; a=2", 413, "expands to more than"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var code int
			var body string
			alloc := allocatedDuring(func() {
				code, body, _ = c.do(tc.method, tc.path, tc.token, tc.contentType, strings.NewReader(bomb))
			})
			if code != tc.code || !strings.Contains(body, tc.mentions) {
				t.Fatalf("got %d %s; want %d mentioning %q", code, body, tc.code, tc.mentions)
			}
			// The body itself is 1 MB; client and server in one process
			// share the count.
			if alloc > 64<<20 {
				t.Errorf("the process allocated %d MiB while refusing the request", alloc>>20)
			}
		})
	}
	if code, body, _ := c.do(http.MethodGet, "/api/v1/namespaces/default/configmaps/bomb", s.AdminToken, "", nil); code != 404 {
		t.Fatalf("after the attack: %d %s; want the ConfigMap not to exist", code, body)
	}
}

// TestBodyLimits: a body over the limit is a 413 whether or not it says
// its length, never a 400 about a truncated document; a content type the
// server does not speak is a 415.
func TestBodyLimits(t *testing.T) {
	s := apiservertest.StartServer(t)
	c := newRawClient(t, s)
	big := `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"big"},"data":{"k":"` + strings.Repeat("x", 4<<20) + `"}}`
	path := "/api/v1/namespaces/default/configmaps"
	if code, body, _ := c.do(http.MethodPost, path, s.AdminToken, "application/json", strings.NewReader(big)); code != 413 || !strings.Contains(body, "limit is 3145728") {
		t.Errorf("4 MiB body with Content-Length: %d %.200s; want 413 naming the limit", code, body)
	}
	// io.MultiReader hides the length: the body is sent chunked.
	if code, body, _ := c.do(http.MethodPost, path, s.AdminToken, "application/json", io.MultiReader(strings.NewReader(big))); code != 413 {
		t.Errorf("4 MiB chunked body: %d %.200s; want 413", code, body)
	}
	if code, body, _ := c.do(http.MethodPost, path, s.AdminToken, "text/csv", strings.NewReader("a,b")); code != 415 || !strings.Contains(body, "application/json") || !strings.Contains(body, "application/vnd.kubernetes.protobuf") {
		t.Errorf("CSV body: %d %s; want 415 listing what is accepted", code, body)
	}
}

// TestSlowBody: a client that sends headers and then trickles its body
// gets a 408 once the body timeout passes, and one with only the join
// token is refused at once, without the server waiting for its body.
func TestSlowBody(t *testing.T) {
	s := apiservertest.StartServerWith(t, func(cfg *apiserver.Config) { cfg.Limits.BodyTimeout = 500 * time.Millisecond })
	c := newRawClient(t, s)
	path := "/api/v1/namespaces/default/configmaps"
	for _, tc := range []struct {
		name, token string
		code        int
		within      time.Duration
	}{
		{"admin", s.AdminToken, 408, 5 * time.Second},
		{"join token", s.JoinToken, 403, 5 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pr, pw := io.Pipe()
			stop := make(chan struct{})
			defer close(stop)
			go func() { // a byte a second, for a minute
				defer pw.Close()
				pw.Write([]byte(`{"apiVersion":"v1",`))
				for range 60 {
					select {
					case <-stop:
						return
					case <-time.After(time.Second):
						pw.Write([]byte(" "))
					}
				}
			}()
			start := time.Now()
			code, body, _ := c.do(http.MethodPost, path, tc.token, "application/json", pr)
			if code != tc.code || time.Since(start) > tc.within {
				t.Fatalf("trickled body: %d %s after %v; want %d within %v", code, body, time.Since(start), tc.code, tc.within)
			}
		})
	}
}

// TestSlowBodyRefusedOverHTTP1: over HTTP/1.1, where Go's server would
// read on through an unread body to reuse the connection, a request the
// API refuses before its body (no token, the join token) is answered at
// once and the connection closed, however slowly the body comes.
func TestSlowBodyRefusedOverHTTP1(t *testing.T) {
	s := apiservertest.StartServerWith(t, func(cfg *apiserver.Config) { cfg.Limits.BodyTimeout = 10 * time.Second })
	for _, tc := range []struct {
		name, token, status string
	}{
		{"no token", "", "401"},
		{"join token", s.JoinToken, "403"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pool := x509.NewCertPool()
			pool.AppendCertsFromPEM(s.CAPEM)
			conn, err := tls.Dial("tcp", strings.TrimPrefix(s.URL, "https://"), &tls.Config{RootCAs: pool, NextProtos: []string{"http/1.1"}})
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			auth := ""
			if tc.token != "" {
				auth = "Authorization: Bearer " + tc.token + "\r\n"
			}
			fmt.Fprintf(conn, "POST /api/v1/namespaces/default/configmaps HTTP/1.1\r\nHost: skep\r\n%sContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{", auth)
			conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatalf("no answer within 5 s while the body trickles: %v", err)
			}
			resp.Body.Close()
			if !strings.HasPrefix(resp.Status, tc.status) || !resp.Close {
				t.Fatalf("answer %s (Connection: %q); want %s closing the connection", resp.Status, resp.Header.Get("Connection"), tc.status)
			}
		})
	}
}

// TestInFlightLimits: writes beyond the in-flight limit, and watches
// beyond a credential's share, get 429 with Retry-After, and the slots
// come back when the requests end.
func TestInFlightLimits(t *testing.T) {
	s := apiservertest.StartServerWith(t, func(cfg *apiserver.Config) {
		cfg.Limits.WritesInFlight = 2
		cfg.Limits.WatchesPerCredential = 3
		cfg.Limits.BodyTimeout = 3 * time.Second
	})
	c := newRawClient(t, s)
	path := "/api/v1/namespaces/default/configmaps"

	// Two writes whose bodies never finish hold both write slots.
	held := []io.Closer{slowRequest(t, s, s.AdminToken, path), slowRequest(t, s, s.AdminToken, path)}
	cm := `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"generateName":"x-"}}`
	var code int
	var hdr http.Header
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if code, _, hdr = c.do(http.MethodPost, path, s.AdminToken, "application/json", strings.NewReader(cm)); code == 429 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if code != 429 || hdr.Get("Retry-After") == "" {
		t.Fatalf("a third write while two are in flight: %d (Retry-After %q); want 429 with Retry-After", code, hdr.Get("Retry-After"))
	}
	// Reads have slots of their own.
	if code, body, _ := c.do(http.MethodGet, path, s.AdminToken, "", nil); code != 200 {
		t.Fatalf("a list while writes are full: %d %s", code, body)
	}
	for _, h := range held {
		h.Close()
	}
	deadline = time.Now().Add(10 * time.Second)
	for {
		code, body, _ := c.do(http.MethodPost, path, s.AdminToken, "application/json", strings.NewReader(cm))
		if code == 201 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a write after the slow clients left: %d %s; want 201", code, body)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// Watches: three per credential.
	var bodies []io.Closer
	defer func() {
		for _, b := range bodies {
			b.Close()
		}
	}()
	watch := func() *http.Response {
		req, _ := http.NewRequest(http.MethodGet, s.URL+path+"?watch=true", nil)
		req.Header.Set("Authorization", "Bearer "+s.AdminToken)
		resp, err := c.hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	for i := range 3 {
		resp := watch()
		if resp.StatusCode != 200 {
			t.Fatalf("watch %d: %d", i+1, resp.StatusCode)
		}
		bodies = append(bodies, resp.Body)
	}
	resp := watch()
	resp.Body.Close()
	if resp.StatusCode != 429 {
		t.Fatalf("a fourth watch of one credential: %d; want 429", resp.StatusCode)
	}
	bodies[0].Close()
	bodies = bodies[1:]
	deadline = time.Now().Add(5 * time.Second)
	for {
		resp := watch()
		if resp.StatusCode == 200 {
			bodies = append(bodies, resp.Body)
			break
		}
		resp.Body.Close()
		if time.Now().After(deadline) {
			t.Fatalf("a watch after one closed: %d; want 200", resp.StatusCode)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// slowRequest sends a request's headers and the start of its body over
// HTTP/1.1, announcing more, and sends no more until closed.
func slowRequest(t *testing.T, s *apiservertest.Server, token, path string) io.Closer {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(s.CAPEM)
	conn, err := tls.Dial("tcp", strings.TrimPrefix(s.URL, "https://"), &tls.Config{RootCAs: pool, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: skep\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{", path, token)
	return conn
}

// TestSmallerHoles: the smaller defects of the security review, each sent
// as the attacker sent it.
func TestSmallerHoles(t *testing.T) {
	s := apiservertest.StartServer(t)
	c := newRawClient(t, s)
	cms := "/api/v1/namespaces/default/configmaps"
	podAsConfigMap := `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"name":"c","image":"i"}]}}`
	if code, body, _ := c.do(http.MethodPost, cms, s.AdminToken, "application/json", strings.NewReader(podAsConfigMap)); code != 400 || !strings.Contains(body, "Pod") || !strings.Contains(body, "cannot be handled as a ConfigMap") {
		t.Errorf("a Pod POSTed to configmaps: %d %s; want 400", code, body)
	}
	if code, _, _ := c.do(http.MethodGet, cms+"/p", s.AdminToken, "", nil); code != 404 {
		t.Errorf("after the Pod POSTed to configmaps: %d; want no ConfigMap p", code)
	}
	if code, body, _ := c.do(http.MethodGet, "/api/v1/namespaces/*/configmaps", s.AdminToken, "", nil); code != 400 || !strings.Contains(body, "not a valid namespace name") {
		t.Errorf("list in namespace *: %d %s; want 400", code, body)
	}
	for _, name := range []string{"*", ">", "%00", "a=b"} {
		if code, body, _ := c.do(http.MethodGet, cms+"/"+name, s.AdminToken, "", nil); code != 404 {
			t.Errorf("get configmap %q: %d %s; want 404", name, code, body)
		}
	}
	if code, body, _ := c.do(http.MethodGet, cms+"?resourceVersion=abc", s.AdminToken, "", nil); code != 400 {
		t.Errorf("list with resourceVersion=abc: %d %s; want 400", code, body)
	}
	if code, body, _ := c.do(http.MethodDelete, cms+"/x?propagationPolicy=Sideways", s.AdminToken, "", nil); code != 422 || !strings.Contains(body, "propagationPolicy") || !strings.Contains(body, "Sideways") {
		t.Errorf("delete with propagationPolicy=Sideways: %d %s; want 422 naming the field and value, as Kubernetes answers", code, body)
	}
	// A pod's spec is what was admitted: only images, the deadline and
	// added tolerations change after creation.
	pod := `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"bound"},"spec":{"nodeName":"node-a","containers":[{"name":"c","image":"skep/echo:1","command":["%s"]}]}}`
	code, body, _ := c.do(http.MethodPost, "/api/v1/namespaces/default/pods", s.AdminToken, "application/json", strings.NewReader(fmt.Sprintf(pod, "serve")))
	var created struct {
		Metadata struct{ ResourceVersion string }
	}
	if code != 201 || jsonUnmarshal([]byte(body), &created) != nil {
		t.Fatalf("create pod: %d %s", code, body)
	}
	pod = strings.Replace(pod, `"name":"bound"`, `"name":"bound","resourceVersion":"`+created.Metadata.ResourceVersion+`"`, 1)
	changed := fmt.Sprintf(pod, "sh")
	if code, body, _ := c.do(http.MethodPut, "/api/v1/namespaces/default/pods/bound", s.AdminToken, "application/json", strings.NewReader(changed)); code != 422 || !strings.Contains(body, "pod updates may not change fields") {
		t.Errorf("update of a bound pod's command: %d %s; want 422", code, body)
	}
	newImage := strings.Replace(fmt.Sprintf(pod, "serve"), "skep/echo:1", "skep/echo:2", 1)
	if code, body, _ := c.do(http.MethodPut, "/api/v1/namespaces/default/pods/bound", s.AdminToken, "application/json", strings.NewReader(newImage)); code != 200 {
		t.Errorf("update of a bound pod's image: %d %s; want 200", code, body)
	}
	// One node port serves one port of one protocol.
	twice := `{"apiVersion":"v1","kind":"Service","metadata":{"name":"twice"},"spec":{"type":"NodePort","ports":[{"name":"a","port":80,"nodePort":30500},{"name":"b","port":81,"nodePort":30500}]}}`
	if code, body, _ := c.do(http.MethodPost, "/api/v1/namespaces/default/services", s.AdminToken, "application/json", strings.NewReader(twice)); code != 422 || !strings.Contains(body, "spec.ports[1].nodePort") {
		t.Errorf("a Service using one nodePort twice for TCP: %d %s; want 422", code, body)
	}

	// A node's credential learns nothing of other nodes by writing them:
	// 403 whether the node exists or not.
	nodeToken := joinNodeRaw(t, c, s, "node-a")
	if code, body, _ := c.do(http.MethodPost, "/api/v1/nodes", s.AdminToken, "application/json", strings.NewReader(`{"apiVersion":"v1","kind":"Node","metadata":{"name":"node-b"}}`)); code != 201 {
		t.Fatalf("create node-b: %d %s", code, body)
	}
	for _, name := range []string{"node-b", "node-nonexistent"} {
		for _, method := range []string{http.MethodPut, http.MethodDelete} {
			body := `{"apiVersion":"v1","kind":"Node","metadata":{"name":"` + name + `"}}`
			if code, answer, _ := c.do(method, "/api/v1/nodes/"+name, nodeToken, "application/json", strings.NewReader(body)); code != 403 {
				t.Errorf("%s node %s with node-a's credential: %d %s; want 403", method, name, code, answer)
			}
		}
	}
}

// joinNodeRaw gets a node credential the way an agent does.
func joinNodeRaw(t *testing.T, c *rawClient, s *apiservertest.Server, name string) string {
	t.Helper()
	code, body, _ := c.do(http.MethodPost, "/skep/v1/join", s.JoinToken, "application/json", strings.NewReader(`{"nodeName":"`+name+`","password":"test-password-of-`+name+`"}`))
	if code != 200 {
		t.Fatalf("join as %s: %d %s", name, code, body)
	}
	var resp struct{ Token string }
	if err := jsonUnmarshal([]byte(body), &resp); err != nil || resp.Token == "" {
		t.Fatalf("join answer %s: %v", body, err)
	}
	return resp.Token
}

// TestTLSRefusesCBC: the API server does not negotiate the CBC-SHA suites
// Go still offers on TLS 1.2 by default.
func TestTLSRefusesCBC(t *testing.T) {
	s := apiservertest.StartServer(t)
	host := strings.TrimPrefix(s.URL, "https://")
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(s.CAPEM)
	for _, suite := range []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA, tls.TLS_RSA_WITH_AES_128_CBC_SHA} {
		conn, err := tls.Dial("tcp", host, &tls.Config{RootCAs: pool, MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{suite}})
		if err == nil {
			conn.Close()
			t.Errorf("TLS 1.2 with %s: handshake succeeded; want it refused", tls.CipherSuiteName(suite))
		}
	}
	conn, err := tls.Dial("tcp", host, &tls.Config{RootCAs: pool, MaxVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatalf("TLS 1.2 with Go's client defaults: %v", err)
	}
	if st := conn.ConnectionState(); !strings.Contains(tls.CipherSuiteName(st.CipherSuite), "GCM") && !strings.Contains(tls.CipherSuiteName(st.CipherSuite), "CHACHA20") {
		t.Errorf("negotiated %s; want an AEAD suite", tls.CipherSuiteName(st.CipherSuite))
	}
	conn.Close()
}

func jsonUnmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }
