package iptables

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/skep-io/skep/agent/dataplane"
	"github.com/skep-io/skep/agent/dataplane/internal/changes"
)

// Services reads back what the tables carry now, from iptables-save: the
// service ports with their addresses and node port from KUBE-SERVICES,
// KUBE-NODEPORTS and the filter REJECT rules, and their endpoints from the
// SVC/SVL/SEP chains. Endpoints are all serving (only those are
// programmed); a local one is one its SVL chain reaches.
func (p *Proxier) Services(ctx context.Context) ([]dataplane.Service, error) {
	out, err := p.ipt.save(ctx, "")
	if err != nil {
		return nil, fmt.Errorf("read rules: %w", err)
	}
	return readServices(savedTables(out), p.layout.chains, p.cfg.NodeName), nil
}

// readServices rebuilds services from saved nat and filter rules.
func readServices(tables map[string][]string, c chainNames, nodeName string) []dataplane.Service {
	rb := readback{chains: c, byKey: map[dataplane.ServiceKey]*readEntry{}, rules: map[string][]savedRule{}}
	for _, line := range tables["nat"] {
		if r, ok := parseRule(line); ok {
			rb.readNAT(r)
		}
	}
	for _, line := range tables["filter"] {
		if r, ok := parseRule(line); ok {
			rb.readFilter(r)
		}
	}
	services := make([]dataplane.Service, 0, len(rb.order))
	for _, k := range rb.order {
		services = append(services, rb.service(rb.byKey[k], nodeName))
	}
	return services
}

// readback is what readServices has gathered so far: the service ports in
// the order their first rule came, and the rules of the per-service chains.
type readback struct {
	chains chainNames
	order  []dataplane.ServiceKey
	byKey  map[dataplane.ServiceKey]*readEntry
	rules  map[string][]savedRule // chain → rules, for our per-service chains
}

// readEntry is one service port being read back.
type readEntry struct {
	svc    dataplane.Service
	svcCh  string // the SVC chain its cluster IP rule jumps to
	extCh  string // the EXT chain its external addresses or node port jump to
	filter bool   // seen only as a REJECT: no endpoints
}

// entry returns the service port's entry, making it on first sight.
func (rb *readback) entry(k dataplane.ServiceKey) *readEntry {
	e, ok := rb.byKey[k]
	if !ok {
		e = &readEntry{svc: dataplane.Service{Key: k}}
		rb.byKey[k] = e
		rb.order = append(rb.order, k)
	}
	return e
}

// readNAT takes one nat rule: an address or node port of a service port
// with endpoints, or a rule of a per-service chain, kept for later.
func (rb *readback) readNAT(r savedRule) {
	c := rb.chains
	switch {
	case r.chain == c.services:
		rb.readFrontend(r)
	case r.chain == c.nodePorts:
		if k, ok := parseKey(r.flags["--comment"], r.flags["-p"]); ok {
			e := rb.entry(k)
			e.svc.NodePort = parsePort(r.flags["--dport"])
			e.extCh = r.flags["-j"]
		}
	case c.isServiceChain(r.chain):
		rb.rules[r.chain] = append(rb.rules[r.chain], r)
	}
}

// readFrontend takes a nat KUBE-SERVICES rule, whose comment says which
// address of which service port it matches.
func (rb *readback) readFrontend(r savedRule) {
	comment := r.flags["--comment"]
	for _, suffix := range []string{" cluster IP", " external IP", " loadbalancer IP"} {
		name, ok := strings.CutSuffix(comment, suffix)
		if !ok {
			continue
		}
		k, ok := parseKey(name, r.flags["-p"])
		if !ok {
			return
		}
		e := rb.entry(k)
		addr := parseAddr(r.flags["-d"])
		switch suffix {
		case " cluster IP":
			e.svc.ClusterIP = addr
			e.svc.Port = parsePort(r.flags["--dport"])
			e.svcCh = r.flags["-j"]
		case " external IP":
			e.svc.ExternalIPs = append(e.svc.ExternalIPs, addr)
			e.extCh = r.flags["-j"]
		case " loadbalancer IP":
			e.svc.LoadBalancerIPs = append(e.svc.LoadBalancerIPs, addr)
			e.extCh = r.flags["-j"]
		}
		return
	}
}

