package node

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	restclient "k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/client-go/transport/spdy"
	utilexec "k8s.io/client-go/util/exec"
)

// streamScript runs in the test pod: two web servers bound to the pod's
// loopback only, reachable from the node by port forwarding alone, and a
// server that answers with the length of what it read to the end. It
// writes "tick" to its output while /tmp/tick exists, for attach.
const streamScript = `echo started
mkdir -p /www1 /www2 && echo one > /www1/index.html && echo two > /www2/index.html
httpd -p 127.0.0.1:8080 -h /www1 && httpd -p 127.0.0.1:8081 -h /www2
nc -ll -p 7000 -e wc -c &
while true; do [ -e /tmp/tick ] && echo tick; sleep 0.2; done`

// execURL is kubelet's exec URL for the test pod, as the API server's
// proxy sends it.
func (env *streamEnv) execURL(stdin, tty bool, cmd ...string) *url.URL {
	q := url.Values{"command": cmd, "output": {"1"}, "podUID": {string(env.pod.UID)}}
	if stdin {
		q.Set("input", "1")
	}
	if tty {
		q.Set("tty", "1")
	} else {
		q.Set("error", "1")
	}
	u, _ := url.Parse(env.url + "/exec/default/web/c?" + q.Encode())
	return u
}

// executors are the two ways kubectl's exec reaches a kubelet: SPDY, and
// WebSocket (v4.channel.k8s.io, what a kubelet speaks itself).
func (env *streamEnv) executors(t *testing.T, stdin, tty bool, cmd ...string) map[string]remotecommand.Executor {
	t.Helper()
	u := env.execURL(stdin, tty, cmd...)
	spdyExec, err := remotecommand.NewSPDYExecutor(env.cfg, "POST", u)
	if err != nil {
		t.Fatal(err)
	}
	wsExec, err := remotecommand.NewWebSocketExecutorForProtocols(env.cfg, "GET", u.String(), "v4.channel.k8s.io")
	if err != nil {
		t.Fatal(err)
	}
	return map[string]remotecommand.Executor{"spdy": spdyExec, "websocket": wsExec}
}

