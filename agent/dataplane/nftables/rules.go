package nftables

import (
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/skep-io/skep/agent/dataplane"
)

// layout is everything besides the services that decides the rules: the
// table and the node's settings. It writes `nft -f` transactions in the
// layout of kube-proxy's nftables mode.
type layout struct {
	table       string
	clusterCIDR netip.Prefix // masquerade traffic to ClusterIPs from outside it; unset: never
	nodeIPs     []netip.Addr // node ports answer here; empty: on every local address but loopback
	// serviceCIDRs are the ranges ClusterIPs come from. What is still
	// addressed to them after nat is not a programmed service and is
	// refused. kube-proxy drops it; skep refuses it, as its other modes do,
	// so that a connection to an unknown cluster IP fails at once.
	serviceCIDRs []netip.Prefix
	// dropInvalid drops forwarded packets conntrack finds INVALID, unless
	// nf_conntrack_tcp_be_liberal is set: an out-of-window packet would
	// skip the reverse NAT and reach the client with the endpoint's
	// address, which answers with a reset (kubernetes#74839).
	dropInvalid bool
}

// element is one element of a map or set.
type element struct {
	container string // the map or set
	key       string // as nft writes it: "172.30.0.41 . tcp . 80"
	comment   string
	value     string // a map's verdict ("goto service-..."); "" in a set
}

// id is what names an element in its container.
func (e element) id() elemID { return elemID{e.container, e.key} }

type elemID struct{ container, key string }

// chainRules is one per-service chain and its rules, in order.
type chainRules struct {
	name  string
	rules []string
}

// serviceRules is everything one service port puts in the table.
type serviceRules struct {
	elements []element
	chains   []chainRules
	sets     map[string]time.Duration // affinity sets and their timeouts
}

// servicePort is a service port with the sets of endpoints its rules use.
type servicePort struct {
	svc            *dataplane.Service
	proto, port    string
	serving, local []netip.AddrPort
	clusterChain   string
	localChain     string
	externalChain  string
}

