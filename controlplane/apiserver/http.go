package apiserver

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/component-base/metrics/legacyregistry"

	"github.com/skep-io/skep/controlplane/api"
	"github.com/skep-io/skep/controlplane/client"
)

// Handler serves the API until ctx ends: the Kubernetes API through the
// generic API server (generic.go), and skep's own paths (join, renewal,
// the CA, metrics, and the streams to agents) beside it.
func (s *Server) Handler(ctx context.Context) (http.Handler, error) {
	kube, err := s.genericServer(ctx)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	kube = s.boundBody(kube)
	mux.Handle("/", kube)
	// Health is open to anyone, as kube-apiserver's is to anonymous
	// users.
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	mux.HandleFunc("/livez", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		if err := s.reg.store.Ping(r.Context()); err != nil {
			http.Error(w, "store: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ok")
	})
	mux.Handle("/metrics", s.authenticated(func(w http.ResponseWriter, r *http.Request, id Identity) {
		if !id.Admin {
			writeError(w, refuseUnread(w, r, apierrors.NewForbidden(gr(api.MustLookup("nodes")), "metrics", errors.New("only the admin reads metrics"))))
			return
		}
		// skep's metrics and the generic server's (apiserver_*, the
		// watch cache's) in one answer.
		promhttp.HandlerFor(prometheus.Gatherers{s.metrics.reg, legacyregistry.DefaultGatherer}, promhttp.HandlerOpts{}).ServeHTTP(w, r)
	}))
	mux.Handle("/skep/v1/join", s.authenticated(s.join))
	mux.Handle(client.RenewPath, s.authenticated(s.renew))
	mux.Handle(client.ServingCertificatePath, s.authenticated(s.servingCertificate))
	// The CA is public: an agent fetches it before it trusts the server and
	// checks it against the hash its join token carries, as k3s does.
	mux.HandleFunc("/cacerts", func(w http.ResponseWriter, r *http.Request) { w.Write(s.caPEM) })
	// nodes/NAME/proxy is skep's path to agents (nodeaccess.go); pods'
	// logs, exec, attach and port-forward are the generic server's
	// (podstreams.go).
	nodeProxy := s.authenticated(s.serveNodeProxyPath)
	streams := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, ok := parseNodeProxyPath(r.URL.Path); ok {
			nodeProxy.ServeHTTP(w, r)
			return
		}
		kube.ServeHTTP(w, r)
	})
	mux.Handle("/api/", streams)
	mux.Handle("/apis/", streams)
	return mux, nil
}

func (s *Server) authenticated(h func(http.ResponseWriter, *http.Request, Identity)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, err := s.auth.authenticate(r.Context(), r.Header.Get("Authorization"))
		if err != nil {
			writeError(w, refuseUnread(w, r, apierrors.NewUnauthorized("a valid bearer token is required")))
			return
		}
		h(w, r, id)
	})
}

// serveNodeProxyPath serves nodes/NAME/proxy.
func (s *Server) serveNodeProxyPath(w http.ResponseWriter, r *http.Request, id Identity) {
	a, _ := parseNodeProxyPath(r.URL.Path)
	// A proxied request streams for as long as it lasts: no latency is
	// observed for it, as for watches.
	rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
	defer func() {
		s.metrics.requests.WithLabelValues(strings.ToLower(r.Method), "nodes/proxy", strconv.Itoa(rec.code)).Inc()
	}()
	if err := s.serveNodeProxy(rec, r, id, a); err != nil {
		writeError(rec, refuseUnread(rec, r, err)) // refused before anything was proxied
	}
}

// refuseUnread answers a request refused before its body was read on a
// connection that then closes: otherwise Go's server reads up to 256 KiB
// of the unread body to keep the connection, which a client trickling its
// body turns into a wait as long as it likes.
func refuseUnread(w http.ResponseWriter, r *http.Request, err error) error {
	if r.ContentLength != 0 {
		w.Header().Set("Connection", "close")
	}
	return err
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, err error) {
	var se apierrors.APIStatus
	if !errors.As(err, &se) {
		se = apierrors.NewInternalError(err)
	}
	st := se.Status()
	st.APIVersion, st.Kind = "v1", "Status"
	if st.Details != nil && st.Details.RetryAfterSeconds > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int(st.Details.RetryAfterSeconds)))
	}
	writeJSON(w, int(st.Code), st)
}

type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.code = code
	r.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the connection, to hijack it
// for an upgraded exec stream.
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

func (r *statusRecorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}
