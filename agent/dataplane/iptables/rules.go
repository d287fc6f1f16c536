package iptables

import (
	"bytes"
	"cmp"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/skep-io/skep/agent/dataplane"
)

// masqueradeMark is kube-proxy's default mark (bit 14) for packets that
// KUBE-POSTROUTING must source-NAT.
const masqueradeMark = "0x4000"

// largeClusterEndpointsThreshold is kube-proxy's: above this many endpoints
// the per-endpoint rules lose their comments, which shrinks the payload by
// a third and makes iptables-restore correspondingly faster.
const largeClusterEndpointsThreshold = 1000

// layout is everything besides the services that decides the rules: the
// chain names and the node's settings. It writes iptables-restore payloads
// in the layout of kube-proxy's iptables mode.
type layout struct {
	chains      chainNames
	clusterCIDR netip.Prefix // masquerade traffic to ClusterIPs from outside it; unset: never
	nodeIPs     []netip.Addr // node ports answer here; empty: on every local address
	randomFully bool         // MASQUERADE --random-fully, as kube-proxy when iptables has it
	dropInvalid bool         // drop ctstate INVALID in FORWARD, unless nf_conntrack_tcp_be_liberal is set
	// serviceCIDRs are the ranges ClusterIPs come from. What is still
	// addressed to them after nat is not a programmed service and is
	// rejected rather than routed away; unset: no such rule (kube-proxy's
	// iptables mode has none; its nftables mode does this).
	serviceCIDRs []netip.Prefix
}

// request is one sync's input to the layout.
type request struct {
	services map[dataplane.ServiceKey]*dataplane.Service // the whole desired state

	// rewrite says whose per-service chains (SVC, SVL, EXT, SEP) the payload
	// flushes and rewrites; nil means everyone's (a full sync). The chains of
	// other services stay as they are in the kernel.
	rewrite map[dataplane.ServiceKey]bool

	// comments puts kube-proxy's comments on the per-endpoint rules; it
	// leaves them out in large clusters (largeClusterEndpointsThreshold).
	comments bool
}

// payload is a generated iptables-restore input, less the deletion of
// stale chains, which depends on what it makes active.
type payload struct {
	filter, natHead, natDecls, natRules []byte
	// active are the per-service nat chains the desired state uses, whether
	// or not this payload rewrote them.
	active map[string]struct{}
}

// bytes is the iptables-restore input that writes the payload and deletes
// the stale per-service chains (programmed before, no longer active).
func (p payload) bytes(stale []string) []byte {
	var out ruleBuffer
	out.Grow(len(p.filter) + len(p.natHead) + len(p.natDecls) + len(p.natRules) + len(stale)*64 + 16)
	out.Write(p.filter)
	out.Write(p.natHead)
	out.Write(p.natDecls)
	for _, name := range stale {
		out.line(":" + name + " - [0:0]")
	}
	out.Write(p.natRules)
	for _, name := range stale {
		out.line("-X", name)
	}
	out.line("COMMIT")
	return out.Bytes()
}

// chainBlock is one nat chain and its rules, in order.
type chainBlock struct {
	name  string
	rules []byte
}

// ruleBuffer collects iptables-restore lines.
type ruleBuffer struct{ bytes.Buffer }

// line writes one line of space separated words.
func (b *ruleBuffer) line(words ...string) {
	for i, w := range words {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(w)
	}
	b.WriteByte('\n')
}

// quote quotes a comment for iptables-restore when it has spaces, as
// kube-proxy writes them.
func quote(s string) string {
	if strings.ContainsRune(s, ' ') {
		return `"` + s + `"`
	}
	return s
}

// sortedKeys orders service ports by namespace, name, port name, protocol:
// the order rules appear in, so that equal input gives an equal payload.
func sortedKeys(services map[dataplane.ServiceKey]*dataplane.Service) []dataplane.ServiceKey {
	keys := make([]dataplane.ServiceKey, 0, len(services))
	for k := range services {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b dataplane.ServiceKey) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name),
			cmp.Compare(a.Port, b.Port), cmp.Compare(a.Protocol, b.Protocol))
	})
	return keys
}

