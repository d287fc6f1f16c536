// Package dns is the node-local cluster DNS of a skep agent. It answers names
// under the cluster domain (Services, headless endpoints, pod hostnames and
// dashed pod addresses) from the objects the agent already watches, and
// forwards every other name to the node's own resolvers.
//
// The package is named like github.com/miekg/dns, which it imports unrenamed;
// callers that need both rename one of them.
package dns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// Defaults of Config.
const (
	DefaultDomain          = "cluster.local"
	DefaultTTL             = 5
	DefaultUpstreamTimeout = 2 * time.Second
	DefaultResolvConfPath  = "/etc/resolv.conf"
)

const (
	// advertisedUDPSize is the EDNS0 buffer size put in our own answers: the
	// DNS flag day 2020 value, which avoids IP fragmentation on any path.
	advertisedUDPSize = 1232
	// readBufferSize is how much of an incoming UDP query the server reads.
	// Queries are small, but EDNS0 options (cookies, padding) can pass 512.
	readBufferSize = 4096
	// shutdownTimeout bounds how long Run waits for in-flight queries; they
	// are themselves bounded by UpstreamTimeout.
	shutdownTimeout = 5 * time.Second
)

// Source is what the agent already watches; the DNS server reads from it on
// each query, so an answer always reflects the agent's current view.
type Source interface {
	Services() []*corev1.Service
	// EndpointSlices are every Service's slices, found by their
	// kubernetes.io/service-name label.
	EndpointSlices() []*discoveryv1.EndpointSlice
	// Pods are the pods of this node, for their hostnames
	// (pod.Spec.Hostname/Subdomain) and names.
	Pods() []*corev1.Pod
}

// Config configures a Server. Zero fields take the defaults documented on
// each field.
type Config struct {
	// Listen are the addresses to serve on, UDP and TCP both, e.g. the node
	// bridge address "10.244.1.1:53". Port 0 picks one free port that UDP
	// and TCP share.
	Listen []string
	// Domain is the cluster domain, DefaultDomain when empty.
	Domain string
	// Upstreams are "ip:port" (or "ip", meaning port 53) resolvers for names
	// outside Domain. When empty they are the nameservers of ResolvConfPath.
	Upstreams []string
	// ResolvConfPath is read for upstreams when Upstreams is empty;
	// DefaultResolvConfPath when empty.
	ResolvConfPath string
	// TTL of every answer, and of negative answers through the SOA minimum;
	// DefaultTTL when zero. Short, so that changes show quickly.
	TTL uint32
	// UpstreamTimeout is the whole budget for forwarding one query across all
	// upstreams; when it runs out the answer is SERVFAIL. DefaultUpstreamTimeout
	// when zero.
	UpstreamTimeout time.Duration
	// Logger receives one line per event; discarded when nil.
	Logger *slog.Logger
}

// Server answers DNS queries for the cluster domain and forwards the rest.
type Server struct {
	src       Source
	log       *slog.Logger
	listen    []string
	zone      string // lowercase FQDN of the cluster domain, "cluster.local."
	ttl       uint32
	upstreams []string
	timeout   time.Duration
	udpClient *dns.Client
	tcpClient *dns.Client

	ran   atomic.Bool
	ready chan struct{}
	mu    sync.Mutex
	addrs []string
}

// New checks cfg, fills in its defaults and returns a Server that Run starts.
// With no Upstreams configured it reads them from the resolv.conf file now.
func New(cfg Config, src Source) (*Server, error) {
	if src == nil {
		return nil, errors.New("new dns server: source is nil")
	}
	domain, err := normalizeDomain(cfg.Domain)
	if err != nil {
		return nil, err
	}
	s := &Server{
		src:     src,
		log:     cfg.Logger,
		listen:  cfg.Listen,
		zone:    domain + ".",
		ttl:     cfg.TTL,
		timeout: cfg.UpstreamTimeout,
		ready:   make(chan struct{}),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.ttl == 0 {
		s.ttl = DefaultTTL
	}
	if s.timeout <= 0 {
		s.timeout = DefaultUpstreamTimeout
	}
	for _, addr := range cfg.Listen {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return nil, fmt.Errorf("parse listen address %q: %w", addr, err)
		}
	}

	upstreams, fromFile := cfg.Upstreams, false
	if len(upstreams) == 0 {
		path := cfg.ResolvConfPath
		if path == "" {
			path = DefaultResolvConfPath
		}
		upstreams, err = resolvConfUpstreams(path)
		if err != nil {
			return nil, err
		}
		fromFile = true
	}
	for _, up := range upstreams {
		addr, err := normalizeUpstream(up)
		if err != nil && fromFile {
			// The node's file is not ours to fix; use what is usable in it.
			s.log.Warn("dns upstream skipped", "err", err)
			continue
		}
		if err != nil {
			return nil, err
		}
		if isListenAddr(addr, cfg.Listen) {
			// Forwarding to ourselves would loop until the budget runs out.
			s.log.Warn("dns upstream skipped: it is one of our listen addresses", "upstream", addr)
			continue
		}
		s.upstreams = append(s.upstreams, addr)
	}
	if len(s.upstreams) == 0 {
		s.log.Warn("dns has no upstream; names outside the cluster domain get SERVFAIL", "domain", domain)
	}

	// The clients' own timeouts are a backstop; each exchange is bounded by
	// the query's context deadline, which is shorter.
	s.udpClient = &dns.Client{Net: "udp", Timeout: s.timeout}
	s.tcpClient = &dns.Client{Net: "tcp", Timeout: s.timeout}
	return s, nil
}