func newServicePort(s *dataplane.Service) *servicePort {
	sp := &servicePort{
		svc:           s,
		proto:         protoLower(s.Key.Protocol),
		port:          strconv.Itoa(int(s.Port)),
		clusterChain:  serviceChain(clusterChainPrefix, s.Key),
		localChain:    serviceChain(localChainPrefix, s.Key),
		externalChain: serviceChain(externalChainPrefix, s.Key),
	}
	for _, b := range s.Backends {
		if b.Serving() {
			ap := netip.AddrPortFrom(b.Addr, b.Port)
			sp.serving = append(sp.serving, ap)
			if b.Local {
				sp.local = append(sp.local, ap)
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

// usesExternalChain is based on hasEndpoints, not hasExternalEndpoints: the
// external chain's short cuts for pods and the node itself are needed even
// when no endpoint is local.
func (sp *servicePort) usesExternalChain() bool {
	return sp.hasEndpoints() && sp.externallyAccessible()
}

func (sp *servicePort) usesLocalChain() bool { return sp.svc.ExternalPolicyLocal && len(sp.local) > 0 }

// addrKey is the key of a service address in @service-ips and
// @no-endpoint-services.
func (sp *servicePort) addrKey(ip netip.Addr) string {
	return ip.String() + " . " + sp.proto + " . " + sp.port
}

func (sp *servicePort) nodePortKey() string {
	return sp.proto + " . " + strconv.Itoa(int(sp.svc.NodePort))
}

// serviceRules writes what one service port puts in the table: its
// addresses in the maps, its chains, its affinity sets.
func (l *layout) serviceRules(s *dataplane.Service) serviceRules {
	sp := newServicePort(s)
	var r serviceRules
	r.elements = sp.elements()
	if sp.hasEndpoints() {
		r.chains = append(r.chains, chainRules{sp.clusterChain, l.clusterChainRules(sp)})
	}
	if sp.usesExternalChain() {
		r.chains = append(r.chains, chainRules{sp.externalChain, l.externalChainRules(sp)})
	}
	if sp.usesLocalChain() {
		r.chains = append(r.chains, chainRules{sp.localChain, dispatchRules(sp, sp.local)})
	}
	for _, ep := range sp.serving {
		r.chains = append(r.chains, chainRules{endpointChain(s.Key, ep), endpointChainRules(sp, ep)})
	}
	if s.AffinityTimeout > 0 {
		r.sets = make(map[string]time.Duration, len(sp.serving))
		for _, ep := range sp.serving {
			r.sets[affinitySet(s.Key, ep)] = affinityTimeout(s)
		}
	}
	return r
}

// affinityTimeout is the service's timeout in whole seconds, at least one,
// as nft takes it.
func affinityTimeout(s *dataplane.Service) time.Duration {
	return max(time.Second, s.AffinityTimeout.Truncate(time.Second))
}

// elements are the service port's entries in the maps: its addresses and
// node port lead to its chains when it has endpoints for them, or to
// reject-chain (no endpoints at all) or drop (none for external traffic
// under Local policy) when it has not.
func (sp *servicePort) elements() []element {
	s, name := sp.svc, portName(sp.svc.Key)
	out := []element{{container: clusterIPsSet, key: s.ClusterIP.String()}}
	if sp.hasEndpoints() {
		out = append(out, element{container: serviceIPsMap, key: sp.addrKey(s.ClusterIP), value: "goto " + sp.clusterChain})
	} else {
		out = append(out, element{container: noEndpointServicesMap, key: sp.addrKey(s.ClusterIP), comment: name, value: "goto " + rejectChain})
	}
	noExternal := "goto " + rejectChain
	if sp.hasEndpoints() {
		noExternal = "drop" // the external chain still takes pods and the node itself
	}
	for _, ip := range slices.Concat(s.ExternalIPs, s.LoadBalancerIPs) {
		if sp.hasEndpoints() {
			out = append(out, element{container: serviceIPsMap, key: sp.addrKey(ip), value: "goto " + sp.externalChain})
		}
		if !sp.hasExternalEndpoints() {
			out = append(out, element{container: noEndpointServicesMap, key: sp.addrKey(ip), comment: name, value: noExternal})
		}
	}
	if s.NodePort != 0 {
		if sp.hasEndpoints() {
			out = append(out, element{container: serviceNodePortsMap, key: sp.nodePortKey(), value: "goto " + sp.externalChain})
		}
		if !sp.hasExternalEndpoints() {
			out = append(out, element{container: noEndpointNodePortsMap, key: sp.nodePortKey(), comment: name, value: noExternal})
		}
	}
	return out
}

// clusterChainRules: masquerade traffic to the cluster IP from outside the
// pod network (a route to the service range through this node), which may
// leave to a remote endpoint; then every serving endpoint.
func (l *layout) clusterChainRules(sp *servicePort) []string {
	var rules []string
	if l.clusterCIDR.IsValid() {
		rules = append(rules, join("ip daddr", sp.svc.ClusterIP.String(), sp.proto, "dport", sp.port,
			"ip saddr !=", l.clusterCIDR.String(), "jump", markMasqChain))
	}
	return append(rules, dispatchRules(sp, sp.serving)...)
}

// externalChainRules: where external addresses and the node port lead.
// Under Cluster policy everything is masqueraded, the endpoint may be on
// another node. Under Local policy pods go the Cluster way (as if they
// went out to the load balancer and came back), the node itself too but
// masqueraded (its source is the external address), and the rest to the
// local endpoints.
func (l *layout) externalChainRules(sp *servicePort) []string {
	var rules []string
	if !sp.svc.ExternalPolicyLocal {
		rules = append(rules, join("jump", markMasqChain))
	} else {
		if l.clusterCIDR.IsValid() {
			rules = append(rules, join("ip saddr", l.clusterCIDR.String(), "goto", sp.clusterChain, `comment "short-circuit pod traffic"`))
		}
		rules = append(rules,
			join("fib saddr type local jump", markMasqChain, `comment "masquerade local traffic"`),
			join("fib saddr type local goto", sp.clusterChain, `comment "short-circuit local traffic"`))
	}
	if sp.hasExternalEndpoints() {
		target := sp.clusterChain
		if sp.svc.ExternalPolicyLocal {
			target = sp.localChain
		}
		rules = append(rules, join("goto", target))
	}
	return rules
}

// dispatchRules choose among endpoints: first the affinity checks (a client
// seen within the timeout goes back to its endpoint), then one random
// choice among all, by a verdict map keyed by a random number.
func dispatchRules(sp *servicePort, eps []netip.AddrPort) []string {
	var rules []string
	k := sp.svc.Key
	if sp.svc.AffinityTimeout > 0 {
		for _, ep := range eps {
			rules = append(rules, join("ip saddr", "@"+affinitySet(k, ep), "goto", endpointChain(k, ep)))
		}
	}
	choices := make([]string, len(eps))
	for i, ep := range eps {
		choices[i] = strconv.Itoa(i) + " : goto " + endpointChain(k, ep)
	}
	return append(rules, join("numgen random mod", strconv.Itoa(len(eps)), "vmap {", strings.Join(choices, ", "), "}"))
}

// endpointChainRules: the hairpin masquerade (an endpoint reaching itself
// through the service must see the node as the source, or it would answer
// itself), the affinity record, the DNAT.
func endpointChainRules(sp *servicePort, ep netip.AddrPort) []string {
	rules := []string{join("ip saddr", ep.Addr().String(), "jump", markMasqChain)}
	if sp.svc.AffinityTimeout > 0 {
		rules = append(rules, join("update", "@"+affinitySet(sp.svc.Key, ep), "{ ip saddr }"))
	}
	return append(rules, join("meta l4proto", sp.proto, "dnat to", ep.String()))
}

func join(words ...string) string { return strings.Join(words, " ") }

// baseChain is one of the chains hooked into netfilter.
type baseChain struct {
	name, kind, hook string
	priority         int
}

// baseChains are kube-proxy's. The filter chains run before DNAT (-100),
// so they see the address the client used; filter-output-post-dnat runs
// after it, so that what it still finds addressed to the service range was
// not translated. (Priorities are numbers: nft 1.0.6 takes "dstnat" only
// on nat chains.)
var baseChains = []baseChain{
	{"filter-input", "filter", "input", -110},
	{"filter-forward", "filter", "forward", -110},
	{"filter-output", "filter", "output", -110},
	{"filter-output-post-dnat", "filter", "output", -90},
	{"nat-prerouting", "nat", "prerouting", -100},
	{"nat-output", "nat", "output", -100},
	{"nat-postrouting", "nat", "postrouting", 100},
}

// jumps from the base chains to the regular ones.
var jumps = []struct{ from, match, to string }{
	{"filter-input", "ct state new", nodePortEndpointsCheckChain},
	{"filter-input", "ct state new", serviceEndpointsCheckChain},
	{"filter-forward", "", forwardChain},
	{"filter-forward", "ct state new", serviceEndpointsCheckChain},
	{"filter-forward", "ct state new", clusterIPsCheckChain},
	{"filter-output", "ct state new", serviceEndpointsCheckChain},
	{"filter-output-post-dnat", "ct state new", clusterIPsCheckChain},
	{"nat-prerouting", "", servicesChain},
	{"nat-output", "", servicesChain},
	{"nat-postrouting", "", masqueradingChain},
}

// containers are the maps and sets of the table with their types.
var containers = []struct{ kind, name, spec string }{
	{"set", clusterIPsSet, `type ipv4_addr ; comment "Active ClusterIPs" ;`},
	{"set", nodePortIPsSet, `type ipv4_addr ; comment "IPs that accept NodePort traffic" ;`},
	{"map", noEndpointServicesMap, `type ipv4_addr . inet_proto . inet_service : verdict ; comment "vmap to drop or reject packets to services with no endpoints" ;`},
	{"map", noEndpointNodePortsMap, `type inet_proto . inet_service : verdict ; comment "vmap to drop or reject packets to service nodeports with no endpoints" ;`},
	{"map", serviceIPsMap, `type ipv4_addr . inet_proto . inet_service : verdict ; comment "ClusterIP, ExternalIP and LoadBalancer IP traffic" ;`},
	{"map", serviceNodePortsMap, `type inet_proto . inet_service : verdict ; comment "NodePort traffic" ;`},
}

// fixedChains are the regular chains that belong to no service.
var fixedChains = []string{
	forwardChain, servicesChain, serviceEndpointsCheckChain, nodePortEndpointsCheckChain, clusterIPsCheckChain,
	rejectChain, markMasqChain, masqueradingChain,
}

// fixedRules are the rules of the regular fixed chains.
func (l *layout) fixedRules() []chainRules {
	// Node ports answer on the given addresses, or on every local one but
	// loopback.
	nodePortMatch := "fib daddr type local ip daddr != 127.0.0.0/8"
	if len(l.nodeIPs) > 0 {
		nodePortMatch = "ip daddr @" + nodePortIPsSet
	}
	clusterIPsCheck := []string{`ip daddr @` + clusterIPsSet + ` reject comment "Reject traffic to invalid ports of ClusterIPs"`}
	if len(l.serviceCIDRs) > 0 {
		cidrs := make([]string, len(l.serviceCIDRs))
		for i, c := range l.serviceCIDRs {
			cidrs[i] = c.Masked().String()
		}
		clusterIPsCheck = append(clusterIPsCheck,
			join("ip daddr {", strings.Join(cidrs, ", "), `} reject comment "Reject traffic to unallocated ClusterIPs"`))
	}
	var forward []string
	if l.dropInvalid {
		forward = append(forward, "ct state invalid drop")
	}
	return []chainRules{
		{forwardChain, forward},
		{servicesChain, []string{
			"ip daddr . meta l4proto . th dport vmap @" + serviceIPsMap,
			nodePortMatch + " meta l4proto . th dport vmap @" + serviceNodePortsMap,
		}},
		{serviceEndpointsCheckChain, []string{"ip daddr . meta l4proto . th dport vmap @" + noEndpointServicesMap}},
		{nodePortEndpointsCheckChain, []string{nodePortMatch + " meta l4proto . th dport vmap @" + noEndpointNodePortsMap}},
		{clusterIPsCheckChain, clusterIPsCheck},
		{rejectChain, []string{"reject"}},
		{markMasqChain, []string{"mark set mark or " + masqueradeMark}},
		{masqueradingChain, []string{
			"mark and " + masqueradeMark + " == 0 return",
			// Clear the mark so a packet that goes round the stack again
			// is not masqueraded twice.
			"mark set mark xor " + masqueradeMark,
			"masquerade fully-random",
		}},
	}
}