// countEndpoints counts serving endpoints, to decide large-cluster mode.
func countEndpoints(services map[dataplane.ServiceKey]*dataplane.Service) int {
	n := 0
	for _, s := range services {
		for _, b := range s.Backends {
			if b.Serving() {
				n++
			}
		}
	}
	return n
}

// generate writes the payload for a request. The filter table's chains and
// nat's KUBE-SERVICES, KUBE-NODEPORTS, KUBE-MARK-MASQ and KUBE-POSTROUTING
// are rewritten whole every time (they are one rule or a few per service,
// as in kube-proxy); per-service chains only for req.rewrite.
func (l *layout) generate(req request) payload {
	w := ruleWriter{layout: l, comments: req.comments, active: make(map[string]struct{}, len(req.services)*3)}
	for _, k := range sortedKeys(req.services) {
		sp := l.newServicePort(k, req.services[k])
		w.writeFrontendRules(sp)
		w.markActive(sp)
		if req.rewrite != nil && !req.rewrite[k] {
			continue
		}
		w.writeServiceChains(sp)
	}
	w.writeFixedChains()
	return w.payload()
}

// servicePort is what the rules of one service port are written from: the
// service, its serving endpoints and the names of the chains it may use.
type servicePort struct {
	key   dataplane.ServiceKey
	svc   *dataplane.Service
	name  string // ns/name:port, in the comments
	proto string // tcp or udp, for -m and -p
	port  string // the service port, for --dport

	serving []dataplane.Backend // the endpoints new connections may go to
	local   []dataplane.Backend // those of serving on this node

	svcChain, svlChain, extChain string
}

func (l *layout) newServicePort(k dataplane.ServiceKey, s *dataplane.Service) *servicePort {
	sp := &servicePort{
		key:      k,
		svc:      s,
		name:     portName(k),
		proto:    protoLower(k.Protocol),
		port:     strconv.Itoa(int(s.Port)),
		svcChain: l.chains.serviceChain(kindSVC, k),
		svlChain: l.chains.serviceChain(kindSVL, k),
		extChain: l.chains.serviceChain(kindEXT, k),
	}
	for _, b := range s.Backends {
		if b.Serving() {
			sp.serving = append(sp.serving, b)
			if b.Local {
				sp.local = append(sp.local, b)
			}
		}
	}
	return sp
}

func (sp *servicePort) hasEndpoints() bool { return len(sp.serving) > 0 }

// hasExternalEndpoints: external traffic has somewhere to go, which under
// Local policy means an endpoint on this node.
func (sp *servicePort) hasExternalEndpoints() bool {
	return sp.hasEndpoints() && (!sp.svc.ExternalPolicyLocal || len(sp.local) > 0)
}

func (sp *servicePort) externallyAccessible() bool {
	s := sp.svc
	return s.NodePort != 0 || len(s.ExternalIPs) > 0 || len(s.LoadBalancerIPs) > 0
}

func (sp *servicePort) usesExternalChain() bool {
	return sp.hasEndpoints() && sp.externallyAccessible()
}

func (sp *servicePort) usesLocalChain() bool { return sp.svc.ExternalPolicyLocal && len(sp.local) > 0 }

// ruleWriter collects one payload's rules, table by table, while generate
// goes through the service ports in order.
type ruleWriter struct {
	*layout
	comments bool // on the per-endpoint rules (request.comments)

	filterServices, filterExternal ruleBuffer // filter's KUBE-SERVICES, KUBE-EXTERNAL-SERVICES
	natServices, natNodePorts      ruleBuffer // nat's KUBE-SERVICES, KUBE-NODEPORTS
	blocks                         []chainBlock
	active                         map[string]struct{}
}

