// Package apiservertest runs a real API server on an embedded NATS for
// tests: the store under t.TempDir(), everything stopped in t.Cleanup.
package apiservertest

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net/http/httptest"
	"testing"

	"github.com/skep-io/skep/controlplane/apiserver"
	"github.com/skep-io/skep/controlplane/client"
	"github.com/skep-io/skep/controlplane/store"
	"github.com/skep-io/skep/controlplane/store/storetest"
)

// Server is a running test API server.
type Server struct {
	*apiserver.Server
	// URL is the HTTPS address of the API; AdminToken and JoinToken
	// authenticate against it, CAPEM verifies it.
	URL        string
	CAPEM      []byte
	AdminToken string
	JoinToken  string
}

// Start runs an API server and returns an in-process client with the
// admin's rights.
func Start(t testing.TB) client.Interface {
	return StartServer(t).Client()
}

// StartServer runs an API server, also over HTTPS on loopback.
func StartServer(t testing.TB) *Server {
	t.Helper()
	return StartServerOn(t, storetest.Open(t), nil)
}

// StartServerWith runs an API server whose config configure changes
// first (limits, say); nil changes nothing.
func StartServerWith(t testing.TB, configure func(*apiserver.Config)) *Server {
	t.Helper()
	return StartServerOn(t, storetest.Open(t), configure)
}

// StartServerOn runs an API server on st, as StartServerWith does: several
// on one store are the API servers of an HA set.
func StartServerOn(t testing.TB, st *store.Store, configure func(*apiserver.Config)) *Server {
	t.Helper()
	s := &Server{AdminToken: "admin-token", JoinToken: "join-token"}
	cfg := apiserver.Config{AdminToken: s.AdminToken, JoinToken: s.JoinToken, Logger: slog.New(slog.DiscardHandler)}
	if configure != nil {
		configure(&cfg)
	}
	var err error
	s.Server, err = apiserver.New(st, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Bootstrap(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	h, err := s.Handler(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewUnstartedServer(h)
	ts.EnableHTTP2 = true
	// The server's own TLS settings, with httptest's certificate.
	ts.TLS = apiserver.TLSConfig(tls.Certificate{})
	ts.TLS.Certificates = nil
	ts.StartTLS()
	t.Cleanup(ts.Close)
	s.URL = ts.URL
	s.CAPEM = certPEM(ts)
	return s
}
