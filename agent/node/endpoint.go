package node

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"

	"github.com/skep-io/skep/agent/runtime"
	"github.com/skep-io/skep/controlplane/client"
	"github.com/skep-io/skep/controlplane/pki"
)

// The agent's HTTPS endpoint is kubelet's port 10250: the API server
// proxies container logs, commands in containers and image imports to it.
// It listens on the node's InternalIP (--agent-port), with a serving
// certificate the API server signed for that address, and answers only a
// client presenting the API server's certificate (pki.APIServerClientName,
// signed by the same node CA); anyone else gets 401.
//
//	GET  /containerLogs/NS/POD/CONTAINER?follow=&previous=&tailLines=&podUID=
//	POST /exec/NS/POD/CONTAINER?command=...&stdin=&podUID=   (upgraded to client.ExecProtocol)
//	POST /images                                             (an image archive as the body)

// endpoint serves the agent's HTTPS API.
type endpoint struct {
	node string
	pods *client.Informer
	log  *slog.Logger
	// rt is set once the pod host is up; until then requests get 503.
	rt atomic.Pointer[runtime.Runtime]
}

// listenEndpoint binds the agent's port on the node's address early, so
// the port (any free one for --agent-port 0) goes into the Node status.
func (a *Agent) listenEndpoint() (net.Listener, error) {
	addr := netip.AddrPortFrom(a.cfg.NodeIP, uint16(a.cfg.AgentPort))
	ln, err := net.Listen("tcp", addr.String())
	if err != nil {
		return nil, fmt.Errorf("--agent-port: listen on %s: %w", addr, err)
	}
	a.agentPort = ln.Addr().(*net.TCPAddr).Port
	return ln, nil
}

// servingTLS has the API server sign a serving certificate for the node's
// address (the key stays in memory and is made anew at every start) and
// returns the endpoint's TLS config.
func (a *Agent) servingTLS(ctx context.Context) (*tls.Config, error) {
	csr, key, err := pki.NewServingRequest(a.cfg.Name, []netip.Addr{a.cfg.NodeIP})
	if err != nil {
		return nil, err
	}
	var resp client.ServingCertificateResponse
	if err := a.hc.Do(ctx, http.MethodPost, client.ServingCertificatePath, client.ServingCertificateRequest{CSR: string(csr)}, &resp); err != nil {
		return nil, fmt.Errorf("get a serving certificate for %s: %w", a.cfg.NodeIP, err)
	}
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode the serving key: %w", err)
	}
	cert, err := tls.X509KeyPair([]byte(resp.Certificate), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}))
	if err != nil {
		return nil, permanent(fmt.Errorf("the serving certificate the API server signed: %w", err))
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(resp.CA)) {
		return nil, permanent(errors.New("the API server sent no node CA with the serving certificate"))
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		// A certificate, when given, must chain to the node CA and be for
		// client use; who it names is checked per request, so that a
		// caller without one gets a 401 rather than a failed handshake.
		ClientCAs:  pool,
		ClientAuth: tls.VerifyClientCertIfGiven,
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"http/1.1"}, // exec hijacks the connection
	}, nil
}

// serveEndpoint serves on ln until ctx ends.
func (a *Agent) serveEndpoint(ctx context.Context, ln net.Listener, tlsCfg *tls.Config, ep *endpoint) {
	srv := &http.Server{
		Handler:           ep.handler(),
		TLSConfig:         tlsCfg,
		TLSNextProto:      map[string]func(*http.Server, *tls.Conn, http.Handler){},
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ErrorLog:          slog.NewLogLogger(a.log.Handler(), slog.LevelDebug),
	}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	a.log.Info("agent endpoint serving", "address", ln.Addr().String())
	if err := srv.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
		a.log.Error("agent endpoint stopped", "err", err)
	}
}