// writeFrontendRules writes the rules that match a service port's
// addresses: jumps to its chains in nat when it has endpoints, REJECT or
// DROP in filter when the traffic has nowhere to go.
func (w *ruleWriter) writeFrontendRules(sp *servicePort) {
	c, s, proto, port := w.chains, sp.svc, sp.proto, sp.port
	if !sp.hasEndpoints() {
		w.filterServices.line("-A", c.services, "-m", "comment", "--comment", quote(sp.name+" has no endpoints"),
			"-m", proto, "-p", proto, "-d", s.ClusterIP.String(), "--dport", port, "-j", "REJECT")
	} else {
		w.natServices.line("-A", c.services, "-m", "comment", "--comment", quote(sp.name+" cluster IP"),
			"-m", proto, "-p", proto, "-d", s.ClusterIP.String(), "--dport", port, "-j", sp.svcChain)
		for _, ip := range s.ExternalIPs {
			w.natServices.line("-A", c.services, "-m", "comment", "--comment", quote(sp.name+" external IP"),
				"-m", proto, "-p", proto, "-d", ip.String(), "--dport", port, "-j", sp.extChain)
		}
		for _, ip := range s.LoadBalancerIPs {
			w.natServices.line("-A", c.services, "-m", "comment", "--comment", quote(sp.name+" loadbalancer IP"),
				"-m", proto, "-p", proto, "-d", ip.String(), "--dport", port, "-j", sp.extChain)
		}
		if s.NodePort != 0 {
			w.natNodePorts.line("-A", c.nodePorts, "-m", "comment", "--comment", quote(sp.name),
				"-m", proto, "-p", proto, "--dport", strconv.Itoa(int(s.NodePort)), "-j", sp.extChain)
		}
	}
	if !sp.hasExternalEndpoints() {
		w.writeExternalRejects(sp)
	}
}

// writeExternalRejects turns away traffic to the external addresses and the
// node port of a service port that has no endpoint for it.
func (w *ruleWriter) writeExternalRejects(sp *servicePort) {
	c, s, proto, port := w.chains, sp.svc, sp.proto, sp.port
	// No endpoints at all is REJECT (the client hears at once); only
	// remote ones under Local policy is DROP, as kube-proxy.
	target, comment := "REJECT", quote(sp.name+" has no endpoints")
	if sp.hasEndpoints() {
		target, comment = "DROP", quote(sp.name+" has no local endpoints")
	}
	for _, ip := range slices.Concat(s.ExternalIPs, s.LoadBalancerIPs) {
		w.filterExternal.line("-A", c.externalServices, "-m", "comment", "--comment", comment,
			"-m", proto, "-p", proto, "-d", ip.String(), "--dport", port, "-j", target)
	}
	if s.NodePort != 0 {
		w.filterExternal.line("-A", c.externalServices, "-m", "comment", "--comment", comment,
			"-m", "addrtype", "--dst-type", "LOCAL",
			"-m", proto, "-p", proto, "--dport", strconv.Itoa(int(s.NodePort)), "-j", target)
	}
}

// markActive names the per-service chains a service port uses, whether or
// not this payload rewrites them, so that they are not deleted as stale.
func (w *ruleWriter) markActive(sp *servicePort) {
	if sp.hasEndpoints() {
		w.active[sp.svcChain] = struct{}{}
		for _, b := range sp.serving {
			w.active[w.chains.endpointChain(sp.key, endpointString(b))] = struct{}{}
		}
	}
	if sp.usesExternalChain() {
		w.active[sp.extChain] = struct{}{}
	}
	if sp.usesLocalChain() {
		w.active[sp.svlChain] = struct{}{}
	}
}

