package node

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skep-io/skep/controlplane/client"
)

// FuzzEndpoint sends the agent's endpoint arbitrary methods, paths,
// queries and bodies, from the API server's certificate and from others:
// it must answer every one with a Kubernetes Status (or a plain 404/405
// from routing), never panic, and never serve a client that is not the API
// server.
func FuzzEndpoint(f *testing.F) {
	f.Add("GET", "/containerLogs/default/web/c", "follow=true&tailLines=10", "", true)
	f.Add("GET", "/containerLogs/default/web/c", "sinceSeconds=0&sinceTime=x&limitBytes=-1&timestamps=maybe", "", true)
	f.Add("POST", "/exec/default/web/c", "command=sh&input=1&output=1&tty=1", "", true)
	f.Add("GET", "/attach/default/web/c", "output=1&error=1", "", true)
	f.Add("POST", "/portForward/default/web", "port=8080&port=x", "", true)
	f.Add("POST", "/images", "", "not a tar", true)
	f.Add("GET", "/containerLogs/default/web/c", "tailLines=-1", "", false)
	f.Add("GET", "/healthz", "", "", true)
	ep := &endpoint{node: "node-1", log: slog.New(slog.DiscardHandler)}
	h := ep.handler()
	f.Fuzz(func(t *testing.T, method, path, query, body string, fromAPIServer bool) {
		if !validMethod(method) || !strings.HasPrefix(path, "/") {
			return
		}
		u := &url.URL{Path: path, RawQuery: query}
		req := httptest.NewRequest(http.MethodGet, "/", strings.NewReader(body))
		req.Method, req.URL, req.RequestURI = method, u, ""
		cn := "someone-else"
		if fromAPIServer {
			cn = client.APIServerClientName
		}
		req.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{{Subject: pkix.Name{CommonName: cn}}}}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if !fromAPIServer && rec.Code != http.StatusUnauthorized {
			t.Fatalf("%s %s from %s: %d; want 401", method, u, cn, rec.Code)
		}
		if rec.Code >= 400 && strings.HasPrefix(rec.Header().Get("Content-Type"), "application/json") {
			var st metav1.Status
			if err := json.Unmarshal(rec.Body.Bytes(), &st); err != nil || st.Kind != "Status" {
				t.Fatalf("%s %s: %d answer is not a Status: %q", method, u, rec.Code, rec.Body.String())
			}
		}
	})
}

func validMethod(m string) bool {
	switch m {
	case http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodPatch, http.MethodHead:
		return true
	}
	return false
}
