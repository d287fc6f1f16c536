package node

import (
	"context"
	"crypto"
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
	"net/url"
	"strconv"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/cri-streaming/pkg/streaming/portforward"
	"k8s.io/cri-streaming/pkg/streaming/remotecommand"

	"github.com/skep-io/skep/agent/runtime"
	"github.com/skep-io/skep/controlplane/api"
	"github.com/skep-io/skep/controlplane/client"
)

// The agent's HTTPS endpoint is kubelet's port 10250: the API server
// proxies container logs, commands in containers, attaching, port
// forwarding and image imports to it, on kubelet's paths and with
// kubelet's protocols, so the API server's upgrade-aware proxy and its
// WebSocket-to-SPDY translation work as they do against a kubelet. It
// listens on the node's InternalIP (--agent-port), with a serving
// certificate the API server signed for that address, and answers only a
// client presenting the API server's certificate (client.APIServerClientName,
// signed by the same node CA); anyone else gets 401.
//
//	GET      /containerLogs/NS/POD/CONTAINER?follow=&previous=&tailLines=&sinceSeconds=&sinceTime=&timestamps=&limitBytes=&podUID=
//	GET|POST /exec/NS/POD/CONTAINER?command=...&input=1&output=1&error=1&tty=1&podUID=
//	GET|POST /attach/NS/POD/CONTAINER?input=1&output=1&error=1&tty=1&podUID=
//	GET|POST /portForward/NS/POD?podUID=   (SPDY: the port in each stream's headers; WebSocket: ?port=N...)
//	POST     /images                       (an image archive as the body)
//
// exec, attach and portForward upgrade to SPDY/3.1 (remotecommand
// v4..v1.channel.k8s.io, portforward.k8s.io) or to WebSocket
// (v4.channel.k8s.io, v4.*.websocket.k8s.io), served by cri-streaming as
// kubelet's streaming server does.

const (
	// streamIdleTimeout closes an upgraded connection that carried
	// nothing for this long: kubelet's --streaming-connection-idle-timeout
	// default.
	streamIdleTimeout = 4 * time.Hour
	// streamCreationTimeout bounds the wait for the client's streams after
	// the upgrade.
	streamCreationTimeout = remotecommand.DefaultStreamCreationTimeout
)

// endpoint serves the agent's HTTPS API.
type endpoint struct {
	node string
	pods podGetter
	log  *slog.Logger
	// rt is set once the pod host is up; until then requests get 503.
	rt atomic.Pointer[runtime.Runtime]
}

// podGetter finds the node's pods: the agent's pod informer.
type podGetter interface {
	Get(namespace, name string) (api.Object, bool)
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
	csr, key, err := client.NewServingRequest(a.cfg.Name, []netip.Addr{a.cfg.NodeIP})
	if err != nil {
		return nil, err
	}
	var resp client.ServingCertificateResponse
	if err := a.hc.Do(ctx, http.MethodPost, client.ServingCertificatePath, client.ServingCertificateRequest{CSR: string(csr)}, &resp); err != nil {
		return nil, fmt.Errorf("get a serving certificate for %s: %w", a.cfg.NodeIP, err)
	}
	return endpointTLS([]byte(resp.Certificate), []byte(resp.CA), key)
}