// readFilter takes one filter rule: a REJECT of a service port without
// endpoints, at its cluster IP, node port or an external address.
func (rb *readback) readFilter(r savedRule) {
	c := rb.chains
	if r.chain != c.services && r.chain != c.externalServices {
		return
	}
	name, ok := strings.CutSuffix(r.flags["--comment"], " has no endpoints")
	if !ok {
		return
	}
	k, ok := parseKey(name, r.flags["-p"])
	if !ok {
		return
	}
	e := rb.entry(k)
	e.filter = true
	switch {
	case r.chain == c.services:
		e.svc.ClusterIP = parseAddr(r.flags["-d"])
		e.svc.Port = parsePort(r.flags["--dport"])
	case r.flags["--dst-type"] == "LOCAL":
		e.svc.NodePort = parsePort(r.flags["--dport"])
	default:
		// An external or load balancer address: the REJECT does not
		// tell which; report it as a load balancer one.
		e.svc.LoadBalancerIPs = append(e.svc.LoadBalancerIPs, parseAddr(r.flags["-d"]))
	}
}

// service finishes a service port: its endpoints from the SVC chain, its
// policy and local endpoints from the EXT chain and the SVL chain it leads to.
func (rb *readback) service(e *readEntry, nodeName string) dataplane.Service {
	s := e.svc
	all, affinity := rb.endpointsOf(e.svcCh)
	s.AffinityTimeout = affinity
	local := map[netip.AddrPort]bool{}
	for _, r := range rb.rules[e.extCh] {
		if r.flags["--src-type"] == "LOCAL" {
			s.ExternalPolicyLocal = true
		}
		if j := r.flags["-j"]; strings.HasPrefix(j, rb.chains.prefix+kindSVL) {
			eps, _ := rb.endpointsOf(j)
			for _, ap := range eps {
				local[ap] = true
			}
		}
	}
	s.Backends = changes.ReadBackends(all, local, nodeName)
	return s
}

// endpointsOf follows a SVC or SVL chain to its SEP chains' DNATs.
func (rb *readback) endpointsOf(chain string) (eps []netip.AddrPort, affinity time.Duration) {
	for _, r := range rb.rules[chain] {
		sep := r.flags["-j"]
		if !strings.HasPrefix(sep, rb.chains.prefix+kindSEP) {
			continue
		}
		if s, ok := r.flags["--seconds"]; ok {
			if n, err := strconv.Atoi(s); err == nil {
				affinity = time.Duration(n) * time.Second
			}
			continue // the affinity check; the same SEP comes again below
		}
		for _, sr := range rb.rules[sep] {
			if ap, err := netip.ParseAddrPort(sr.flags["--to-destination"]); err == nil {
				eps = append(eps, ap)
			}
		}
	}
	return eps, affinity
}

// parseKey turns a comment's "ns/name:port" and a protocol back into a key.
func parseKey(name, proto string) (dataplane.ServiceKey, bool) {
	ns, rest, ok := strings.Cut(name, "/")
	if !ok || ns == "" || rest == "" || strings.ContainsRune(rest, ' ') {
		return dataplane.ServiceKey{}, false
	}
	svc, port, _ := strings.Cut(rest, ":")
	return dataplane.ServiceKey{Namespace: ns, Name: svc, Port: port, Protocol: dataplane.Protocol(strings.ToUpper(proto))}, true
}

// parseAddr reads an address as iptables-save prints it (with /32).
func parseAddr(s string) netip.Addr {
	s, _, _ = strings.Cut(s, "/")
	a, _ := netip.ParseAddr(s)
	return a
}

func parsePort(s string) uint16 {
	n, _ := strconv.ParseUint(s, 10, 16)
	return uint16(n)
}
