package iptables

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/skep-io/skep/agent/dataplane"
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
	type entry struct {
		svc    dataplane.Service
		svcCh  string
		extCh  string
		filter bool // seen only as a REJECT: no endpoints
	}
	var order []dataplane.ServiceKey
	byKey := map[dataplane.ServiceKey]*entry{}
	get := func(k dataplane.ServiceKey) *entry {
		e, ok := byKey[k]
		if !ok {
			e = &entry{svc: dataplane.Service{Key: k}}
			byKey[k] = e
			order = append(order, k)
		}
		return e
	}
	rules := map[string][]savedRule{} // chain → rules, for our per-service chains
	for _, line := range tables["nat"] {
		r, ok := parseRule(line)
		if !ok {
			continue
		}
		switch r.chain {
		case c.services:
			comment := r.flags["--comment"]
			for _, suffix := range []string{" cluster IP", " external IP", " loadbalancer IP"} {
				name, ok := strings.CutSuffix(comment, suffix)
				if !ok {
					continue
				}
				k, ok := parseKey(name, r.flags["-p"])
				if !ok {
					break
				}
				e := get(k)
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
			}
		case c.nodePorts:
			if k, ok := parseKey(r.flags["--comment"], r.flags["-p"]); ok {
				e := get(k)
				e.svc.NodePort = parsePort(r.flags["--dport"])
				e.extCh = r.flags["-j"]
			}
		default:
			if c.isServiceChain(r.chain) {
				rules[r.chain] = append(rules[r.chain], r)
			}
		}
	}
	for _, line := range tables["filter"] {
		r, ok := parseRule(line)
		if !ok || (r.chain != c.services && r.chain != c.externalServices) {
			continue
		}
		name, ok := strings.CutSuffix(r.flags["--comment"], " has no endpoints")
		if !ok {
			continue
		}
		k, ok := parseKey(name, r.flags["-p"])
		if !ok {
			continue
		}
		e := get(k)
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

	// endpointsOf follows a SVC or SVL chain to its SEP chains' DNATs.
	endpointsOf := func(chain string) (eps []netip.AddrPort, affinity time.Duration) {
		for _, r := range rules[chain] {
			sep := r.flags["-j"]
			if !strings.HasPrefix(sep, c.prefix+kindSEP) {
				continue
			}
			if s, ok := r.flags["--seconds"]; ok {
				if n, err := strconv.Atoi(s); err == nil {
					affinity = time.Duration(n) * time.Second
				}
				continue // the affinity check; the same SEP comes again below
			}
			for _, sr := range rules[sep] {
				if ap, err := netip.ParseAddrPort(sr.flags["--to-destination"]); err == nil {
					eps = append(eps, ap)
				}
			}
		}
		return eps, affinity
	}

	services := make([]dataplane.Service, 0, len(order))
	for _, k := range order {
		e := byKey[k]
		s := e.svc
		all, affinity := endpointsOf(e.svcCh)
		s.AffinityTimeout = affinity
		local := map[netip.AddrPort]bool{}
		for _, r := range rules[e.extCh] {
			if r.flags["--src-type"] == "LOCAL" {
				s.ExternalPolicyLocal = true
			}
			if j := r.flags["-j"]; strings.HasPrefix(j, c.prefix+kindSVL) {
				eps, _ := endpointsOf(j)
				for _, ap := range eps {
					local[ap] = true
				}
			}
		}
		for _, ap := range all {
			b := dataplane.Backend{Addr: ap.Addr(), Port: ap.Port(), Ready: true, Local: local[ap]}
			if b.Local {
				b.NodeName = nodeName
			}
			s.Backends = append(s.Backends, b)
		}
		services = append(services, s)
	}
	return services
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
