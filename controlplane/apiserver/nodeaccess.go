package apiserver

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/skep-io/skep/controlplane/api"
	"github.com/skep-io/skep/controlplane/client"
	"github.com/skep-io/skep/controlplane/pki"
	"github.com/skep-io/skep/controlplane/store"
)

// The API server reaches a node's agent as Kubernetes' reaches a kubelet:
// HTTPS to the node's InternalIP at the port its Node status publishes
// (status.daemonEndpoints.kubeletEndpoint.port, default 10250), for
// container logs, commands in containers and image import.
//
// Both ends of that channel hold certificates of the node CA, which the
// API server keeps in the store (so every API server of an HA set has the
// same) and makes on first use:
//   - each agent, with its node credential, has the API server sign a
//     serving certificate for its own addresses (ServingCertificatePath):
//     only those the node declared when it joined, which the control plane
//     recorded with its identity; the certificate names the node
//     ("system:node:<node>" and the node's name as a DNS name). The API
//     server checks the agent's certificate against that CA, the node's
//     address and the node's name;
//   - the API server presents a client certificate of the same CA, named
//     pki.APIServerClientName, and the agent serves no one else.
//
// A node's serving certificate is for server use only, so no node can
// pose as the API server to another.

// DefaultAgentPort is where an agent serves when its Node says nothing.
const DefaultAgentPort = 10250

// nodeCAKey is where the node CA is kept.
var nodeCAKey = store.Key{Resource: "pki", Name: "node-ca"}

const (
	servingValidity = 365 * 24 * time.Hour
	clientValidity  = 365 * 24 * time.Hour
)

// nodeAccess holds the API server's end of the channel, made on first use.
type nodeAccess struct {
	store *store.Store

	mu   sync.Mutex
	ca   *pki.CA
	cert tls.Certificate // the API server's client certificate
	// transports, one a node, each taking only that node's certificate:
	// a connection to one node is never reused for another.
	transports map[string]*http.Transport
}

// maxTransports bounds transports; past it, the idle ones go.
const maxTransports = 4096

type storedCA struct {
	Cert []byte `json:"cert"`
	Key  []byte `json:"key"`
}

// load returns the node CA, making or reading it and the API server's
// client certificate on first use.
func (n *nodeAccess) load(ctx context.Context) (*pki.CA, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.loadLocked(ctx)
}

func (n *nodeAccess) loadLocked(ctx context.Context) (*pki.CA, error) {
	if n.ca != nil {
		return n.ca, nil
	}
	ca, err := n.loadCA(ctx)
	if err != nil {
		return nil, err
	}
	cert, err := ca.ClientCert(pki.APIServerClientName, clientValidity)
	if err != nil {
		return nil, err
	}
	n.ca, n.cert, n.transports = ca, cert, map[string]*http.Transport{}
	return n.ca, nil
}

// transport returns the transport to node's agent: it presents the API
// server's client certificate and takes only a serving certificate of
// the node CA for that node.
func (n *nodeAccess) transport(ctx context.Context, node string) (*http.Transport, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	ca, err := n.loadLocked(ctx)
	if err != nil {
		return nil, err
	}
	if t := n.transports[node]; t != nil {
		return t, nil
	}
	if len(n.transports) >= maxTransports {
		for _, t := range n.transports {
			t.CloseIdleConnections()
		}
		clear(n.transports)
	}
	t := agentTransport(ca, n.cert, node)
	n.transports[node] = t
	return t, nil
}

func (n *nodeAccess) loadCA(ctx context.Context) (*pki.CA, error) {
	for {
		e, err := n.store.Get(ctx, nodeCAKey)
		if err == nil {
			var s storedCA
			if err := json.Unmarshal(e.Value, &s); err != nil {
				return nil, fmt.Errorf("read the node CA: %w", err)
			}
			return pki.ParseCA(s.Cert, s.Key)
		}
		if !errors.Is(err, store.ErrNotFound) {
			return nil, fmt.Errorf("read the node CA: %w", err)
		}
		certPEM, keyPEM, err := pki.NewCA("skep-node-ca")
		if err != nil {
			return nil, err
		}
		data, _ := json.Marshal(storedCA{Cert: certPEM, Key: keyPEM})
		// Another API server may make one at the same time: the first
		// written is everyone's.
		if _, err := n.store.Create(ctx, nodeCAKey, data); err != nil && !errors.Is(err, store.ErrExists) {
			return nil, fmt.Errorf("keep the node CA: %w", err)
		}
	}
}

