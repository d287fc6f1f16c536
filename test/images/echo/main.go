// Command echo answers HTTP requests and UDP datagrams on $PORT (default
// 8080) with one JSON object saying which pod and node answered and which
// client address it saw. The end-to-end tests and benchmarks read these
// answers to tell backends apart and to check source addresses.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// answer is what every request and datagram gets back.
type answer struct {
	Pod    string `json:"pod"`
	Node   string `json:"node"`
	Client string `json:"client"`
	Proto  string `json:"proto"`
	Path   string `json:"path,omitempty"`
}

func main() {
	// As PID 1 of a container, the process ignores SIGTERM unless it
	// handles it.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context) error {
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	pod := os.Getenv("POD_NAME")
	if pod == "" {
		pod, _ = os.Hostname()
	}
	node := os.Getenv("NODE_NAME")
	addr := net.JoinHostPort("", port)

	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen tcp %s: %w", addr, err)
	}
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return fmt.Errorf("listen udp %s: %w", addr, err)
	}
	go serveUDP(pc, pod, node)

	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(answer{Pod: pod, Node: node, Client: r.RemoteAddr, Proto: "http", Path: r.URL.Path})
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	go func() {
		<-ctx.Done()
		pc.Close()
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(shutdownCtx)
	}()
	log.Printf("echo: pod %q node %q serving http and udp on %s", pod, node, addr)
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve http: %w", err)
	}
	return nil
}

// serveUDP answers every datagram with one JSON object, until pc is closed.
func serveUDP(pc net.PacketConn, pod, node string) {
	buf := make([]byte, 64*1024)
	for {
		_, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		reply, _ := json.Marshal(answer{Pod: pod, Node: node, Client: from.String(), Proto: "udp"})
		pc.WriteTo(append(reply, '\n'), from)
	}
}
