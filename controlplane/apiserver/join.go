package apiserver

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"golang.org/x/time/rate"

	"github.com/skep-io/skep/controlplane/api"
	"github.com/skep-io/skep/controlplane/client"
)

// JoinResponse carries an agent's own credential.
type JoinResponse = client.Credential

// Node passwords: long enough to be unguessable, short enough for bcrypt
// (which reads 72 bytes).
const (
	minPasswordLen = 16
	maxPasswordLen = 72
	// maxJoinBody is far above any real join request.
	maxJoinBody = 64 << 10
)

func nodesResource() *api.Resource { return api.MustLookup("nodes") }

// join exchanges the node-join token (and the node's password) for a
// credential of the node's own.
func (s *Server) join(w http.ResponseWriter, r *http.Request, id Identity) {
	nodes := nodesResource()
	if r.Method != http.MethodPost {
		writeError(w, refuseUnread(w, r, apierrors.NewMethodNotSupported(gr(nodes), r.Method)))
		return
	}
	if !id.Joining && !id.Admin {
		writeError(w, refuseUnread(w, r, apierrors.NewForbidden(gr(nodes), "", errors.New("joining needs the node-join token"))))
		return
	}
	// Before the body is read and a password hashed: bcrypt is what makes
	// a join cost.
	if !s.joins.allow(w, r) {
		return
	}
	// The join token is the least trusted credential: its body comes in
	// within the body timeout, and is small, or is refused.
	body, err := s.admit.readBody(w, r)
	if err != nil {
		writeError(w, err)
		return
	}
	if len(body) > maxJoinBody {
		writeError(w, refuseUnread(w, r, apierrors.NewRequestEntityTooLargeError(fmt.Sprintf("a join request is at most %d bytes", maxJoinBody))))
		return
	}
	var req client.JoinRequest
	if err := json.Unmarshal(body, &req); err != nil || req.NodeName == "" {
		writeError(w, apierrors.NewBadRequest(`the body must be {"nodeName": "<node>", "password": "<the node's password>", "addresses": ["<IP>", ...]}`))
		return
	}
	if errs := s.validateJoin(&req); len(errs) > 0 {
		writeError(w, invalid(nodes, req.NodeName, errs))
		return
	}
	cred, err := s.auth.join(r.Context(), req)
	switch {
	case errors.Is(err, errNameTaken):
		s.log.Warn("join refused: wrong node password", "node", req.NodeName, "from", r.RemoteAddr)
		writeError(w, apierrors.NewForbidden(gr(nodes), req.NodeName, fmt.Errorf(
			"node name %s is taken by another machine (its node password differs); to free the name, delete the Node (kubectl delete node %s)", req.NodeName, req.NodeName)))
		return
	case errors.Is(err, errAddressTaken):
		writeError(w, apierrors.NewForbidden(gr(nodes), req.NodeName, fmt.Errorf("addresses: %w; an address belongs to one node (delete the other Node to free it)", err)))
		return
	case err != nil:
		writeError(w, err)
		return
	}
	s.log.Info("node joined", "node", req.NodeName, "addresses", req.Addresses, "expires", cred.ExpiresAt)
	writeJSON(w, http.StatusOK, cred)
}

// validateJoin checks a join request and makes its addresses canonical.
func (s *Server) validateJoin(req *client.JoinRequest) field.ErrorList {
	errs := api.Validate(nodesResource(), nodeNamed(req.NodeName))
	if n := len(req.Password); n < minPasswordLen || n > maxPasswordLen {
		errs = append(errs, field.Invalid(field.NewPath("password"), "(hidden)",
			fmt.Sprintf("must be %d to %d bytes long (the agent keeps a random one in <data-dir>/node-password)", minPasswordLen, maxPasswordLen)))
	}
	if len(req.Addresses) > 16 {
		errs = append(errs, field.TooMany(field.NewPath("addresses"), len(req.Addresses), 16))
		return errs
	}
	for i, a := range req.Addresses {
		p := field.NewPath("addresses").Index(i)
		ip, err := netip.ParseAddr(a)
		if err != nil || ip.Zone() != "" {
			errs = append(errs, field.Invalid(p, a, "must be an IP address"))
			continue
		}
		ip = ip.Unmap()
		if err := nodeAddressError(ip, s.auth.allowLoopback); err != nil {
			errs = append(errs, field.Invalid(p, a, err.Error()))
		}
		req.Addresses[i] = ip.String()
	}
	return errs
}

