package node

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os/exec"
	goruntime "runtime"
	"strconv"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	"k8s.io/client-go/tools/remotecommand"

	"github.com/skep-io/skep/agent/runtime"
)

// benchBytes is what each iteration moves.
const benchBytes = 64 << 20

// BenchmarkExecStdout measures exec's stdout: through the endpoint with
// client-go's SPDY and WebSocket executors, through the runtime alone (no
// streaming protocol), and the same command on the host.
func BenchmarkExecStdout(b *testing.B) {
	env := startStreamEnv(b, streamScript)
	cmd := []string{"head", "-c", strconv.Itoa(benchBytes), "/dev/zero"}
	q := url.Values{"command": cmd, "output": {"1"}, "error": {"1"}, "podUID": {string(env.pod.UID)}}
	u, _ := url.Parse(env.url + "/exec/default/web/c?" + q.Encode())
	spdyExec, err := remotecommand.NewSPDYExecutor(env.cfg, "POST", u)
	if err != nil {
		b.Fatal(err)
	}
	wsExec, err := remotecommand.NewWebSocketExecutorForProtocols(env.cfg, "GET", u.String(), "v4.channel.k8s.io")
	if err != nil {
		b.Fatal(err)
	}
	for name, ex := range map[string]remotecommand.Executor{"endpoint-spdy": spdyExec, "endpoint-websocket": wsExec} {
		b.Run(name, func(b *testing.B) {
			b.SetBytes(benchBytes)
			for b.Loop() {
				n := &countWriter{w: io.Discard}
				if err := ex.StreamWithContext(b.Context(), remotecommand.StreamOptions{Stdout: n, Stderr: io.Discard}); err != nil || n.n != benchBytes {
					b.Fatalf("%d bytes, %v", n.n, err)
				}
			}
		})
	}
	b.Run("runtime", func(b *testing.B) {
		b.SetBytes(benchBytes)
		for b.Loop() {
			n := &countWriter{w: io.Discard}
			code, err := env.rt.ExecWithIO(b.Context(), env.pod.UID, "c", cmd, runtime.ExecIO{Stdout: n})
			if err != nil || code != 0 || n.n != benchBytes {
				b.Fatalf("%d bytes, code %d, %v", n.n, code, err)
			}
		}
	})
	b.Run("host", func(b *testing.B) {
		b.SetBytes(benchBytes)
		for b.Loop() {
			c := exec.Command(cmd[0], cmd[1:]...)
			n := &countWriter{w: io.Discard}
			c.Stdout = n
			if err := c.Run(); err != nil || n.n != benchBytes {
				b.Fatalf("%d bytes, %v", n.n, err)
			}
		}
	})
}

// BenchmarkPortForward measures one forwarded connection downloading a
// file from a web server on the pod's loopback: through client-go's SPDY
// port forwarder and the endpoint, and straight from inside the pod's
// network namespace.
func BenchmarkPortForward(b *testing.B) {
	env := startStreamEnv(b, fmt.Sprintf("mkdir -p /www1 && head -c %d /dev/zero > /www1/big && httpd -p 127.0.0.1:8080 -h /www1; while true; do sleep 1; done", benchBytes))
	// The server starts once the file is written.
	var httpd []int
	for deadline := time.Now().Add(30 * time.Second); len(httpd) == 0; httpd = processesRunning("httpd", "-p", "127.0.0.1:8080", "-h", "/www1") {
		if time.Now().After(deadline) {
			b.Fatal("httpd not running after 30s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	ports := env.forward(b, "0:8080")
	get := func(b *testing.B, dial func() (net.Conn, error)) {
		conn, err := dial()
		if err != nil {
			b.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "GET /big HTTP/1.0\r\nHost: pod\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReaderSize(conn, 64<<10), nil)
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.Copy(io.Discard, resp.Body)
		if err != nil || n != benchBytes {
			b.Fatalf("%d %d bytes, %v", resp.StatusCode, n, err)
		}
	}
	b.Run("endpoint-spdy", func(b *testing.B) {
		b.SetBytes(benchBytes)
		for b.Loop() {
			get(b, func() (net.Conn, error) { return net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", ports[0])) })
		}
	})
	nsPath := fmt.Sprintf("/proc/%d/ns/net", httpd[0])
	b.Run("pod-netns-direct", func(b *testing.B) {
		b.SetBytes(benchBytes)
		for b.Loop() {
			get(b, func() (net.Conn, error) { return dialIn(nsPath, "127.0.0.1:8080") })
		}
	})
}

// dialIn connects to addr from inside the network namespace at nsPath.
func dialIn(nsPath, addr string) (net.Conn, error) {
	type result struct {
		conn net.Conn
		err  error
	}
	done := make(chan result, 1)
	go func() {
		goruntime.LockOSThread() // never unlocked: the thread ends with the goroutine
		ns, err := netns.GetFromPath(nsPath)
		if err != nil {
			done <- result{nil, err}
			return
		}
		defer ns.Close()
		if err := netns.Set(ns); err != nil {
			done <- result{nil, err}
			return
		}
		conn, err := (&net.Dialer{}).DialContext(context.Background(), "tcp", addr)
		done <- result{conn, err}
	}()
	r := <-done
	return r.conn, r.err
}
