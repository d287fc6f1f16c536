package dns

import (
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/skep-io/skep/controlplane/api/conditions"
)

// The names served under the cluster domain follow the Kubernetes DNS
// specification (kubernetes/dns: docs/specification.md):
//
//	<svc>.<ns>.svc                     A/AAAA ClusterIP, ready endpoints when headless, CNAME for ExternalName
//	_<port>._<proto>.<svc>.<ns>.svc    SRV per named port
//	<hostname>.<svc>.<ns>.svc          A of a headless service's endpoint (or a pod with hostname+subdomain)
//	<a-b-c-d>.<ns>.pod                 A of the address spelled in the name
//
// Everything else below the domain is NXDOMAIN.

// nameRecords is everything that exists at one name in the cluster zone.
type nameRecords struct {
	exists bool
	cname  string       // ExternalName target; when set nothing else is
	addrs  []netip.Addr // A and AAAA
	srvs   []srvRecord
}

// srvRecord is one SRV answer with the addresses of its target, which go in
// the additional section.
type srvRecord struct {
	target string
	port   uint16
	addrs  []netip.Addr
}

// endpoint is one address behind a service with the ports it serves.
type endpoint struct {
	addr  netip.Addr
	label string // its hostname, or the dashed address when it has none
	ports []discoveryv1.EndpointPort
}

// answerCluster answers a question for name (lowercase, inside the zone).
func (s *Server) answerCluster(req *dns.Msg, q dns.Question, name string) *dns.Msg {
	resp := new(dns.Msg)
	resp.SetReply(req)
	resp.Authoritative = true
	resp.RecursionAvailable = true

	if q.Qclass != dns.ClassINET && q.Qclass != dns.ClassANY {
		resp.Rcode = dns.RcodeRefused
		return resp
	}
	if q.Qtype == dns.TypeAXFR || q.Qtype == dns.TypeIXFR {
		// The zone is generated per query; there is nothing to transfer.
		resp.Rcode = dns.RcodeRefused
		return resp
	}

	var labels []string
	if name != s.zone {
		labels = dns.SplitDomainName(strings.TrimSuffix(name, "."+s.zone))
	}
	recs := s.lookup(labels)
	if !recs.exists {
		resp.Rcode = dns.RcodeNameError
		resp.Ns = []dns.RR{s.soa()}
		return resp
	}

	owner := q.Name // answer with the spelling that was asked
	if recs.cname != "" {
		// Not chased: the target is outside the cluster and the client's
		// resolver follows it through us like any other name.
		resp.Answer = []dns.RR{&dns.CNAME{Hdr: s.header(owner, dns.TypeCNAME), Target: recs.cname}}
		return resp
	}
	switch q.Qtype {
	case dns.TypeA, dns.TypeAAAA, dns.TypeANY:
		for _, a := range recs.addrs {
			if rr := s.addrRR(owner, a, q.Qtype); rr != nil {
				resp.Answer = append(resp.Answer, rr)
			}
		}
	case dns.TypeSRV:
		seen := map[string]bool{}
		for _, srv := range recs.srvs {
			resp.Answer = append(resp.Answer, &dns.SRV{
				Hdr:      s.header(owner, dns.TypeSRV),
				Priority: 0,
				Weight:   100,
				Port:     srv.port,
				Target:   srv.target,
			})
			if seen[srv.target] {
				continue
			}
			seen[srv.target] = true
			for _, a := range srv.addrs {
				resp.Extra = append(resp.Extra, s.addrRR(srv.target, a, dns.TypeANY))
			}
		}
	case dns.TypeSOA:
		if name == s.zone {
			resp.Answer = []dns.RR{s.soa()}
		}
	}
	if len(resp.Answer) == 0 {
		// NODATA: the name exists, the type does not (RFC 2308).
		resp.Ns = []dns.RR{s.soa()}
	}
	return resp
}

func (s *Server) header(name string, rrtype uint16) dns.RR_Header {
	return dns.RR_Header{Name: name, Rrtype: rrtype, Class: dns.ClassINET, Ttl: s.ttl}
}

// addrRR is the A or AAAA record of a for a question of qtype, or nil when
// the family does not match.
func (s *Server) addrRR(name string, a netip.Addr, qtype uint16) dns.RR {
	switch {
	case a.Is4() && (qtype == dns.TypeA || qtype == dns.TypeANY):
		return &dns.A{Hdr: s.header(name, dns.TypeA), A: a.AsSlice()}
	case a.Is6() && (qtype == dns.TypeAAAA || qtype == dns.TypeANY):
		return &dns.AAAA{Hdr: s.header(name, dns.TypeAAAA), AAAA: a.AsSlice()}
	}
	return nil
}

// soa is the zone's SOA; its minimum, the negative-caching TTL, is our TTL so
// that a name that appears is found quickly.
func (s *Server) soa() dns.RR {
	return &dns.SOA{
		Hdr:     s.header(s.zone, dns.TypeSOA),
		Ns:      "ns.dns." + s.zone,
		Mbox:    "hostmaster." + s.zone,
		Serial:  uint32(time.Now().Unix()),
		Refresh: 7200,
		Retry:   1800,
		Expire:  86400,
		Minttl:  s.ttl,
	}
}

