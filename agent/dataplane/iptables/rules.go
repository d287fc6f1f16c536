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
	c := l.chains
	comments := req.comments

	var (
		filterServices, filterExternal ruleBuffer
		natServices, natNodePorts      ruleBuffer
		blocks                         []chainBlock
		active                         = make(map[string]struct{}, len(req.services)*3)
	)

	for _, k := range sortedKeys(req.services) {
		s := req.services[k]
		pn := portName(k)
		proto := protoLower(k.Protocol)
		port := strconv.Itoa(int(s.Port))

		var serving, local []dataplane.Backend
		for _, b := range s.Backends {
			if b.Serving() {
				serving = append(serving, b)
				if b.Local {
					local = append(local, b)
				}
			}
		}
		hasEndpoints := len(serving) > 0
		hasExternalEndpoints := hasEndpoints && (!s.ExternalPolicyLocal || len(local) > 0)
		externallyAccessible := s.NodePort != 0 || len(s.ExternalIPs) > 0 || len(s.LoadBalancerIPs) > 0
		usesExternalChain := hasEndpoints && externallyAccessible
		usesLocalChain := s.ExternalPolicyLocal && len(local) > 0

		svcChain := c.serviceChain(kindSVC, k)
		svlChain := c.serviceChain(kindSVL, k)
		extChain := c.serviceChain(kindEXT, k)

		// What an external address does without endpoints for external
		// traffic: nothing at all is REJECT (the client hears at once);
		// only remote ones under Local policy is DROP, as kube-proxy.
		externalTarget, externalComment := "REJECT", pn+" has no endpoints"
		if hasEndpoints {
			externalTarget, externalComment = "DROP", pn+" has no local endpoints"
		}

		// The cluster IP.
		if hasEndpoints {
			natServices.line("-A", c.services, "-m", "comment", "--comment", quote(pn+" cluster IP"),
				"-m", proto, "-p", proto, "-d", s.ClusterIP.String(), "--dport", port, "-j", svcChain)
		} else {
			filterServices.line("-A", c.services, "-m", "comment", "--comment", quote(pn+" has no endpoints"),
				"-m", proto, "-p", proto, "-d", s.ClusterIP.String(), "--dport", port, "-j", "REJECT")
		}
		// External IPs.
		for _, ip := range s.ExternalIPs {
			if hasEndpoints {
				natServices.line("-A", c.services, "-m", "comment", "--comment", quote(pn+" external IP"),
					"-m", proto, "-p", proto, "-d", ip.String(), "--dport", port, "-j", extChain)
			}
			if !hasExternalEndpoints {
				filterExternal.line("-A", c.externalServices, "-m", "comment", "--comment", quote(externalComment),
					"-m", proto, "-p", proto, "-d", ip.String(), "--dport", port, "-j", externalTarget)
			}
		}
		// LoadBalancer ingress IPs.
		if hasEndpoints {
			for _, ip := range s.LoadBalancerIPs {
				natServices.line("-A", c.services, "-m", "comment", "--comment", quote(pn+" loadbalancer IP"),
					"-m", proto, "-p", proto, "-d", ip.String(), "--dport", port, "-j", extChain)
			}
		}
		if !hasExternalEndpoints {
			for _, ip := range s.LoadBalancerIPs {
				filterExternal.line("-A", c.externalServices, "-m", "comment", "--comment", quote(externalComment),
					"-m", proto, "-p", proto, "-d", ip.String(), "--dport", port, "-j", externalTarget)
			}
		}
		// The node port.
		if s.NodePort != 0 {
			nodePort := strconv.Itoa(int(s.NodePort))
			if hasEndpoints {
				natNodePorts.line("-A", c.nodePorts, "-m", "comment", "--comment", quote(pn),
					"-m", proto, "-p", proto, "--dport", nodePort, "-j", extChain)
			}
			if !hasExternalEndpoints {
				filterExternal.line("-A", c.externalServices, "-m", "comment", "--comment", quote(externalComment),
					"-m", "addrtype", "--dst-type", "LOCAL",
					"-m", proto, "-p", proto, "--dport", nodePort, "-j", externalTarget)
			}
		}

		// The per-service chains: named as active whether written or not.
		if hasEndpoints {
			active[svcChain] = struct{}{}
			for _, b := range serving {
				active[c.endpointChain(k, endpointString(b))] = struct{}{}
			}
		}
		if usesExternalChain {
			active[extChain] = struct{}{}
		}
		if usesLocalChain {
			active[svlChain] = struct{}{}
		}
		if req.rewrite != nil && !req.rewrite[k] {
			continue
		}

		svcComment := ""
		if comments {
			svcComment = pn
		}
		if hasEndpoints {
			var b ruleBuffer
			if l.clusterCIDR.IsValid() {
				// Traffic to the cluster IP from outside the pod network
				// (a route to the service range through this node) may
				// leave the node to a remote endpoint: masquerade it.
				b.line("-A", svcChain, "-m", "comment", "--comment", quote(pn+" cluster IP"),
					"-m", proto, "-p", proto, "-d", s.ClusterIP.String(), "--dport", port,
					"!", "-s", l.clusterCIDR.String(), "-j", c.markMasq)
			}
			l.writeDispatch(&b, svcChain, k, s, serving, comments)
			blocks = append(blocks, chainBlock{svcChain, b.Bytes()})
		}
		if usesExternalChain {
			var b ruleBuffer
			if !s.ExternalPolicyLocal {
				// The endpoint may be on another node: masquerade so that
				// replies come back through this one.
				b.line("-A", extChain, "-m", "comment", "--comment", quote("masquerade traffic for "+pn+" external destinations"),
					"-j", c.markMasq)
			} else {
				// Pods reaching an external address of the service are
				// treated as if they went out to the load balancer and came
				// back: the Cluster chain, whatever the policy.
				if l.clusterCIDR.IsValid() {
					b.line("-A", extChain, "-m", "comment", "--comment", quote("pod traffic for "+pn+" external destinations"),
						"-s", l.clusterCIDR.String(), "-j", svcChain)
				}
				// The node itself has the external address as source: it
				// must be masqueraded and may use any endpoint.
				b.line("-A", extChain, "-m", "comment", "--comment", quote("masquerade LOCAL traffic for "+pn+" external destinations"),
					"-m", "addrtype", "--src-type", "LOCAL", "-j", c.markMasq)
				b.line("-A", extChain, "-m", "comment", "--comment", quote("route LOCAL traffic for "+pn+" external destinations"),
					"-m", "addrtype", "--src-type", "LOCAL", "-j", svcChain)
			}
			if hasExternalEndpoints {
				target := svcChain
				if s.ExternalPolicyLocal {
					target = svlChain
				}
				b.line("-A", extChain, "-j", target)
			}
			blocks = append(blocks, chainBlock{extChain, b.Bytes()})
		}
		if usesLocalChain {
			var b ruleBuffer
			l.writeDispatch(&b, svlChain, k, s, local, comments)
			blocks = append(blocks, chainBlock{svlChain, b.Bytes()})
		}
		for _, ep := range serving {
			epString := endpointString(ep)
			sep := c.endpointChain(k, epString)
			var b ruleBuffer
			head := []string{"-A", sep}
			if svcComment != "" {
				head = append(head, "-m", "comment", "--comment", quote(svcComment))
			}
			// Hairpin: an endpoint reaching itself through the service
			// must see the node as the source, or it would answer itself.
			b.line(append(slices.Clone(head), "-s", ep.Addr.String(), "-j", c.markMasq)...)
			rule := head
			if s.AffinityTimeout > 0 {
				rule = append(rule, "-m", "recent", "--name", sep, "--set")
			}
			rule = append(rule, "-m", proto, "-p", proto, "-j", "DNAT", "--to-destination", epString)
			b.line(rule...)
			blocks = append(blocks, chainBlock{sep, b.Bytes()})
		}
	}

	// The fixed nat chains, rewritten every time like KUBE-SERVICES.
	var markMasq, postrouting ruleBuffer
	markMasq.line("-A", c.markMasq, "-j", "MARK", "--or-mark", masqueradeMark)
	postrouting.line("-A", c.postrouting, "-m", "mark", "!", "--mark", masqueradeMark+"/"+masqueradeMark, "-j", "RETURN")
	// Clear the mark so a packet that goes round the stack again is not
	// masqueraded twice.
	postrouting.line("-A", c.postrouting, "-j", "MARK", "--xor-mark", masqueradeMark)
	masq := []string{"-A", c.postrouting, "-m", "comment", "--comment", quote("kubernetes service traffic requiring SNAT"), "-j", "MASQUERADE"}
	if l.randomFully {
		masq = append(masq, "--random-fully")
	}
	postrouting.line(masq...)
	blocks = append(blocks, chainBlock{c.markMasq, markMasq.Bytes()}, chainBlock{c.postrouting, postrouting.Bytes()})

	// Node ports come last in KUBE-SERVICES: a cluster IP or external
	// address rule must win over a node port on the same port number.
	const nodePortsComment = `"kubernetes service nodeports; NOTE: this must be the last rule in this chain"`
	if len(l.nodeIPs) == 0 {
		natServices.line("-A", c.services, "-m", "comment", "--comment", nodePortsComment,
			"-m", "addrtype", "--dst-type", "LOCAL", "!", "-d", "127.0.0.0/8", "-j", c.nodePorts)
	} else {
		for _, ip := range l.nodeIPs {
			natServices.line("-A", c.services, "-m", "comment", "--comment", nodePortsComment,
				"-d", ip.String(), "-j", c.nodePorts)
		}
	}

	var forward ruleBuffer
	if l.dropInvalid {
		// An out-of-window packet marked INVALID would skip the reverse
		// NAT and reach the client with the endpoint's address, which
		// answers with a reset (kubernetes#74839).
		forward.line("-A", c.forward, "-m", "conntrack", "--ctstate", "INVALID", "-j", "DROP")
	}
	// Forward what is marked for masquerade (node ports to remote
	// endpoints) even where the FORWARD policy is DROP, and its replies.
	forward.line("-A", c.forward, "-m", "comment", "--comment", quote("kubernetes forwarding rules"),
		"-m", "mark", "--mark", masqueradeMark+"/"+masqueradeMark, "-j", "ACCEPT")
	forward.line("-A", c.forward, "-m", "comment", "--comment", quote("kubernetes forwarding conntrack rule"),
		"-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT")

	slices.SortFunc(blocks, func(a, b chainBlock) int { return strings.Compare(a.name, b.name) })

	var filter, natHead, natDecls, natRules ruleBuffer
	filter.line("*filter")
	for _, name := range []string{c.services, c.externalServices, c.forward} {
		filter.line(":" + name + " - [0:0]")
	}
	filter.Write(filterServices.Bytes())
	// Last: a packet reaches this rule still addressed to a cluster IP only
	// when nat did not translate it, because the service is unknown here
	// (yet), or because nat's and filter's rules were read on either side
	// of a sync (iptables-restore commits the tables one at a time). Routed
	// on, such a packet is lost, and its conntrack entry keeps every
	// retransmission of the SYN from being translated: the connection
	// hangs for two minutes. Refused, it leaves no entry, and the client's
	// next try meets the new rules.
	for _, cidr := range l.serviceCIDRs {
		filter.line("-A", c.services, "-m", "comment", "--comment", quote("no service at this cluster IP and port"),
			"-d", cidr.Masked().String(), "-j", "REJECT")
	}
	filter.Write(filterExternal.Bytes())
	filter.Write(forward.Bytes())
	filter.line("COMMIT")

	natHead.line("*nat")
	natHead.line(":" + c.nodePorts + " - [0:0]")
	natHead.line(":" + c.services + " - [0:0]")
	for _, b := range blocks {
		natDecls.line(":" + b.name + " - [0:0]")
	}
	natRules.Grow(natNodePorts.Len() + natServices.Len() + len(blocks)*256)
	natRules.Write(natNodePorts.Bytes())
	natRules.Write(natServices.Bytes())
	for _, b := range blocks {
		natRules.Write(b.rules)
	}
	return payload{filter: filter.Bytes(), natHead: natHead.Bytes(), natDecls: natDecls.Bytes(), natRules: natRules.Bytes(), active: active}
}