func agentTransport(ca *pki.CA, cert tls.Certificate, node string) *http.Transport {
	return &http.Transport{
		Proxy:       nil,
		DialContext: (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig: &tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12,
			// The chain and the address are checked before this: the
			// certificate must also be the node's, not another node's
			// that holds (or claims) the same address.
			VerifyConnection: func(cs tls.ConnectionState) error {
				return pki.CheckNodeServing(cs.PeerCertificates[0], node)
			}},
		TLSHandshakeTimeout: 10 * time.Second,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     90 * time.Second,
	}
}

// servingCertificate signs an agent's serving certificate for its node's
// addresses.
func (s *Server) servingCertificate(w http.ResponseWriter, r *http.Request, id Identity) {
	nodes := api.MustLookup("nodes")
	if r.Method != http.MethodPost {
		writeError(w, refuseUnread(w, r, apierrors.NewMethodNotSupported(gr(nodes), r.Method)))
		return
	}
	if id.Node == "" {
		writeError(w, refuseUnread(w, r, apierrors.NewForbidden(gr(nodes), "", fmt.Errorf("%s may not ask for a node's serving certificate; a node asks with its own credential", id))))
		return
	}
	body, err := s.admit.readBody(w, r)
	if err != nil {
		writeError(w, err)
		return
	}
	var req client.ServingCertificateRequest
	if err := json.Unmarshal(body, &req); err != nil || req.CSR == "" {
		writeError(w, apierrors.NewBadRequest(`the body must be {"csr": "<PEM certificate request>"}`))
		return
	}
	// The addresses the node declared at its join, not its status, which
	// the node writes itself.
	rec, _, err := s.auth.loadIdentity(r.Context(), id.Node)
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, apierrors.NewForbidden(gr(nodes), id.Node, fmt.Errorf("node %s has no recorded identity: join again", id.Node)))
		return
	}
	if err != nil {
		writeError(w, apierrors.NewInternalError(err))
		return
	}
	allowed := recordedAddresses(rec)
	if len(allowed) == 0 {
		writeError(w, apierrors.NewForbidden(gr(nodes), id.Node, fmt.Errorf("node %s declared no addresses when it joined: it gets no serving certificate (the agent sends its --node-ip)", id.Node)))
		return
	}
	ca, err := s.nodes.load(r.Context())
	if err != nil {
		writeError(w, apierrors.NewInternalError(err))
		return
	}
	cert, err := ca.SignNodeServing([]byte(req.CSR), id.Node, allowed, servingValidity)
	if err != nil {
		writeError(w, apierrors.NewForbidden(gr(nodes), id.Node, err))
		return
	}
	s.log.Info("serving certificate signed", "node", id.Node)
	writeJSON(w, http.StatusOK, client.ServingCertificateResponse{Certificate: string(cert), CA: string(ca.CertPEM())})
}

func recordedAddresses(rec identityRecord) []netip.Addr {
	var out []netip.Addr
	for _, a := range rec.Addresses {
		if ip, err := netip.ParseAddr(a); err == nil {
			out = append(out, ip.Unmap())
		}
	}
	return out
}

// nodeProxyPath is a parsed /api/v1/nodes/NAME/proxy[/PATH]: a request
// the API server sends on to that node's agent (an image import).
type nodeProxyPath struct {
	node string
	rest string // the agent's path, starting with "/"
}