// lookup finds what exists at the name whose labels (left to right, the
// cluster domain removed) are given.
func (s *Server) lookup(labels []string) nameRecords {
	n := len(labels)
	if n == 0 {
		return nameRecords{exists: true}
	}
	switch labels[n-1] {
	case "svc":
		return s.lookupService(labels[:n-1])
	case "pod":
		return lookupPodAddr(labels[:n-1])
	}
	return nameRecords{}
}

// lookupService resolves the labels left of "svc".
func (s *Server) lookupService(labels []string) nameRecords {
	switch len(labels) {
	case 0:
		return nameRecords{exists: true}
	case 1: // <ns>.svc exists while a service lives in the namespace
		for _, svc := range s.src.Services() {
			if svc != nil && svc.Namespace == labels[0] {
				return nameRecords{exists: true}
			}
		}
		return nameRecords{}
	}

	svc := s.service(labels[len(labels)-2], labels[len(labels)-1])
	if svc == nil {
		return nameRecords{}
	}
	switch len(labels) {
	case 2:
		return s.serviceRecords(svc)
	case 3:
		if proto, ok := strings.CutPrefix(labels[0], "_"); ok {
			// _<proto>.<svc>: an empty non-terminal above the SRV names.
			return nameRecords{exists: len(namedPorts(svc, "", proto)) > 0}
		}
		return s.hostRecords(svc, labels[0])
	case 4:
		port, ok1 := strings.CutPrefix(labels[0], "_")
		proto, ok2 := strings.CutPrefix(labels[1], "_")
		if !ok1 || !ok2 {
			return nameRecords{}
		}
		ports := namedPorts(svc, port, proto)
		if len(ports) == 0 {
			return nameRecords{}
		}
		recs := nameRecords{exists: true}
		eps := s.endpoints(svc)
		for _, sp := range ports {
			recs.srvs = append(recs.srvs, s.portSRVs(svc, sp, eps)...)
		}
		return recs
	}
	return nameRecords{}
}

// serviceRecords is what exists at <svc>.<ns>.svc.
func (s *Server) serviceRecords(svc *corev1.Service) nameRecords {
	recs := nameRecords{exists: true}
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		if svc.Spec.ExternalName != "" {
			recs.cname = dns.Fqdn(svc.Spec.ExternalName)
		}
		return recs
	}
	eps := s.endpoints(svc)
	if isHeadless(svc) {
		for _, ep := range eps {
			if !slices.Contains(recs.addrs, ep.addr) {
				recs.addrs = append(recs.addrs, ep.addr)
			}
		}
	} else {
		recs.addrs = clusterIPs(svc)
	}
	// SRV at the service name itself lists every port, named or not.
	for _, sp := range svc.Spec.Ports {
		recs.srvs = append(recs.srvs, s.portSRVs(svc, sp, eps)...)
	}
	return recs
}

// portSRVs are the SRV records of one service port: one pointing at the
// service name, or for a headless service one per endpoint that serves the
// port, pointing at the endpoint's own name and port.
func (s *Server) portSRVs(svc *corev1.Service, sp corev1.ServicePort, eps []endpoint) []srvRecord {
	switch {
	case svc.Spec.Type == corev1.ServiceTypeExternalName:
		if svc.Spec.ExternalName == "" {
			return nil
		}
		return []srvRecord{{target: dns.Fqdn(svc.Spec.ExternalName), port: uint16(sp.Port)}}
	case !isHeadless(svc):
		return []srvRecord{{target: s.serviceName(svc), port: uint16(sp.Port), addrs: clusterIPs(svc)}}
	}
	var out []srvRecord
	for _, ep := range eps {
		for _, p := range ep.ports {
			if p.Port == nil || deref(p.Name) != sp.Name || protocol(deref(p.Protocol)) != protocol(sp.Protocol) {
				continue
			}
			out = append(out, srvRecord{
				target: ep.label + "." + s.serviceName(svc),
				port:   uint16(*p.Port),
				addrs:  []netip.Addr{ep.addr},
			})
		}
	}
	return out
}

// hostRecords is what exists at <host>.<svc>.<ns>.svc: for a headless
// service, the endpoints whose hostname (or dashed address) is host, and the
// node's pods whose spec names host and the service as subdomain.
func (s *Server) hostRecords(svc *corev1.Service, host string) nameRecords {
	if !isHeadless(svc) {
		return nameRecords{}
	}
	var recs nameRecords
	add := func(a netip.Addr) {
		recs.exists = true
		if !slices.Contains(recs.addrs, a) {
			recs.addrs = append(recs.addrs, a)
		}
	}
	for _, ep := range s.endpoints(svc) {
		if ep.label == host {
			add(ep.addr)
		}
	}
	for _, pod := range s.src.Pods() {
		if pod == nil || pod.Namespace != svc.Namespace || pod.Spec.Hostname != host || pod.Spec.Subdomain != svc.Name {
			continue
		}
		if !conditions.PodReady(pod) && !svc.Spec.PublishNotReadyAddresses {
			continue
		}
		for _, a := range podIPs(pod) {
			add(a)
		}
	}
	return recs
}