// writeServiceChains writes the per-service chains of a service port: SVC,
// EXT, SVL and one SEP for each endpoint, as far as it uses them.
func (w *ruleWriter) writeServiceChains(sp *servicePort) {
	if sp.hasEndpoints() {
		w.writeServiceChain(sp)
	}
	if sp.usesExternalChain() {
		w.writeExternalChain(sp)
	}
	if sp.usesLocalChain() {
		w.writeLocalChain(sp)
	}
	for _, ep := range sp.serving {
		w.writeEndpointChain(sp, ep)
	}
}

func (w *ruleWriter) addBlock(name string, b *ruleBuffer) {
	w.blocks = append(w.blocks, chainBlock{name, b.Bytes()})
}

// writeServiceChain writes the SVC chain: every serving endpoint, for
// traffic to the cluster IP and external traffic under Cluster policy.
func (w *ruleWriter) writeServiceChain(sp *servicePort) {
	var b ruleBuffer
	if w.clusterCIDR.IsValid() {
		// Traffic to the cluster IP from outside the pod network (a
		// route to the service range through this node) may leave the
		// node to a remote endpoint: masquerade it.
		b.line("-A", sp.svcChain, "-m", "comment", "--comment", quote(sp.name+" cluster IP"),
			"-m", sp.proto, "-p", sp.proto, "-d", sp.svc.ClusterIP.String(), "--dport", sp.port,
			"!", "-s", w.clusterCIDR.String(), "-j", w.chains.markMasq)
	}
	w.writeDispatch(&b, sp.svcChain, sp, sp.serving)
	w.addBlock(sp.svcChain, &b)
}

// writeLocalChain writes the SVL chain: the endpoints on this node, for
// external traffic under Local policy.
func (w *ruleWriter) writeLocalChain(sp *servicePort) {
	var b ruleBuffer
	w.writeDispatch(&b, sp.svlChain, sp, sp.local)
	w.addBlock(sp.svlChain, &b)
}

// writeExternalChain writes the EXT chain, where the external addresses and
// the node port lead: masquerading as the policy needs, then on to the SVC
// chain, or the SVL chain under Local policy.
func (w *ruleWriter) writeExternalChain(sp *servicePort) {
	var b ruleBuffer
	ext, markMasq := sp.extChain, w.chains.markMasq
	if !sp.svc.ExternalPolicyLocal {
		// The endpoint may be on another node: masquerade so that
		// replies come back through this one.
		b.line("-A", ext, "-m", "comment", "--comment", quote("masquerade traffic for "+sp.name+" external destinations"),
			"-j", markMasq)
	} else {
		// Pods reaching an external address of the service are treated
		// as if they went out to the load balancer and came back: the
		// Cluster chain, whatever the policy.
		if w.clusterCIDR.IsValid() {
			b.line("-A", ext, "-m", "comment", "--comment", quote("pod traffic for "+sp.name+" external destinations"),
				"-s", w.clusterCIDR.String(), "-j", sp.svcChain)
		}
		// The node itself has the external address as source: it must
		// be masqueraded and may use any endpoint.
		b.line("-A", ext, "-m", "comment", "--comment", quote("masquerade LOCAL traffic for "+sp.name+" external destinations"),
			"-m", "addrtype", "--src-type", "LOCAL", "-j", markMasq)
		b.line("-A", ext, "-m", "comment", "--comment", quote("route LOCAL traffic for "+sp.name+" external destinations"),
			"-m", "addrtype", "--src-type", "LOCAL", "-j", sp.svcChain)
	}
	if sp.hasExternalEndpoints() {
		target := sp.svcChain
		if sp.svc.ExternalPolicyLocal {
			target = sp.svlChain
		}
		b.line("-A", ext, "-j", target)
	}
	w.addBlock(ext, &b)
}

