package apiserver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	upgradeproxy "k8s.io/apimachinery/pkg/util/proxy"
	"k8s.io/apimachinery/pkg/util/sets"
	genericrequest "k8s.io/apiserver/pkg/endpoints/request"
	genericrest "k8s.io/apiserver/pkg/registry/generic/rest"
	"k8s.io/apiserver/pkg/registry/rest"
	streamproxy "k8s.io/apiserver/pkg/util/proxy"
	"k8s.io/streaming/pkg/httpstream/wsstream"

	"github.com/skep-io/skep/controlplane/api"
)

// pods/log, pods/exec, pods/attach and pods/portforward, as
// kube-apiserver serves them: each finds the pod's node and proxies the
// request to that node's agent, on the kubelet's paths (/containerLogs,
// /exec, /attach, /portForward), over the channel of nodeaccess.go (the
// node CA, the API server's client certificate). The agent speaks what a
// kubelet speaks (SPDY/3.1, and WebSocket v4); what kubectl 1.30 and
// later speak first, WebSocket v5 for exec and attach and WebSocket
// tunnelling SPDY for port-forward, is translated here with the API
// server's own translators, so both protocols reach the container end to
// end. Only the admin reaches these (requestAuthorizer denies every
// subresource but status to anyone else).

// streamSubresources are the pods' and nodes' subresources that stream
// for as long as the client and the agent keep them open.
var streamSubresources = sets.NewString("attach", "exec", "proxy", "log", "portforward")

// podStreams is what the four share: the pods, to find a pod's node,
// and the channel to nodes.
type podStreams struct {
	s *Server
}

// agentLocation is where on its node's agent a request for pod name goes:
// https://NODE-IP:PORT/PATH/NS/NAME[/CONTAINER]?QUERY&podUID=UID, and the
// transport that reaches that agent. container is checked against the
// pod (the named one, or the pod's default); forPod leaves it out of the
// path (port-forward).
func (p podStreams) agentLocation(ctx context.Context, name, container, path string, forPod bool, q url.Values) (agentTarget, error) {
	ns, _ := genericrequest.NamespaceFrom(ctx)
	obj, err := p.s.reg.get(ctx, api.MustLookup("pods"), ns, name)
	if err != nil {
		return agentTarget{}, err
	}
	pod := obj.(*corev1.Pod)
	where := "/" + path + "/" + ns + "/" + name
	if !forPod {
		c, err := podContainer(pod, container)
		if err != nil {
			return agentTarget{}, err
		}
		where += "/" + c
	}
	node := pod.Spec.NodeName
	if node == "" {
		return agentTarget{}, apierrors.NewBadRequest(fmt.Sprintf("pod %s does not have a host assigned", name))
	}
	nodeObj, err := p.s.reg.get(ctx, api.MustLookup("nodes"), "", node)
	if apierrors.IsNotFound(err) {
		return agentTarget{}, apierrors.NewServiceUnavailable(fmt.Sprintf("pod %s is bound to node %s, which does not exist", name, node))
	}
	if err != nil {
		return agentTarget{}, err
	}
	host, err := agentAddress(nodeObj.(*corev1.Node))
	if err != nil {
		return agentTarget{}, err
	}
	transport, err := p.s.nodes.transport(ctx, node)
	if err != nil {
		return agentTarget{}, apierrors.NewInternalError(err)
	}
	if q == nil {
		q = url.Values{}
	}
	// The agent answers for this pod only, not one of the same name made
	// since.
	q.Set("podUID", string(pod.UID))
	return agentTarget{location: &url.URL{Scheme: "https", Host: host, Path: where, RawQuery: q.Encode()}, transport: transport, node: node}, nil
}

// agentTarget is where a pod's stream goes: the agent's URL, the
// transport that reaches that agent only, and its node.
type agentTarget struct {
	location  *url.URL
	transport http.RoundTripper
	node      string
}

// podLogREST is pods/log: the agent's answer streamed back as text.
type podLogREST struct{ podStreams }

var (
	_ rest.GetterWithOptions = (*podLogREST)(nil)
	_ rest.StorageMetadata   = (*podLogREST)(nil)
)

func (*podLogREST) New() runtime.Object { return &corev1.Pod{} }
func (*podLogREST) Destroy()            {}

func (*podLogREST) NewGetOptions() (runtime.Object, bool, string) {
	return &corev1.PodLogOptions{}, false, ""
}
func (*podLogREST) ProducesMIMETypes(string) []string { return []string{"text/plain"} }
func (*podLogREST) ProducesObject(string) any         { return "" }