// Ready is closed once Run has bound all its listeners; Addrs is valid then.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Addrs returns the bound "ip:port" of each Listen entry (UDP and TCP share
// the port), in the order of Config.Listen. It is empty before Ready.
func (s *Server) Addrs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.addrs...)
}

// Upstreams returns the resolvers names outside the cluster domain go to.
func (s *Server) Upstreams() []string { return append([]string(nil), s.upstreams...) }

// listener is one miekg server on one socket, with what Run needs to stop it.
type listener struct {
	srv     *dns.Server
	addr    string
	started chan struct{}
	done    chan struct{}
	err     error
}

// Run binds UDP and TCP on every Listen address, serves until ctx ends, then
// shuts its listeners down and waits for in-flight queries. It returns an
// error if a listener cannot be bound or stops on its own. Run may be called
// once.
func (s *Server) Run(ctx context.Context) error {
	if !s.ran.CompareAndSwap(false, true) {
		return errors.New("run dns server: already run")
	}
	if len(s.listen) == 0 {
		return errors.New("run dns server: no listen address")
	}

	var listeners []*listener
	var addrs []string
	for _, addr := range s.listen {
		pc, l, err := listenPair(ctx, addr)
		if err != nil {
			for _, ln := range listeners {
				closeSocket(ln.srv)
			}
			return err
		}
		bound := pc.LocalAddr().String()
		addrs = append(addrs, bound)
		listeners = append(listeners,
			s.newListener(&dns.Server{PacketConn: pc}, "udp "+bound),
			s.newListener(&dns.Server{Listener: l}, "tcp "+bound))
	}
	s.mu.Lock()
	s.addrs = addrs
	s.mu.Unlock()

	stopped := make(chan *listener, len(listeners))
	for _, ln := range listeners {
		go func() {
			ln.err = ln.srv.ActivateAndServe()
			close(ln.done)
			stopped <- ln
		}()
	}
	close(s.ready)
	s.log.Info("dns serving", "listen", addrs, "domain", strings.TrimSuffix(s.zone, "."), "upstreams", s.upstreams)

	var runErr error
	select {
	case <-ctx.Done():
	case ln := <-stopped:
		runErr = fmt.Errorf("serve dns on %s: %w", ln.addr, ln.err)
		if ln.err == nil {
			runErr = fmt.Errorf("serve dns on %s: stopped unexpectedly", ln.addr)
		}
	}

	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	for _, ln := range listeners {
		select {
		case <-ln.started:
			if err := ln.srv.ShutdownContext(shutdownCtx); err != nil {
				s.log.Warn("dns shutdown", "listener", ln.addr, "err", err)
			}
		case <-ln.done:
		}
		closeSocket(ln.srv)
		<-ln.done
	}
	s.log.Info("dns stopped", "listen", addrs)
	return runErr
}

func (s *Server) newListener(srv *dns.Server, addr string) *listener {
	ln := &listener{srv: srv, addr: addr, started: make(chan struct{}), done: make(chan struct{})}
	srv.Handler = s
	srv.UDPSize = readBufferSize
	srv.MsgAcceptFunc = acceptQuery
	srv.MsgInvalidFunc = func(m []byte, err error) {
		s.log.Debug("dns malformed query", "listener", addr, "bytes", len(m), "err", err)
	}
	srv.NotifyStartedFunc = func() { close(ln.started) }
	return ln
}

// closeSocket closes a listener's socket; the miekg server's Shutdown closes
// it too, so the error of a second close is expected and dropped.
func closeSocket(srv *dns.Server) {
	if srv.PacketConn != nil {
		_ = srv.PacketConn.Close()
	}
	if srv.Listener != nil {
		_ = srv.Listener.Close()
	}
}

// listenPair binds UDP and TCP on addr. With port 0 it takes a free TCP port
// and binds UDP on the same number, retrying when that UDP port is taken, so
// that one "ip:port" serves both, as resolvers expect.
func listenPair(ctx context.Context, addr string) (net.PacketConn, net.Listener, error) {
	var lc net.ListenConfig
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, fmt.Errorf("parse listen address %q: %w", addr, err)
	}
	const attempts = 20
	for i := 0; ; i++ {
		l, err := lc.Listen(ctx, "tcp", addr)
		if err != nil {
			return nil, nil, fmt.Errorf("listen tcp %s: %w", addr, err)
		}
		udpAddr := addr
		if port == "0" {
			udpAddr = net.JoinHostPort(host, strconv.Itoa(l.Addr().(*net.TCPAddr).Port))
		}
		pc, err := lc.ListenPacket(ctx, "udp", udpAddr)
		if err == nil {
			return pc, l, nil
		}
		_ = l.Close()
		if port != "0" || i == attempts-1 {
			return nil, nil, fmt.Errorf("listen udp %s: %w", udpAddr, err)
		}
	}
}