// writeEndpointChain writes one endpoint's SEP chain: the hairpin
// masquerade, the affinity record and the DNAT.
func (w *ruleWriter) writeEndpointChain(sp *servicePort, ep dataplane.Backend) {
	epString := endpointString(ep)
	sep := w.chains.endpointChain(sp.key, epString)
	var b ruleBuffer
	head := []string{"-A", sep}
	if w.comments {
		head = append(head, "-m", "comment", "--comment", quote(sp.name))
	}
	// Hairpin: an endpoint reaching itself through the service must see
	// the node as the source, or it would answer itself.
	b.line(append(slices.Clone(head), "-s", ep.Addr.String(), "-j", w.chains.markMasq)...)
	rule := head
	if sp.svc.AffinityTimeout > 0 {
		rule = append(rule, "-m", "recent", "--name", sep, "--set")
	}
	rule = append(rule, "-m", sp.proto, "-p", sp.proto, "-j", "DNAT", "--to-destination", epString)
	b.line(rule...)
	w.addBlock(sep, &b)
}

// writeFixedChains writes what does not depend on any one service:
// KUBE-MARK-MASQ, KUBE-POSTROUTING and the jump to KUBE-NODEPORTS, which
// are rewritten every time like KUBE-SERVICES.
func (w *ruleWriter) writeFixedChains() {
	c := w.chains
	var markMasq, postrouting ruleBuffer
	markMasq.line("-A", c.markMasq, "-j", "MARK", "--or-mark", masqueradeMark)
	postrouting.line("-A", c.postrouting, "-m", "mark", "!", "--mark", masqueradeMark+"/"+masqueradeMark, "-j", "RETURN")
	// Clear the mark so a packet that goes round the stack again is not
	// masqueraded twice.
	postrouting.line("-A", c.postrouting, "-j", "MARK", "--xor-mark", masqueradeMark)
	masq := []string{"-A", c.postrouting, "-m", "comment", "--comment", quote("kubernetes service traffic requiring SNAT"), "-j", "MASQUERADE"}
	if w.randomFully {
		masq = append(masq, "--random-fully")
	}
	postrouting.line(masq...)
	w.addBlock(c.markMasq, &markMasq)
	w.addBlock(c.postrouting, &postrouting)

	// Node ports come last in KUBE-SERVICES: a cluster IP or external
	// address rule must win over a node port on the same port number.
	const nodePortsComment = `"kubernetes service nodeports; NOTE: this must be the last rule in this chain"`
	if len(w.nodeIPs) == 0 {
		w.natServices.line("-A", c.services, "-m", "comment", "--comment", nodePortsComment,
			"-m", "addrtype", "--dst-type", "LOCAL", "!", "-d", "127.0.0.0/8", "-j", c.nodePorts)
	}
	for _, ip := range w.nodeIPs {
		w.natServices.line("-A", c.services, "-m", "comment", "--comment", nodePortsComment,
			"-d", ip.String(), "-j", c.nodePorts)
	}
}

// filterTable writes the whole filter table: KUBE-SERVICES,
// KUBE-EXTERNAL-SERVICES and KUBE-FORWARD.
func (w *ruleWriter) filterTable() []byte {
	c := w.chains
	var filter ruleBuffer
	filter.line("*filter")
	for _, name := range []string{c.services, c.externalServices, c.forward} {
		filter.line(":" + name + " - [0:0]")
	}
	filter.Write(w.filterServices.Bytes())
	// Last: a packet reaches this rule still addressed to a cluster IP only
	// when nat did not translate it, because the service is unknown here
	// (yet), or because nat's and filter's rules were read on either side
	// of a sync (iptables-restore commits the tables one at a time). Routed
	// on, such a packet is lost, and its conntrack entry keeps every
	// retransmission of the SYN from being translated: the connection
	// hangs for two minutes. Refused, it leaves no entry, and the client's
	// next try meets the new rules.
	for _, cidr := range w.serviceCIDRs {
		filter.line("-A", c.services, "-m", "comment", "--comment", quote("no service at this cluster IP and port"),
			"-d", cidr.Masked().String(), "-j", "REJECT")
	}
	filter.Write(w.filterExternal.Bytes())
	w.writeForwardChain(&filter)
	filter.line("COMMIT")
	return filter.Bytes()
}

