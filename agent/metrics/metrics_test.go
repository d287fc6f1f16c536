package metrics

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func testRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "skep_test_events_total", Help: "Events of the test."})
	c.Add(3)
	reg.MustRegister(c)
	return reg
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read %s: %v", url, err)
	}
	return resp.StatusCode, string(body)
}

// serve runs ServeListener on a loopback port the kernel picks and returns
// the base URL and the channel its result arrives on.
func serve(t *testing.T, ctx context.Context, reg *prometheus.Registry) (string, <-chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- ServeListener(ctx, ln, reg, quiet()) }()
	return "http://" + ln.Addr().String(), done
}

func TestServeMetricsUntilCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	base, done := serve(t, ctx, testRegistry())

	code, body := get(t, base+"/metrics")
	if code != http.StatusOK || !strings.Contains(body, "skep_test_events_total 3") {
		t.Fatalf("GET /metrics: %d\n%s\nwant 200 with skep_test_events_total 3", code, body)
	}
	if code, _ := get(t, base+"/"); code != http.StatusNotFound {
		t.Errorf("GET /: %d, want 404 (only /metrics is served)", code)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("ServeListener after cancel: %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ServeListener did not return after its context ended")
	}
	if c, err := net.DialTimeout("tcp", strings.TrimPrefix(base, "http://"), time.Second); err == nil {
		c.Close()
		t.Errorf("%s still accepts connections after the server stopped", base)
	}
}

// TestServeFailingCollector: one collector that fails does not hide the
// others.
func TestServeFailingCollector(t *testing.T) {
	reg := testRegistry()
	reg.MustRegister(failing{prometheus.NewDesc("skep_test_broken", "Always fails.", nil, nil)})
	ctx, cancel := context.WithCancel(t.Context())
	base, done := serve(t, ctx, reg)
	code, body := get(t, base+"/metrics")
	if code != http.StatusOK || !strings.Contains(body, "skep_test_events_total 3") {
		t.Errorf("GET /metrics with a failing collector: %d\n%s\nwant 200 with the healthy metrics", code, body)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("ServeListener after cancel: %v", err)
	}
}

type failing struct{ desc *prometheus.Desc }

func (f failing) Describe(ch chan<- *prometheus.Desc) { ch <- f.desc }
func (f failing) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.NewInvalidMetric(f.desc, io.ErrUnexpectedEOF)
}

func TestServeAddress(t *testing.T) {
	// A port that was free a moment ago; Serve listens on it by address.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	addr := ln.Addr().String()
	ln.Close()

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, addr, testRegistry(), quiet()) }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			break
		}
		select {
		case err := <-done:
			t.Fatalf("Serve on %s: %v", addr, err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("Serve never listened on %s", addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code, body := get(t, "http://"+addr+"/metrics"); code != http.StatusOK || !strings.Contains(body, "skep_test_events_total 3") {
		t.Errorf("GET /metrics: %d\n%s", code, body)
	}

	// The same address again cannot be listened on: an error, at once.
	if err := Serve(t.Context(), addr, testRegistry(), quiet()); err == nil || !strings.Contains(err.Error(), addr) {
		t.Errorf("Serve on a taken address: %v, want an error naming %s", err, addr)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Serve after cancel: %v", err)
	}
	if err := Serve(t.Context(), "127.0.0.1:not-a-port", testRegistry(), quiet()); err == nil {
		t.Error("Serve on a malformed address succeeded")
	}
}