func TestStreamingEndpoint(t *testing.T) {
	env := startStreamEnv(t, streamScript)
	// A hung stream fails the test, and the cleanup still runs.
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	// The container runs before its servers listen.
	for _, server := range [][]string{
		{"httpd", "-p", "127.0.0.1:8080", "-h", "/www1"},
		{"httpd", "-p", "127.0.0.1:8081", "-h", "/www2"},
		{"nc", "-ll", "-p", "7000", "-e", "wc", "-c"},
	} {
		waitFor(t, 30*time.Second, strings.Join(server, " ")+" running", func() bool { return len(processesRunning(server...)) == 1 })
	}

	t.Run("exec passes stdin's end", func(t *testing.T) {
		// SPDY only: WebSocket v4 has no way to close stdin (v5's CLOSE,
		// which the API server turns into SPDY's).
		ex := env.executors(t, true, false, "sh", "-c", "cat; echo to-stderr >&2")["spdy"]
		var out, errOut bytes.Buffer
		err := ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdin: strings.NewReader("hello\nworld\n"), Stdout: &out, Stderr: &errOut})
		if err != nil || out.String() != "hello\nworld\n" || errOut.String() != "to-stderr\n" {
			t.Errorf("stdout %q stderr %q err %v; want %q and %q", out.String(), errOut.String(), err, "hello\nworld\n", "to-stderr\n")
		}
	})

	t.Run("exec passes stdin, stdout and stderr", func(t *testing.T) {
		for name, ex := range env.executors(t, true, false, "sh", "-c", "head -c 12; echo to-stderr >&2") {
			var out, errOut bytes.Buffer
			err := ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdin: strings.NewReader("hello\nworld\n"), Stdout: &out, Stderr: &errOut})
			if err != nil {
				t.Errorf("%s: %v", name, err)
			}
			if out.String() != "hello\nworld\n" || errOut.String() != "to-stderr\n" {
				t.Errorf("%s: stdout %q stderr %q; want %q and %q", name, out.String(), errOut.String(), "hello\nworld\n", "to-stderr\n")
			}
		}
	})

	t.Run("exec exit code", func(t *testing.T) {
		for name, ex := range env.executors(t, true, false, "sh", "-c", "exit 3") {
			err := ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdin: strings.NewReader(""), Stdout: io.Discard, Stderr: io.Discard})
			var exit utilexec.ExitError
			if !errors.As(err, &exit) || exit.ExitStatus() != 3 {
				t.Errorf("%s: err %v (%T); want an exit error with code 3", name, err, err)
			}
		}
	})

	t.Run("exec 50 MiB byte-exact", func(t *testing.T) {
		blob := make([]byte, 50<<20)
		rand.Read(blob)
		want := sha256.Sum256(blob)
		for name, ex := range env.executors(t, true, false, "sh", "-c", fmt.Sprintf("head -c %d > /tmp/blob && cat /tmp/blob", len(blob))) {
			h := sha256.New()
			n := &countWriter{w: h}
			if err := ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdin: bytes.NewReader(blob), Stdout: n, Stderr: os.Stderr}); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if got := h.Sum(nil); !bytes.Equal(got, want[:]) {
				t.Errorf("%s: %d bytes back with sha256 %x; sent %d with %x", name, n.n, got, len(blob), want)
			}
		}
	})

	t.Run("exec with a tty and a resize", func(t *testing.T) {
		// The size comes on its own stream: poll until the terminal has it.
		script := `for i in $(seq 100); do [ "$(stty size 2>/dev/null)" = "45 123" ] && break; sleep 0.05; done; stty size; [ -t 0 ] && echo tty`
		for name, ex := range env.executors(t, true, true, "sh", "-c", script) {
			var out bytes.Buffer
			sizes := &sizeQueue{sizes: []remotecommand.TerminalSize{{Width: 123, Height: 45}}}
			err := ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdin: &blockingReader{ctx: ctx}, Stdout: &out, Tty: true, TerminalSizeQueue: sizes})
			if err != nil {
				t.Errorf("%s: %v", name, err)
			}
			// A terminal ends its lines with \r\n.
			if got := out.String(); got != "45 123\r\ntty\r\n" {
				t.Errorf("%s: output %q; want %q", name, got, "45 123\r\ntty\r\n")
			}
		}
	})

	t.Run("client going away kills the command", func(t *testing.T) {
		for name, ex := range env.executors(t, true, false, "sleep", "987654") {
			cctx, cancel := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() {
				done <- ex.StreamWithContext(cctx, remotecommand.StreamOptions{Stdin: &blockingReader{ctx: cctx}, Stdout: io.Discard, Stderr: io.Discard})
			}()
			waitFor(t, 10*time.Second, name+": sleep 987654 running", func() bool { return len(processesRunning("sleep", "987654")) == 1 })
			cancel()
			<-done
			waitFor(t, 10*time.Second, name+": sleep 987654 gone after the client went", func() bool { return len(processesRunning("sleep", "987654")) == 0 })
			// And the container's process list agrees.
			var ps bytes.Buffer
			ex := env.executors(t, false, false, "ps", "-o", "args")["spdy"]
			if err := ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdout: &ps, Stderr: io.Discard}); err != nil {
				t.Fatal(err)
			}
			if strings.Contains(ps.String(), "987654") {
				t.Errorf("%s: the container still runs the exec'd sleep:\n%s", name, ps.String())
			}
		}
	})

	t.Run("port forward to two ports over many connections", func(t *testing.T) {
		ports := env.forward(t, "0:8080", "0:8081")
		var wg sync.WaitGroup
		errs := make(chan error, 20)
		for i := range 20 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				// Each request on its own connection: a stream of its own.
				c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
				port, want := ports[0], "one\n"
				if i%2 == 1 {
					port, want = ports[1], "two\n"
				}
				resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d/index.html", port))
				if err != nil {
					errs <- fmt.Errorf("request %d: %w", i, err)
					return
				}
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != 200 || string(body) != want {
					errs <- fmt.Errorf("request %d to %d: %d %q %v; want 200 %q", i, port, resp.StatusCode, body, err, want)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})

	t.Run("port forward passes the client's half-close", func(t *testing.T) {
		ports := env.forward(t, "0:7000")
		conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", ports[0]))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		msg := strings.Repeat("half-close ", 10000)
		if _, err := io.WriteString(conn, msg); err != nil {
			t.Fatal(err)
		}
		// The server answers only once it has read to the end.
		conn.(*net.TCPConn).CloseWrite()
		answer, err := io.ReadAll(conn)
		if got := strings.TrimSpace(string(answer)); err != nil || got != fmt.Sprint(len(msg)) {
			t.Errorf("answer %q, %v; want the length %d", answer, err, len(msg))
		}
	})

	t.Run("port forward over WebSocket v4", func(t *testing.T) {
		// kubelet's own WebSocket port forwarding: the ports in the query,
		// two channels per port (data, error), each opening with the port.
		d := websocket.Dialer{TLSClientConfig: env.tlsConfig(t, env.cfg), Subprotocols: []string{"v4.channel.k8s.io"}, HandshakeTimeout: 10 * time.Second}
		u := strings.Replace(env.url, "https://", "wss://", 1) + "/portForward/default/web?port=8080&port=8081&podUID=" + string(env.pod.UID)
		conn, resp, err := d.DialContext(ctx, u, nil)
		if err != nil {
			t.Fatalf("dial %s: %v", u, err)
		}
		defer conn.Close()
		resp.Body.Close()
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		for _, ch := range []byte{2, 0} { // channel 2: port 8081's data; 0: 8080's
			if err := conn.WriteMessage(websocket.BinaryMessage, append([]byte{ch}, "GET /index.html HTTP/1.0\r\n\r\n"...)); err != nil {
				t.Fatal(err)
			}
		}
		got := map[byte][]byte{}
		opened := map[byte]bool{}
		for !bytes.HasSuffix(got[0], []byte("one\n")) || !bytes.HasSuffix(got[2], []byte("two\n")) {
			_, msg, err := conn.ReadMessage()
			if err != nil {
				t.Fatalf("read: %v; got %q", err, got)
			}
			if len(msg) == 0 {
				continue
			}
			ch, data := msg[0], msg[1:]
			if !opened[ch] { // the port, little-endian, opens each channel
				opened[ch] = true
				if want := map[byte]int{0: 8080, 1: 8080, 2: 8081, 3: 8081}[ch]; len(data) < 2 || int(data[0])|int(data[1])<<8 != want {
					t.Fatalf("channel %d opened with %v; want port %d", ch, data, want)
				}
				data = data[2:]
			}
			if ch == 1 || ch == 3 {
				if len(data) > 0 {
					t.Fatalf("error channel %d: %s", ch, data)
				}
				continue
			}
			got[ch] = append(got[ch], data...)
		}
		if !bytes.HasPrefix(got[0], []byte("HTTP/1.")) || !bytes.Contains(got[0], []byte(" 200 ")) {
			t.Errorf("port 8080 answered %q", got[0])
		}
	})

	t.Run("port forward to a closed port reports it", func(t *testing.T) {
		ports := env.forward(t, "0:9999")
		resp, err := (&http.Client{Timeout: 10 * time.Second}).Get(fmt.Sprintf("http://127.0.0.1:%d/", ports[0]))
		if err == nil {
			resp.Body.Close()
			t.Fatalf("a request to a port nothing listens on got %d", resp.StatusCode)
		}
	})

	t.Run("container logs with options", func(t *testing.T) {
		for query, want := range map[string]string{
			"tailLines=1":                 "started\n",
			"limitBytes=3":                "sta",
			"follow=false&previous=false": "started\n",
		} {
			code, body := env.get(t, env.cfg, "/containerLogs/default/web/c?"+query)
			if code != 200 || body != want {
				t.Errorf("containerLogs?%s: %d %q; want 200 %q", query, code, body, want)
			}
		}
		// kubelet's timestamps: RFC 3339 with nanoseconds, then a space.
		code, body := env.get(t, env.cfg, "/containerLogs/default/web/c?timestamps=true&sinceSeconds=3600")
		ts, line, _ := strings.Cut(body, " ")
		if _, err := time.Parse(time.RFC3339Nano, ts); code != 200 || err != nil || line != "started\n" {
			t.Errorf("containerLogs?timestamps=true&sinceSeconds=3600: %d %q; want 200 and one timestamped line", code, body)
		}
		for query, field := range map[string]string{
			"tailLines=x":         "tailLines",
			"tailLines=-1":        "tailLines",
			"sinceSeconds=0":      "sinceSeconds",
			"limitBytes=0":        "limitBytes",
			"follow=maybe":        "follow",
			"sinceTime=yesterday": "sinceTime",
			"sinceSeconds=5&sinceTime=2026-01-02T15:04:05Z": "sinceTime",
			"timestamps=nope": "timestamps",
			"previous=2":      "previous",
		} {
			code, body := env.get(t, env.cfg, "/containerLogs/default/web/c?"+query)
			st := decodeStatus(t, body)
			if code != 400 || !strings.Contains(st.Message, field) {
				t.Errorf("containerLogs?%s: %d %q; want 400 naming %s", query, code, st.Message, field)
			}
		}
	})

	t.Run("attach reads the container's output", func(t *testing.T) {
		// After the logs test, which wants the log without ticks.
		var errOut bytes.Buffer
		touch := env.executors(t, false, false, "touch", "/tmp/tick")["spdy"]
		if err := touch.StreamWithContext(ctx, remotecommand.StreamOptions{Stdout: io.Discard, Stderr: &errOut}); err != nil {
			t.Fatalf("touch /tmp/tick: %v %s", err, errOut.String())
		}
		q := url.Values{"output": {"1"}, "error": {"1"}, "podUID": {string(env.pod.UID)}}
		u, _ := url.Parse(env.url + "/attach/default/web/c?" + q.Encode())
		spdyAttach, err := remotecommand.NewSPDYExecutor(env.cfg, "POST", u)
		if err != nil {
			t.Fatal(err)
		}
		wsAttach, err := remotecommand.NewWebSocketExecutorForProtocols(env.cfg, "GET", u.String(), "v4.channel.k8s.io")
		if err != nil {
			t.Fatal(err)
		}
		for name, ex := range map[string]remotecommand.Executor{"spdy": spdyAttach, "websocket": wsAttach} {
			actx, stop := context.WithTimeout(ctx, 10*time.Second)
			seen := &untilWriter{want: []byte("tick\n"), found: stop}
			err := ex.StreamWithContext(actx, remotecommand.StreamOptions{Stdout: seen, Stderr: io.Discard})
			stop()
			if !seen.seen() {
				t.Errorf("%s: attach output %q, err %v; want ticks", name, seen.buf.String(), err)
			}
		}
	})

	t.Run("only the API server is served", func(t *testing.T) {
		other := env.clientConfig(t, "someone-else")
		noCert := env.clientConfig(t, "x")
		noCert.CertData, noCert.KeyData = nil, nil
		for name, c := range map[string]*restclient.Config{"someone-else": other, "no certificate": noCert} {
			code, body := env.get(t, c, "/containerLogs/default/web/c")
			if st := decodeStatus(t, body); code != 401 || st.Reason != metav1.StatusReasonUnauthorized {
				t.Errorf("%s: containerLogs: %d %q; want 401 Unauthorized", name, code, body)
			}
			ex, err := remotecommand.NewSPDYExecutor(c, "POST", env.execURL(false, false, "true"))
			if err != nil {
				t.Fatal(err)
			}
			err = ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdout: io.Discard, Stderr: io.Discard})
			// client-go reports the Status's message, as kubectl shows it.
			if err == nil || !apierrors.IsUnauthorized(err) && !strings.Contains(err.Error(), "the agent answers only") {
				t.Errorf("%s: exec: %v; want the 401's message", name, err)
			}
		}
	})

	t.Run("a replaced pod is not found", func(t *testing.T) {
		code, body := env.get(t, env.cfg, "/containerLogs/default/web/c?podUID=another-uid")
		if st := decodeStatus(t, body); code != 404 || st.Reason != metav1.StatusReasonNotFound {
			t.Errorf("podUID of another pod: %d %q; want 404 NotFound", code, body)
		}
	})
}