func (r *podLogREST) Get(ctx context.Context, name string, options runtime.Object) (runtime.Object, error) {
	opts, ok := options.(*corev1.PodLogOptions)
	if !ok {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("invalid options object: %T", options))
	}
	if errs := validateLogOptions(opts); len(errs) > 0 {
		return nil, apierrors.NewInvalid(schema.GroupKind{Kind: "PodLogOptions"}, name, errs)
	}
	q := url.Values{}
	setIf := func(k string, on bool) {
		if on {
			q.Set(k, "true")
		}
	}
	setInt := func(k string, v *int64) {
		if v != nil {
			q.Set(k, fmt.Sprint(*v))
		}
	}
	setIf("follow", opts.Follow)
	setIf("previous", opts.Previous)
	setIf("timestamps", opts.Timestamps)
	setInt("sinceSeconds", opts.SinceSeconds)
	setInt("tailLines", opts.TailLines)
	setInt("limitBytes", opts.LimitBytes)
	if opts.SinceTime != nil {
		q.Set("sinceTime", opts.SinceTime.UTC().Format("2006-01-02T15:04:05Z07:00"))
	}
	to, err := r.agentLocation(ctx, name, opts.Container, "containerLogs", false, q)
	if err != nil {
		return nil, err
	}
	return &agentStreamer{node: to.node, LocationStreamer: genericrest.LocationStreamer{
		Location:        to.location,
		Transport:       to.transport,
		ContentType:     "text/plain",
		Flush:           opts.Follow,
		ResponseChecker: agentResponseChecker{generic: genericrest.NewGenericHttpResponseChecker(corev1.Resource("pods/log"), name)},
		RedirectChecker: genericrest.PreventRedirects,
	}}, nil
}

// agentResponseChecker passes on an agent's refusal as the Status the
// agent wrote (its code and message: "previous terminated container ...
// not found"), where the generic checker would quote the whole JSON
// body as a message. An answer that is not a Status is the generic
// checker's.
type agentResponseChecker struct {
	generic genericrest.HttpResponseChecker
}

func (c agentResponseChecker) Check(resp *http.Response) error {
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return nil
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	var st metav1.Status
	if json.Unmarshal(body, &st) == nil && st.Kind == "Status" && st.Message != "" && st.Code == int32(resp.StatusCode) {
		return &apierrors.StatusError{ErrStatus: st}
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	return c.generic.Check(resp)
}

// agentStreamer streams an agent's answer; an agent that cannot be
// reached (or is not the node's) is a 503 that says which, where the
// generic streamer would answer 500.
type agentStreamer struct {
	genericrest.LocationStreamer
	node string
}

func (a *agentStreamer) InputStream(ctx context.Context, apiVersion, acceptHeader string) (io.ReadCloser, bool, string, error) {
	rc, flush, ct, err := a.LocationStreamer.InputStream(ctx, apiVersion, acceptHeader)
	var status apierrors.APIStatus
	if err != nil && !errors.As(err, &status) {
		err = apierrors.NewServiceUnavailable(fmt.Sprintf("the agent of node %s at %s did not answer: %v", a.node, a.Location.Host, err))
	}
	return rc, flush, ct, err
}

// podExecREST is pods/exec.
type podExecREST struct{ podStreams }

func (*podExecREST) New() runtime.Object      { return &corev1.Pod{} }
func (*podExecREST) Destroy()                 {}
func (*podExecREST) ConnectMethods() []string { return []string{http.MethodGet, http.MethodPost} }
func (*podExecREST) NewConnectOptions() (runtime.Object, bool, string) {
	return &corev1.PodExecOptions{}, false, ""
}

func (r *podExecREST) Connect(ctx context.Context, name string, options runtime.Object, responder rest.Responder) (http.Handler, error) {
	opts, ok := options.(*corev1.PodExecOptions)
	if !ok {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("invalid options object: %T", options))
	}
	if len(opts.Command) == 0 {
		return nil, apierrors.NewBadRequest("you must specify at least 1 command")
	}
	q := streamQuery(opts.Stdin, opts.Stdout, opts.Stderr, opts.TTY)
	q["command"] = opts.Command
	to, err := r.agentLocation(ctx, name, opts.Container, "exec", false, q)
	if err != nil {
		return nil, err
	}
	return commandHandler(to, responder, streamproxy.Options{Stdin: opts.Stdin, Stdout: opts.Stdout, Stderr: opts.Stderr, Tty: opts.TTY}), nil
}