// writeForwardChain writes KUBE-FORWARD.
func (w *ruleWriter) writeForwardChain(b *ruleBuffer) {
	c := w.chains
	if w.dropInvalid {
		// An out-of-window packet marked INVALID would skip the reverse
		// NAT and reach the client with the endpoint's address, which
		// answers with a reset (kubernetes#74839).
		b.line("-A", c.forward, "-m", "conntrack", "--ctstate", "INVALID", "-j", "DROP")
	}
	// Forward what is marked for masquerade (node ports to remote
	// endpoints) even where the FORWARD policy is DROP, and its replies.
	b.line("-A", c.forward, "-m", "comment", "--comment", quote("kubernetes forwarding rules"),
		"-m", "mark", "--mark", masqueradeMark+"/"+masqueradeMark, "-j", "ACCEPT")
	b.line("-A", c.forward, "-m", "comment", "--comment", quote("kubernetes forwarding conntrack rule"),
		"-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT")
}

// payload puts the tables together: filter whole, then nat's fixed chains,
// the declarations of the chains written and their rules, in name order.
func (w *ruleWriter) payload() payload {
	c := w.chains
	slices.SortFunc(w.blocks, func(a, b chainBlock) int { return strings.Compare(a.name, b.name) })

	var natHead, natDecls, natRules ruleBuffer
	natHead.line("*nat")
	natHead.line(":" + c.nodePorts + " - [0:0]")
	natHead.line(":" + c.services + " - [0:0]")
	for _, b := range w.blocks {
		natDecls.line(":" + b.name + " - [0:0]")
	}
	natRules.Grow(w.natNodePorts.Len() + w.natServices.Len() + len(w.blocks)*256)
	natRules.Write(w.natNodePorts.Bytes())
	natRules.Write(w.natServices.Bytes())
	for _, b := range w.blocks {
		natRules.Write(b.rules)
	}
	return payload{filter: w.filterTable(), natHead: natHead.Bytes(), natDecls: natDecls.Bytes(), natRules: natRules.Bytes(), active: w.active}
}

// writeDispatch writes the rules of a SVC or SVL chain choosing among
// endpoints: first the affinity checks (a client seen within the timeout
// goes back to its endpoint), then a random choice where the i-th of n
// remaining rules matches with probability 1/(n-i), so each endpoint gets
// 1/n of the new connections.
func (w *ruleWriter) writeDispatch(b *ruleBuffer, chain string, sp *servicePort, endpoints []dataplane.Backend) {
	// head starts a rule of the chain that leads to the endpoint.
	head := func(epString string) []string {
		rule := []string{"-A", chain}
		if w.comments {
			rule = append(rule, "-m", "comment", "--comment", quote(sp.name+" -> "+epString))
		}
		return rule
	}
	if sp.svc.AffinityTimeout > 0 {
		seconds := strconv.Itoa(max(1, int(sp.svc.AffinityTimeout.Seconds())))
		for _, ep := range endpoints {
			epString := endpointString(ep)
			sep := w.chains.endpointChain(sp.key, epString)
			b.line(append(head(epString), "-m", "recent", "--name", sep, "--rcheck", "--seconds", seconds, "--reap", "-j", sep)...)
		}
	}
	n := len(endpoints)
	for i, ep := range endpoints {
		epString := endpointString(ep)
		rule := head(epString)
		if i < n-1 {
			rule = append(rule, "-m", "statistic", "--mode", "random", "--probability", probability(n-i))
		}
		b.line(append(rule, "-j", w.chains.endpointChain(sp.key, epString))...)
	}
}

// endpointString is "ip:port", the form kube-proxy hashes into SEP names.
func endpointString(b dataplane.Backend) string {
	return netip.AddrPortFrom(b.Addr, b.Port).String()
}