func parseNodeProxyPath(path string) (nodeProxyPath, bool) {
	p, ok := strings.CutPrefix(path, "/api/v1/nodes/")
	if !ok {
		return nodeProxyPath{}, false
	}
	parts := strings.Split(p, "/")
	if len(parts) < 2 || parts[1] != "proxy" || parts[0] == "" {
		return nodeProxyPath{}, false
	}
	return nodeProxyPath{node: parts[0], rest: "/" + strings.Join(parts[2:], "/")}, true
}

func (s *Server) serveNodeProxy(w http.ResponseWriter, r *http.Request, id Identity, a nodeProxyPath) error {
	nodes := api.MustLookup("nodes")
	if !id.Admin {
		return apierrors.NewForbidden(gr(nodes), a.node, fmt.Errorf("%s may not use nodes/proxy: only the admin reaches nodes' agents", id))
	}
	ctx := r.Context()
	obj, err := s.reg.get(ctx, nodes, "", a.node)
	if err != nil {
		return err
	}
	host, err := agentAddress(obj.(*corev1.Node))
	if err != nil {
		return err
	}
	transport, err := s.nodes.transport(ctx, a.node)
	if err != nil {
		return apierrors.NewInternalError(err)
	}
	s.proxyToAgent(w, r, transport, a.node, &url.URL{Scheme: "https", Host: host, Path: a.rest, RawQuery: r.URL.RawQuery})
	return nil
}

// podContainer picks the container a request means: the one named, or
// the pod's only one (or the one its kubectl.kubernetes.io/default-container
// annotation names), as kubectl does.
func podContainer(pod *corev1.Pod, name string) (string, error) {
	var names, inits []string
	for _, c := range pod.Spec.Containers {
		names = append(names, c.Name)
	}
	for _, c := range pod.Spec.InitContainers {
		inits = append(inits, c.Name)
	}
	choose := fmt.Sprintf("choose one of: [%s]", strings.Join(names, " "))
	if len(inits) > 0 {
		choose += fmt.Sprintf(" or one of the init containers: [%s]", strings.Join(inits, " "))
	}
	if name == "" {
		if d := pod.Annotations["kubectl.kubernetes.io/default-container"]; slices.Contains(names, d) {
			return d, nil
		}
		if len(names) == 1 {
			return names[0], nil
		}
		return "", apierrors.NewBadRequest(fmt.Sprintf("a container name must be specified for pod %s, %s", pod.Name, choose))
	}
	if slices.Contains(names, name) || slices.Contains(inits, name) {
		return name, nil
	}
	return "", apierrors.NewBadRequest(fmt.Sprintf("container %s is not valid for pod %s: %s", name, pod.Name, choose))
}

// agentAddress is host:port of a node's agent.
func agentAddress(n *corev1.Node) (string, error) {
	port := int(n.Status.DaemonEndpoints.KubeletEndpoint.Port)
	if port == 0 {
		port = DefaultAgentPort
	}
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			if ip, err := netip.ParseAddr(a.Address); err == nil {
				return netip.AddrPortFrom(ip, uint16(port)).String(), nil
			}
		}
	}
	return "", apierrors.NewServiceUnavailable(fmt.Sprintf("node %s has no InternalIP in its status: its agent cannot be reached", n.Name))
}

// proxyToAgent sends the request on to the agent and its answer back,
// streaming both ways: an image archive as it is uploaded.
// The caller's bearer token does not go to the node.
func (s *Server) proxyToAgent(w http.ResponseWriter, r *http.Request, transport http.RoundTripper, node string, target *url.URL) {
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL = target
			pr.Out.Host = ""
			pr.Out.Header.Del("Authorization")
		},
		Transport:     transport,
		FlushInterval: -1,
		ErrorLog:      slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if r.Context().Err() != nil {
				return // the client went away
			}
			s.log.Warn("agent did not answer", "node", node, "agent", target.Host, "err", err)
			writeError(w, apierrors.NewServiceUnavailable(fmt.Sprintf("the agent of node %s at %s did not answer: %v", node, target.Host, err)))
		},
	}
	rp.ServeHTTP(w, r)
}