// endpointTLS is the endpoint's TLS config: the serving certificate and
// its key, and the node CA that signs the API server's client certificate.
func endpointTLS(certPEM, caPEM []byte, key crypto.Signer) (*tls.Config, error) {
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode the serving key: %w", err)
	}
	cert, err := tls.X509KeyPair(certPEM, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}))
	if err != nil {
		return nil, permanent(fmt.Errorf("the serving certificate the API server signed: %w", err))
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
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
		// exec, attach and port forwarding hijack the connection, which
		// HTTP/2 cannot give.
		NextProtos: []string{"http/1.1"},
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
	for _, method := range []string{http.MethodGet, http.MethodPost} {
		mux.HandleFunc(method+" /exec/{ns}/{pod}/{container}", ep.exec)
		mux.HandleFunc(method+" /attach/{ns}/{pod}/{container}", ep.attach)
		mux.HandleFunc(method+" /portForward/{ns}/{pod}", ep.portForward)
	}
	mux.HandleFunc("POST /images", ep.importImage)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
			writeStatus(w, apierrors.NewUnauthorized("the agent answers only the API server: present its client certificate"))
			return
		}
		if cn := r.TLS.PeerCertificates[0].Subject.CommonName; cn != client.APIServerClientName {
			writeStatus(w, apierrors.NewUnauthorized(fmt.Sprintf("the agent answers only %s, not %s", client.APIServerClientName, cn)))
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

// runningTarget is target for a request into a running container.
func (ep *endpoint) runningTarget(r *http.Request) (*corev1.Pod, *runtime.Runtime, error) {
	pod, rt, err := ep.target(r)
	if err != nil {
		return nil, nil, err
	}
	if container := r.PathValue("container"); !running(pod, container) {
		return nil, nil, apierrors.NewBadRequest(fmt.Sprintf("container %q in pod %q is not running", container, pod.Name))
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
	opts, err := parseLogOptions(r.URL.Query())
	if err != nil {
		writeStatus(w, apierrors.NewBadRequest(err.Error()))
		return
	}
	opts.Container = container
	out := &lazyWriter{w: w}
	err = rt.Logs(r.Context(), pod.UID, container, opts, out)
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
		if opts.Previous {
			err = apierrors.NewBadRequest(fmt.Sprintf("previous terminated container %q in pod %q not found", container, pod.Name))
		} else {
			err = apierrors.NewBadRequest(fmt.Sprintf("container %q in pod %q is waiting to start", container, pod.Name))
		}
	}
	writeStatus(w, err)
}

// parseLogOptions reads a containerLogs query as kubelet does, refusing
// what the API server's validation of PodLogOptions would refuse.
func parseLogOptions(q url.Values) (*corev1.PodLogOptions, error) {
	opts := &corev1.PodLogOptions{}
	for name, field := range map[string]*bool{"follow": &opts.Follow, "previous": &opts.Previous, "timestamps": &opts.Timestamps} {
		if v := q.Get(name); v != "" {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return nil, fmt.Errorf("%s=%q: must be true or false", name, v)
			}
			*field = b
		}
	}
	for _, p := range []struct {
		name  string
		field **int64
		min   int64
	}{{"tailLines", &opts.TailLines, 0}, {"sinceSeconds", &opts.SinceSeconds, 1}, {"limitBytes", &opts.LimitBytes, 1}} {
		v := q.Get(p.name)
		if v == "" {
			continue
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < p.min {
			return nil, fmt.Errorf("%s=%q: must be a whole number >= %d", p.name, v, p.min)
		}
		*p.field = &n
	}
	if v := q.Get("sinceTime"); v != "" {
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			return nil, fmt.Errorf("sinceTime=%q: must be an RFC 3339 time, like 2006-01-02T15:04:05Z", v)
		}
		opts.SinceTime = &metav1.Time{Time: t}
	}
	if opts.SinceSeconds != nil && opts.SinceTime != nil {
		return nil, errors.New("sinceSeconds and sinceTime: at most one of them may be given")
	}
	return opts, nil
}

func (ep *endpoint) exec(w http.ResponseWriter, r *http.Request) {
	pod, rt, err := ep.runningTarget(r)
	if err != nil {
		writeStatus(w, err)
		return
	}
	cmd := r.URL.Query()["command"]
	if len(cmd) == 0 {
		writeStatus(w, apierrors.NewBadRequest("command: you must specify at least one command for the container"))
		return
	}
	opts, err := remotecommand.NewOptions(r)
	if err != nil {
		writeStatus(w, apierrors.NewBadRequest(fmt.Sprintf("input, output, error: %v", err)))
		return
	}
	st := ep.streamer(rt, pod)
	st.noStdin = !opts.Stdin
	w, r, done := watchUpgrade(w, r)
	defer done()
	remotecommand.ServeExec(w, r, st, pod.Name, string(pod.UID), r.PathValue("container"), cmd, opts,
		streamIdleTimeout, streamCreationTimeout, remotecommand.SupportedStreamingProtocols)
}

func (ep *endpoint) attach(w http.ResponseWriter, r *http.Request) {
	pod, rt, err := ep.runningTarget(r)
	if err != nil {
		writeStatus(w, err)
		return
	}
	opts, err := remotecommand.NewOptions(r)
	if err != nil {
		writeStatus(w, apierrors.NewBadRequest(fmt.Sprintf("input, output, error: %v", err)))
		return
	}
	st := ep.streamer(rt, pod)
	st.noStdin = !opts.Stdin
	w, r, done := watchUpgrade(w, r)
	defer done()
	remotecommand.ServeAttach(w, r, st, pod.Name, string(pod.UID), r.PathValue("container"), opts,
		streamIdleTimeout, streamCreationTimeout, remotecommand.SupportedStreamingProtocols)
}

func (ep *endpoint) portForward(w http.ResponseWriter, r *http.Request) {
	pod, rt, err := ep.target(r)
	if err != nil {
		writeStatus(w, err)
		return
	}
	opts, err := portforward.NewV4Options(r)
	if err != nil {
		writeStatus(w, apierrors.NewBadRequest(err.Error()))
		return
	}
	w, r, done := watchUpgrade(w, r)
	defer done()
	portforward.ServePortForward(w, r, ep.streamer(rt, pod), pod.Name, string(pod.UID), opts,
		streamIdleTimeout, streamCreationTimeout, portforward.SupportedProtocols)
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