// writeDispatch writes the rules of a SVC or SVL chain choosing among
// endpoints: first the affinity checks (a client seen within the timeout
// goes back to its endpoint), then a random choice where the i-th of n
// remaining rules matches with probability 1/(n-i), so each endpoint gets
// 1/n of the new connections.
func (l *layout) writeDispatch(b *ruleBuffer, chain string, k dataplane.ServiceKey, s *dataplane.Service, endpoints []dataplane.Backend, comments bool) {
	pn := portName(k)
	if s.AffinityTimeout > 0 {
		seconds := strconv.Itoa(max(1, int(s.AffinityTimeout.Seconds())))
		for _, ep := range endpoints {
			epString := endpointString(ep)
			sep := l.chains.endpointChain(k, epString)
			rule := []string{"-A", chain}
			if comments {
				rule = append(rule, "-m", "comment", "--comment", quote(pn+" -> "+epString))
			}
			rule = append(rule, "-m", "recent", "--name", sep, "--rcheck", "--seconds", seconds, "--reap", "-j", sep)
			b.line(rule...)
		}
	}
	n := len(endpoints)
	for i, ep := range endpoints {
		epString := endpointString(ep)
		rule := []string{"-A", chain}
		if comments {
			rule = append(rule, "-m", "comment", "--comment", quote(pn+" -> "+epString))
		}
		if i < n-1 {
			rule = append(rule, "-m", "statistic", "--mode", "random", "--probability", probability(n-i))
		}
		rule = append(rule, "-j", l.chains.endpointChain(k, epString))
		b.line(rule...)
	}
}

// endpointString is "ip:port", the form kube-proxy hashes into SEP names.
func endpointString(b dataplane.Backend) string {
	return netip.AddrPortFrom(b.Addr, b.Port).String()
}
