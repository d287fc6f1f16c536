// Package clientgo tests skep's API as client-go v0.37 uses it, unchanged
// and with its defaults: shared informers (the WatchList protocol by
// default), typed clients speaking protobuf, and leader election over a
// Lease. It is a package of its own, outside controlplane/apiserver,
// because it only talks HTTPS to a running server, as an operator or
// controller written against Kubernetes would.
package clientgo

import (
	"net/http"
	"strings"
	"sync"
	"testing"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/skep-io/skep/controlplane/apiserver/apiservertest"
)

// start runs a skep API server and returns a client-go clientset for its
// admin, and the requests that clientset sent.
func start(t *testing.T) (*apiservertest.Server, kubernetes.Interface, *requestLog) {
	t.Helper()
	s := apiservertest.StartServer(t)
	log := &requestLog{}
	cs, err := kubernetes.NewForConfig(restConfig(s, log))
	if err != nil {
		t.Fatal(err)
	}
	return s, cs, log
}

// restConfig is what a kubeconfig for the server's admin would give: its
// address, its CA and the admin's bearer token, nothing else set, so every
// other setting is client-go's default.
func restConfig(s *apiservertest.Server, log *requestLog) *rest.Config {
	return &rest.Config{
		Host:            s.URL,
		BearerToken:     s.AdminToken,
		TLSClientConfig: rest.TLSClientConfig{CAData: s.CAPEM},
		WrapTransport: func(rt http.RoundTripper) http.RoundTripper {
			return &recorder{next: rt, log: log}
		},
	}
}

// exchange is one request as it went on the wire, with its answer's
// status and content type.
type exchange struct {
	Method, Path, Query string
	ContentType         string // the request body's
	Status              int
	RespContentType     string
}

// requestLog keeps what the clients sent, so a test can check the
// encodings and parameters client-go really used.
type requestLog struct {
	mu  sync.Mutex
	all []exchange
}

func (l *requestLog) add(e exchange) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.all = append(l.all, e)
}

// find returns the exchanges whose method is method and whose path
// contains path.
func (l *requestLog) find(method, path string) []exchange {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []exchange
	for _, e := range l.all {
		if e.Method == method && strings.Contains(e.Path, path) {
			out = append(out, e)
		}
	}
	return out
}

type recorder struct {
	next http.RoundTripper
	log  *requestLog
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	e := exchange{Method: req.Method, Path: req.URL.Path, Query: req.URL.RawQuery, ContentType: req.Header.Get("Content-Type")}
	resp, err := r.next.RoundTrip(req)
	if resp != nil {
		e.Status = resp.StatusCode
		e.RespContentType = resp.Header.Get("Content-Type")
	}
	r.log.add(e)
	return resp, err
}