// forward forwards local ports to the pod's with client-go's port
// forwarder over SPDY, as kubectl port-forward does, until the test ends,
// and returns the local ports in order.
func (env *streamEnv) forward(t testing.TB, specs ...string) []uint16 {
	t.Helper()
	transport, upgrader, err := spdy.RoundTripperFor(env.cfg)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(env.url + "/portForward/default/web?podUID=" + string(env.pod.UID))
	dialer := spdy.NewDialer(upgrader, &http.Client{Transport: transport}, "POST", u)
	stop, ready := make(chan struct{}), make(chan struct{})
	fw, err := portforward.NewOnAddresses(dialer, []string{"127.0.0.1"}, specs, stop, ready, io.Discard, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- fw.ForwardPorts() }()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("port forward: %v", err)
	}
	t.Cleanup(func() { close(stop); <-done })
	fwd, err := fw.GetPorts()
	if err != nil {
		t.Fatal(err)
	}
	var local []uint16
	for _, p := range fwd {
		local = append(local, p.Local)
	}
	return local
}

// get sends a plain GET to the endpoint with cfg's certificate.
func (env *streamEnv) get(t *testing.T, cfg *restclient.Config, path string) (int, string) {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: env.tlsConfig(t, cfg)}, Timeout: 10 * time.Second}
	resp, err := c.Get(env.url + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func decodeStatus(t *testing.T, body string) metav1.Status {
	var st metav1.Status
	if err := json.Unmarshal([]byte(body), &st); err != nil || st.Kind != "Status" {
		t.Errorf("not a Status: %q", body)
	}
	return st
}

// processesRunning lists the host's processes whose command line is args.
func processesRunning(args ...string) []int {
	want := []byte(strings.Join(args, "\x00") + "\x00")
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		var pid int
		if _, err := fmt.Sscanf(e.Name(), "%d", &pid); err != nil {
			continue
		}
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err == nil && bytes.Equal(cmdline, want) {
			pids = append(pids, pid)
		}
	}
	return pids
}

func waitFor(t *testing.T, d time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("not %s after %s", what, d)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// sizeQueue hands out its sizes, then blocks until the stream ends.
type sizeQueue struct {
	mu    sync.Mutex
	sizes []remotecommand.TerminalSize
}

func (q *sizeQueue) Next() *remotecommand.TerminalSize {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.sizes) == 0 {
		return nil // no more: the client stops sending sizes
	}
	s := q.sizes[0]
	q.sizes = q.sizes[1:]
	return &s
}

// blockingReader is a stdin that sends nothing until ctx ends, as a
// terminal no one types in.
type blockingReader struct{ ctx context.Context }

func (b *blockingReader) Read([]byte) (int, error) {
	<-b.ctx.Done()
	return 0, io.EOF
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// untilWriter keeps what it is written and calls found once want shows.
type untilWriter struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	want  []byte
	found func()
}

func (u *untilWriter) Write(p []byte) (int, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.buf.Write(p)
	if bytes.Contains(u.buf.Bytes(), u.want) {
		u.found()
	}
	return len(p), nil
}

func (u *untilWriter) seen() bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return bytes.Contains(u.buf.Bytes(), u.want)
}
