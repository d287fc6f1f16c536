// Package metrics serves a node agent's Prometheus metrics over plain HTTP
// at /metrics, as kube-proxy serves its own on --metrics-bind-address.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// shutdownTimeout bounds how long a scrape in flight may delay the stop.
const shutdownTimeout = 5 * time.Second

// Serve listens on addr (host:port, e.g. kube-proxy's 127.0.0.1:10249) and
// serves reg at /metrics until ctx ends. It returns nil once ctx ended it,
// or the error that kept it from serving.
func Serve(ctx context.Context, addr string, reg *prometheus.Registry, log *slog.Logger) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen for metrics on %s: %w", addr, err)
	}
	return ServeListener(ctx, ln, reg, log)
}

// ServeListener is Serve on a listener the caller opened, for a port the
// kernel picks. It closes ln.
func ServeListener(ctx context.Context, ln net.Listener, reg *prometheus.Registry, log *slog.Logger) error {
	if log == nil {
		log = slog.Default()
	}
	errLog := slog.NewLogLogger(log.Handler(), slog.LevelWarn)
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		// A collector that fails (a map that cannot be read) leaves the
		// others to be scraped; the failure is logged.
		ErrorHandling: promhttp.ContinueOnError,
		ErrorLog:      errLog,
	}))
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          errLog,
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	log.Info("serving metrics", "address", "http://"+ln.Addr().String()+"/metrics")

	select {
	case err := <-served:
		return fmt.Errorf("serve metrics: %w", err)
	case <-ctx.Done():
	}
	stop, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	err := srv.Shutdown(stop)
	if serveErr := <-served; !errors.Is(serveErr, http.ErrServerClosed) {
		err = errors.Join(err, serveErr)
	}
	if err != nil {
		return fmt.Errorf("stop metrics server: %w", err)
	}
	return nil
}