// renew gives a node a new credential for its current one, which then
// works for renewGrace more.
func (s *Server) renew(w http.ResponseWriter, r *http.Request, id Identity) {
	nodes := nodesResource()
	if r.Method != http.MethodPost {
		writeError(w, refuseUnread(w, r, apierrors.NewMethodNotSupported(gr(nodes), r.Method)))
		return
	}
	if id.Node == "" {
		writeError(w, refuseUnread(w, r, apierrors.NewForbidden(gr(nodes), "", fmt.Errorf("%s may not renew a node credential; a node renews its own with it", id))))
		return
	}
	if !s.joins.allow(w, r) {
		return
	}
	// A renewal says nothing in its body; what a client sends anyway is
	// read within the body timeout, so it cannot hold the connection.
	if _, err := s.admit.readBody(w, r); err != nil {
		writeError(w, err)
		return
	}
	token, _ := bearerToken(r.Header.Get("Authorization"))
	cred, err := s.auth.renew(r.Context(), id.Node, token)
	if errors.Is(err, errUnauthorized) {
		writeError(w, apierrors.NewUnauthorized("the credential expired or was revoked: join again"))
		return
	}
	if err != nil {
		writeError(w, err)
		return
	}
	s.log.Info("node credential renewed", "node", id.Node, "expires", cred.ExpiresAt)
	writeJSON(w, http.StatusOK, cred)
}

// DefaultNodeJoinRate is how many joins and renewals a server takes a
// second, in all; a client address gets a fifth of it (at least one).
const DefaultNodeJoinRate = 5

// joinLimiter rate-limits joins and renewals: per server, so that a flood
// cannot burn its CPU on password hashes, and per client address, so that
// one client cannot starve the others.
type joinLimiter struct {
	all          *rate.Limiter
	perAddr      rate.Limit
	perAddrBurst int
	mu           sync.Mutex
	addrs        map[string]*addrLimiter
	now          func() time.Time
	maxAddrs     int
}

type addrLimiter struct {
	lim  *rate.Limiter
	last time.Time
}

func newJoinLimiter(perSecond float64, now func() time.Time) *joinLimiter {
	burst := max(20, int(4*perSecond))
	per := max(1, perSecond/5)
	return &joinLimiter{
		all: rate.NewLimiter(rate.Limit(perSecond), burst), perAddr: rate.Limit(per), perAddrBurst: max(5, int(per)),
		addrs: map[string]*addrLimiter{}, now: now, maxAddrs: 4096,
	}
}

// allow takes a token of both buckets, or answers 429 with Retry-After.
func (l *joinLimiter) allow(w http.ResponseWriter, r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	wait := l.reserve(host, l.now())
	if wait == 0 {
		return true
	}
	secs := int(math.Ceil(wait.Seconds()))
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	writeError(w, refuseUnread(w, r, apierrors.NewTooManyRequests(fmt.Sprintf("too many joins and credential renewals; try again in %d s", secs), secs)))
	return false
}

// reserve returns 0 when the request may go, or how long to wait.
func (l *joinLimiter) reserve(host string, now time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	a := l.addrs[host]
	if a == nil {
		if len(l.addrs) >= l.maxAddrs {
			l.pruneLocked(now)
		}
		a = &addrLimiter{lim: rate.NewLimiter(l.perAddr, l.perAddrBurst)}
		l.addrs[host] = a
	}
	a.last = now
	ra := a.lim.ReserveN(now, 1)
	if d := ra.DelayFrom(now); d > 0 {
		ra.CancelAt(now)
		return d
	}
	rs := l.all.ReserveN(now, 1)
	if d := rs.DelayFrom(now); d > 0 {
		rs.CancelAt(now)
		ra.CancelAt(now)
		return d
	}
	return 0
}

// pruneLocked forgets addresses whose bucket has filled up again; when
// too many are still busy, all of them (a bound on memory beats fairness
// under a flood from many addresses, which the server-wide bucket holds).
func (l *joinLimiter) pruneLocked(now time.Time) {
	full := time.Duration(float64(l.perAddrBurst) / float64(l.perAddr) * float64(time.Second))
	for h, a := range l.addrs {
		if now.Sub(a.last) > full {
			delete(l.addrs, h)
		}
	}
	if len(l.addrs) >= l.maxAddrs {
		clear(l.addrs)
	}
}