// lookupPodAddr resolves the labels left of "pod": <a-b-c-d>.<ns>. Like
// Kubernetes' default "pods insecure" mode it answers the address spelled in
// the name without checking that such a pod exists: this agent sees only its
// own node's pods.
func lookupPodAddr(labels []string) nameRecords {
	switch len(labels) {
	case 0, 1:
		return nameRecords{exists: true}
	case 2:
		a, ok := undash(labels[0])
		if !ok {
			return nameRecords{}
		}
		return nameRecords{exists: true, addrs: []netip.Addr{a}}
	}
	return nameRecords{}
}

// service finds the service ns/name in the Source.
func (s *Server) service(name, ns string) *corev1.Service {
	for _, svc := range s.src.Services() {
		if svc != nil && svc.Name == name && svc.Namespace == ns {
			return svc
		}
	}
	return nil
}

// endpoints lists the addresses behind svc in its EndpointSlices: the
// ready ones (an unset condition meaning ready), and the not ready ones
// too when the service publishes them, after the ready ones of their
// slice, in the order the Endpoints listed addresses and notReadyAddresses.
func (s *Server) endpoints(svc *corev1.Service) []endpoint {
	var out []endpoint
	for _, es := range s.src.EndpointSlices() {
		if es == nil || es.Labels[discoveryv1.LabelServiceName] != svc.Name || es.Namespace != svc.Namespace {
			continue
		}
		for _, wantReady := range []bool{true, false} {
			if !wantReady && !svc.Spec.PublishNotReadyAddresses {
				continue
			}
			for _, e := range es.Endpoints {
				if ready := e.Conditions.Ready == nil || *e.Conditions.Ready; ready != wantReady {
					continue
				}
				for _, ip := range e.Addresses {
					a, err := netip.ParseAddr(ip)
					if err != nil {
						continue
					}
					label := strings.ToLower(deref(e.Hostname))
					if label == "" {
						label = dash(a)
					}
					out = append(out, endpoint{addr: a.Unmap(), label: label, ports: es.Ports})
				}
			}
		}
	}
	return out
}

// deref is the value of an optional field, its zero value when unset.
func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

// serviceName is the FQDN of svc.
func (s *Server) serviceName(svc *corev1.Service) string {
	return svc.Name + "." + svc.Namespace + ".svc." + s.zone
}

// namedPorts are the ports of svc with the given name ("" for any named
// port) and protocol (lowercase, as in an SRV label).
func namedPorts(svc *corev1.Service, name, proto string) []corev1.ServicePort {
	var out []corev1.ServicePort
	for _, sp := range svc.Spec.Ports {
		if sp.Name == "" || (name != "" && sp.Name != name) {
			continue
		}
		if strings.ToLower(string(protocol(sp.Protocol))) == proto {
			out = append(out, sp)
		}
	}
	return out
}

func protocol(p corev1.Protocol) corev1.Protocol {
	if p == "" {
		return corev1.ProtocolTCP
	}
	return p
}

func isHeadless(svc *corev1.Service) bool {
	return svc.Spec.ClusterIP == corev1.ClusterIPNone
}

// clusterIPs are the parsed cluster addresses of svc, both families.
func clusterIPs(svc *corev1.Service) []netip.Addr {
	ips := svc.Spec.ClusterIPs
	if len(ips) == 0 && svc.Spec.ClusterIP != "" {
		ips = []string{svc.Spec.ClusterIP}
	}
	var out []netip.Addr
	for _, ip := range ips {
		if a, err := netip.ParseAddr(ip); err == nil && !slices.Contains(out, a.Unmap()) {
			out = append(out, a.Unmap())
		}
	}
	return out
}

func podIPs(pod *corev1.Pod) []netip.Addr {
	var out []netip.Addr
	add := func(ip string) {
		if a, err := netip.ParseAddr(ip); err == nil && !slices.Contains(out, a.Unmap()) {
			out = append(out, a.Unmap())
		}
	}
	add(pod.Status.PodIP)
	for _, ip := range pod.Status.PodIPs {
		add(ip.IP)
	}
	return out
}

// dash spells an address as one DNS label: 10.244.1.5 is 10-244-1-5 and
// fd00::1 is fd00--1, as Kubernetes does for pod and endpoint names.
func dash(a netip.Addr) string {
	if a.Is4() {
		return strings.ReplaceAll(a.String(), ".", "-")
	}
	return strings.ReplaceAll(a.String(), ":", "-")
}

// undash parses a label written by dash.
func undash(label string) (netip.Addr, bool) {
	if strings.Count(label, "-") == 3 && !strings.Contains(label, "--") {
		a, err := netip.ParseAddr(strings.ReplaceAll(label, "-", "."))
		return a, err == nil && a.Is4()
	}
	a, err := netip.ParseAddr(strings.ReplaceAll(label, "-", ":"))
	return a, err == nil && a.Is6() && !a.Is4In6() && a.Zone() == ""
}