// acceptQuery decides, from the header alone, which packets reach ServeDNS.
// Responses are dropped (answering them would let two servers loop), other
// opcodes get NOTIMP and anything that is not one plain question gets FORMERR.
func acceptQuery(h dns.Header) dns.MsgAcceptAction {
	const qrBit = 1 << 15
	if h.Bits&qrBit != 0 {
		return dns.MsgIgnore
	}
	if opcode := int(h.Bits>>11) & 0xF; opcode != dns.OpcodeQuery {
		return dns.MsgRejectNotImplemented
	}
	// A query carries one question, no answers or authority records, and at
	// most an OPT and a TSIG record in the additional section.
	if h.Qdcount != 1 || h.Ancount != 0 || h.Nscount != 0 || h.Arcount > 2 {
		return dns.MsgReject
	}
	return dns.MsgAccept
}

// ServeDNS answers one query: from the Source for names in the cluster
// domain, from the upstreams for the rest. It writes exactly one reply for a
// query and none for a message that is itself a response.
func (s *Server) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	resp := s.answer(req)
	if resp == nil {
		return
	}
	s.reply(w, req, resp)
}

// answer builds the reply to req, or nil when req must not be answered.
func (s *Server) answer(req *dns.Msg) *dns.Msg {
	if req.Response {
		return nil
	}
	if req.Opcode != dns.OpcodeQuery {
		return s.withEDNS(req, new(dns.Msg).SetRcode(req, dns.RcodeNotImplemented))
	}
	if len(req.Question) != 1 {
		return s.withEDNS(req, formErr(req))
	}
	if opt := req.IsEdns0(); opt != nil && opt.Version() != 0 {
		return s.withEDNS(req, new(dns.Msg).SetRcode(req, dns.RcodeBadVers))
	}
	q := req.Question[0]
	name := strings.ToLower(dns.Fqdn(q.Name))
	if !dns.IsSubDomain(s.zone, name) {
		return s.forward(req)
	}
	return s.withEDNS(req, s.answerCluster(req, q, name))
}

// formErr is a FORMERR reply that echoes no sections of the bad query.
func formErr(req *dns.Msg) *dns.Msg {
	m := new(dns.Msg)
	m.SetRcodeFormatError(req)
	return m
}

// withEDNS adds our OPT record to resp when the query had one (RFC 6891).
func (s *Server) withEDNS(req, resp *dns.Msg) *dns.Msg {
	if req.IsEdns0() != nil && resp.IsEdns0() == nil {
		resp.SetEdns0(advertisedUDPSize, false)
	}
	return resp
}

// reply writes resp, cut to what the client can receive: over UDP the EDNS0
// buffer size of its query or 512 bytes, setting TC so that it retries over
// TCP; over TCP the DNS maximum.
func (s *Server) reply(w dns.ResponseWriter, req, resp *dns.Msg) {
	size := dns.MaxMsgSize
	if isUDP(w) {
		size = dns.MinMsgSize
		if opt := req.IsEdns0(); opt != nil && int(opt.UDPSize()) > size {
			size = int(opt.UDPSize())
		}
	}
	resp.Truncate(size)
	if err := w.WriteMsg(resp); err != nil {
		s.log.Debug("dns write reply", "client", addrString(w.RemoteAddr()), "err", err)
	}
}

// isUDP tells the transport of a query; anything not TCP is held to UDP's
// limits, the safe side.
func isUDP(w dns.ResponseWriter) bool {
	a := w.RemoteAddr()
	return a == nil || a.Network() != "tcp"
}

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}

func normalizeDomain(domain string) (string, error) {
	d := strings.ToLower(strings.TrimSuffix(strings.TrimSpace(domain), "."))
	if d == "" {
		return DefaultDomain, nil
	}
	if _, ok := dns.IsDomainName(d); !ok || strings.ContainsAny(d, `\ `) {
		return "", fmt.Errorf("parse cluster domain %q: not a domain name", domain)
	}
	return d, nil
}

// normalizeUpstream turns "ip" or "ip:port" into "ip:port". Upstreams must be
// addresses: resolving a name here would need the resolver being configured.
func normalizeUpstream(up string) (string, error) {
	host, port, err := net.SplitHostPort(up)
	if err != nil {
		host, port = up, "53"
	}
	ip, perr := netip.ParseAddr(host)
	if perr != nil {
		return "", fmt.Errorf("parse upstream %q: want ip or ip:port", up)
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
		return "", fmt.Errorf("parse upstream %q: bad port %q", up, port)
	}
	return net.JoinHostPort(ip.String(), port), nil
}

// isListenAddr reports whether upstream is one of the addresses we listen on.
func isListenAddr(upstream string, listen []string) bool {
	for _, l := range listen {
		host, port, err := net.SplitHostPort(l)
		if err != nil || port == "0" {
			continue
		}
		if ip, err := netip.ParseAddr(host); err == nil && net.JoinHostPort(ip.String(), port) == upstream {
			return true
		}
	}
	return false
}