// podAttachREST is pods/attach.
type podAttachREST struct{ podStreams }

func (*podAttachREST) New() runtime.Object      { return &corev1.Pod{} }
func (*podAttachREST) Destroy()                 {}
func (*podAttachREST) ConnectMethods() []string { return []string{http.MethodGet, http.MethodPost} }
func (*podAttachREST) NewConnectOptions() (runtime.Object, bool, string) {
	return &corev1.PodAttachOptions{}, false, ""
}

func (r *podAttachREST) Connect(ctx context.Context, name string, options runtime.Object, responder rest.Responder) (http.Handler, error) {
	opts, ok := options.(*corev1.PodAttachOptions)
	if !ok {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("invalid options object: %T", options))
	}
	q := streamQuery(opts.Stdin, opts.Stdout, opts.Stderr, opts.TTY)
	to, err := r.agentLocation(ctx, name, opts.Container, "attach", false, q)
	if err != nil {
		return nil, err
	}
	return commandHandler(to, responder, streamproxy.Options{Stdin: opts.Stdin, Stdout: opts.Stdout, Stderr: opts.Stderr, Tty: opts.TTY}), nil
}

// podPortForwardREST is pods/portforward.
type podPortForwardREST struct{ podStreams }

func (*podPortForwardREST) New() runtime.Object { return &corev1.Pod{} }
func (*podPortForwardREST) Destroy()            {}
func (*podPortForwardREST) ConnectMethods() []string {
	return []string{http.MethodGet, http.MethodPost}
}
func (*podPortForwardREST) NewConnectOptions() (runtime.Object, bool, string) {
	return &corev1.PodPortForwardOptions{}, false, ""
}

func (r *podPortForwardREST) Connect(ctx context.Context, name string, options runtime.Object, responder rest.Responder) (http.Handler, error) {
	opts, ok := options.(*corev1.PodPortForwardOptions)
	if !ok {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("invalid options object: %T", options))
	}
	q := url.Values{}
	for _, p := range opts.Ports {
		if p < 1 || p > 65535 {
			return nil, apierrors.NewBadRequest(fmt.Sprintf("ports: %d is not a port (1 to 65535)", p))
		}
		q.Add("port", fmt.Sprint(p))
	}
	to, err := r.agentLocation(ctx, name, "", "portForward", true, q)
	if err != nil {
		return nil, err
	}
	upgrade := upgradeHandler(to, responder)
	// WebSocket clients (kubectl's default since 1.31) tunnel SPDY inside
	// the WebSocket; the agent sees SPDY.
	return streamproxy.NewTranslatingHandler(upgrade, streamproxy.NewTunnelingHandler(upgrade), wsstream.IsWebSocketRequestWithTunnelingProtocol), nil
}

// streamQuery is the kubelet's query for the streams a command wants.
func streamQuery(stdin, stdout, stderr, tty bool) url.Values {
	q := url.Values{}
	for k, on := range map[string]bool{"input": stdin, "output": stdout, "error": stderr, "tty": tty} {
		if on {
			q.Set(k, "1")
		}
	}
	return q
}

// commandHandler proxies exec or attach: an upgraded connection passes
// through to the agent as it is (SPDY, WebSocket v4), and a WebSocket v5
// client, which a kubelet does not speak, is translated to SPDY.
func commandHandler(to agentTarget, responder rest.Responder, opts streamproxy.Options) http.Handler {
	upgrade := upgradeHandler(to, responder)
	translator := streamproxy.NewStreamTranslatorHandler(to.location, to.transport, 0, opts)
	return streamproxy.NewTranslatingHandler(upgrade, translator, wsstream.IsWebSocketRequestWithStreamCloseProtocol)
}

// upgradeHandler passes an upgraded connection through to location; a
// request that does not upgrade is refused, as kube-apiserver refuses it.
func upgradeHandler(to agentTarget, responder rest.Responder) http.Handler {
	h := upgradeproxy.NewUpgradeAwareHandler(to.location, to.transport, false, true, errorResponder{responder})
	h.UseLocationHost = true
	return h
}

// errorResponder is the generic server's responder as the proxy's.
type errorResponder struct{ r rest.Responder }

func (e errorResponder) Error(_ http.ResponseWriter, _ *http.Request, err error) {
	e.r.Error(err)
}