func (ep *endpoint) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /containerLogs/{ns}/{pod}/{container}", ep.logs)
	mux.HandleFunc("POST /exec/{ns}/{pod}/{container}", ep.exec)
	mux.HandleFunc("GET /exec/{ns}/{pod}/{container}", ep.exec)
	mux.HandleFunc("POST /images", ep.importImage)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
			writeStatus(w, apierrors.NewUnauthorized("the agent answers only the API server: present its client certificate"))
			return
		}
		if cn := r.TLS.PeerCertificates[0].Subject.CommonName; cn != pki.APIServerClientName {
			writeStatus(w, apierrors.NewUnauthorized(fmt.Sprintf("the agent answers only %s, not %s", pki.APIServerClientName, cn)))
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// target finds the pod a request names among the node's pods, and the
// runtime that runs it.
func (ep *endpoint) target(r *http.Request) (*corev1.Pod, *runtime.Runtime, error) {
	rt := ep.rt.Load()
	if rt == nil {
		return nil, nil, apierrors.NewServiceUnavailable(fmt.Sprintf("node %s is not running pods yet", ep.node))
	}
	ns, name := r.PathValue("ns"), r.PathValue("pod")
	obj, ok := ep.pods.Get(ns, name)
	if !ok {
		return nil, nil, apierrors.NewNotFound(podsR.GroupResource(), name)
	}
	pod := obj.(*corev1.Pod)
	if uid := r.URL.Query().Get("podUID"); uid != "" && types.UID(uid) != pod.UID {
		return nil, nil, apierrors.NewNotFound(podsR.GroupResource(), name) // the pod was replaced
	}
	return pod, rt, nil
}

func (ep *endpoint) logs(w http.ResponseWriter, r *http.Request) {
	pod, rt, err := ep.target(r)
	if err != nil {
		writeStatus(w, err)
		return
	}
	container := r.PathValue("container")
	q := r.URL.Query()
	follow, _ := strconv.ParseBool(q.Get("follow"))
	previous, _ := strconv.ParseBool(q.Get("previous"))
	tail := int64(-1)
	if v := q.Get("tailLines"); v != "" {
		if tail, err = strconv.ParseInt(v, 10, 64); err != nil || tail < 0 {
			writeStatus(w, apierrors.NewBadRequest(fmt.Sprintf("tailLines=%q: must be a number >= 0", v)))
			return
		}
	}
	out := &lazyWriter{w: w}
	err = containerLogs(r.Context(), rt, pod.UID, container, follow, previous, tail, out)
	if err == nil {
		if !out.started {
			w.WriteHeader(http.StatusOK) // an empty log
		}
		return
	}
	if out.started {
		ep.log.Warn("container logs cut short", "pod", pod.Namespace+"/"+pod.Name, "container", container, "err", err)
		return
	}
	if errors.Is(err, runtime.ErrNotFound) {
		if previous {
			err = apierrors.NewBadRequest(fmt.Sprintf("previous terminated container %q in pod %q not found", container, pod.Name))
		} else {
			err = apierrors.NewBadRequest(fmt.Sprintf("container %q in pod %q is waiting to start", container, pod.Name))
		}
	}
	writeStatus(w, err)
}

// containerLogs writes a container's log, or its last tail lines (tail <
// 0: all of it). A followed tail reads the log twice: once for the lines
// to show, then following, skipping what the first read covered (the
// log of one run only grows).
func containerLogs(ctx context.Context, rt *runtime.Runtime, uid types.UID, container string, follow, previous bool, tail int64, w io.Writer) error {
	if tail < 0 {
		return rt.Logs(ctx, uid, container, &corev1.PodLogOptions{Follow: follow, Previous: previous}, w)
	}
	last := &tailBuffer{n: int(tail)}
	if err := rt.Logs(ctx, uid, container, &corev1.PodLogOptions{Previous: previous}, last); err != nil {
		return err
	}
	if _, err := w.Write(last.bytes()); err != nil {
		return err
	}
	if !follow || previous {
		return nil
	}
	return rt.Logs(ctx, uid, container, &corev1.PodLogOptions{Follow: true}, &skipWriter{w: w, skip: last.total})
}

func (ep *endpoint) exec(w http.ResponseWriter, r *http.Request) {
	pod, rt, err := ep.target(r)
	if err != nil {
		writeStatus(w, err)
		return
	}
	container := r.PathValue("container")
	q := r.URL.Query()
	cmd := q["command"]
	withStdin, _ := strconv.ParseBool(q.Get("stdin"))
	switch {
	case len(cmd) == 0:
		writeStatus(w, apierrors.NewBadRequest("you must specify at least one command for the container"))
		return
	case r.Header.Get("Upgrade") != client.ExecProtocol:
		writeStatus(w, apierrors.NewBadRequest("exec needs the connection upgraded to "+client.ExecProtocol))
		return
	case !running(pod, container):
		writeStatus(w, apierrors.NewBadRequest(fmt.Sprintf("container %q in pod %q is not running", container, pod.Name)))
		return
	}
	conn, buf, err := http.NewResponseController(w).Hijack()
	if err != nil {
		writeStatus(w, apierrors.NewInternalError(fmt.Errorf("take over the connection: %w", err)))
		return
	}
	defer conn.Close()
	fmt.Fprintf(buf, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: %s\r\n\r\n", client.ExecProtocol)
	if err := buf.Flush(); err != nil {
		return
	}
	log := ep.log.With("pod", pod.Namespace+"/"+pod.Name, "container", container)
	code, err := execStream(r.Context(), rt, pod.UID, container, cmd, withStdin, conn, buf.Reader)
	if err != nil {
		log.Info("exec failed", "command", cmd, "err", err)
	} else {
		log.Info("exec", "command", cmd, "exitCode", code)
	}
}

// execStream runs cmd with its streams framed on conn (client.ExecProtocol)
// and sends its exit status last. The command is killed when the client
// goes away.
func execStream(ctx context.Context, rt *runtime.Runtime, uid types.UID, container string, cmd []string, withStdin bool, conn net.Conn, in *bufio.Reader) (int, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var stdin io.Reader
	stdinR, stdinW := io.Pipe()
	if withStdin {
		stdin = stdinR
	}
	// Frames from the client: stdin, and its going away.
	go func() {
		defer cancel()
		for {
			stream, payload, err := client.ReadFrame(in)
			if err != nil {
				stdinW.CloseWithError(fmt.Errorf("the client went away: %w", err))
				return
			}
			if stream != client.StreamStdin {
				continue
			}
			if len(payload) == 0 {
				stdinW.Close()
				continue
			}
			if _, err := stdinW.Write(payload); err != nil {
				continue // the command stopped reading; drain until the client goes
			}
		}
	}()
	var mu sync.Mutex
	out := func(stream byte) io.Writer {
		return writerFunc(func(p []byte) (int, error) {
			mu.Lock()
			defer mu.Unlock()
			for chunk := range slices.Chunk(p, 32<<10) {
				if err := client.WriteFrame(conn, stream, chunk); err != nil {
					return 0, err
				}
			}
			return len(p), nil
		})
	}
	code, err := rt.Exec(ctx, uid, container, cmd, stdin, out(client.StreamStdout), out(client.StreamStderr))
	stdinR.Close()
	st, _ := json.Marshal(client.ExecStatus(code, err))
	mu.Lock()
	client.WriteFrame(conn, client.StreamStatus, st)
	mu.Unlock()
	return code, err
}

func (ep *endpoint) importImage(w http.ResponseWriter, r *http.Request) {
	rt := ep.rt.Load()
	if rt == nil {
		writeStatus(w, apierrors.NewServiceUnavailable(fmt.Sprintf("node %s is not running pods yet", ep.node)))
		return
	}
	images, err := rt.ImportImage(r.Context(), r.Body)
	if err != nil {
		writeStatus(w, apierrors.NewBadRequest(fmt.Sprintf("node %s: %v", ep.node, err)))
		return
	}
	ep.log.Info("images imported through the API server", "images", images)
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(client.ImportResult{Node: ep.node, Images: images})
}

// running reports whether the pod's status says container runs.
func running(pod *corev1.Pod, container string) bool {
	for _, s := range append(pod.Status.ContainerStatuses, pod.Status.InitContainerStatuses...) {
		if s.Name == container {
			return s.State.Running != nil
		}
	}
	return false
}

func writeStatus(w http.ResponseWriter, err error) {
	var se apierrors.APIStatus
	if !errors.As(err, &se) {
		se = apierrors.NewInternalError(err)
	}
	st := se.Status()
	st.APIVersion, st.Kind = "v1", "Status"
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(int(st.Code))
	json.NewEncoder(w).Encode(st)
}

// lazyWriter sends the 200 only with the first byte, so that an error
// before any output can still be a Status; every write is flushed at
// once, for a followed log.
type lazyWriter struct {
	w       http.ResponseWriter
	started bool
}

func (l *lazyWriter) Write(p []byte) (int, error) {
	if !l.started {
		l.w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		l.w.WriteHeader(http.StatusOK)
		l.started = true
	}
	n, err := l.w.Write(p)
	if err == nil {
		err = http.NewResponseController(l.w).Flush()
	}
	return n, err
}

// tailBuffer keeps the last n lines written to it, and counts every byte.
type tailBuffer struct {
	n     int
	lines [][]byte // the last n complete lines, then a partial one
	total int64
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	n := len(p)
	t.total += int64(n)
	for len(p) > 0 {
		if len(t.lines) == 0 || bytes.HasSuffix(t.lines[len(t.lines)-1], []byte("\n")) {
			t.lines = append(t.lines, nil)
		}
		i := bytes.IndexByte(p, '\n') + 1
		if i == 0 {
			i = len(p)
		}
		t.lines[len(t.lines)-1] = append(t.lines[len(t.lines)-1], p[:i]...)
		p = p[i:]
		if len(t.lines) > t.n+1 {
			t.lines = t.lines[len(t.lines)-t.n-1:]
		}
	}
	return n, nil
}

func (t *tailBuffer) bytes() []byte {
	lines := t.lines
	// A last line still being written counts as a line, as kubelet's does.
	if len(lines) > t.n {
		lines = lines[len(lines)-t.n:]
	}
	return bytes.Join(lines, nil)
}

// skipWriter drops the first skip bytes written to it.
type skipWriter struct {
	w    io.Writer
	skip int64
}

func (s *skipWriter) Write(p []byte) (int, error) {
	n := len(p)
	if s.skip >= int64(n) {
		s.skip -= int64(n)
		return n, nil
	}
	p = p[s.skip:]
	s.skip = 0
	if _, err := s.w.Write(p); err != nil {
		return 0, err
	}
	return n, nil
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
