package nftables

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/skep-io/skep/agent/dataplane"
	"github.com/skep-io/skep/agent/dataplane/internal/changes"
)

// Services reads back what the table carries now, from `nft -j list
// table`: the service ports with their addresses and node port from the
// maps, and their endpoints from the per-service chains. Endpoints are all
// serving (only those are programmed); a local one is one its local chain
// reaches. External and load balancer addresses cannot be told apart in
// the maps; they are reported as external IPs.
func (p *Proxier) Services(ctx context.Context) ([]dataplane.Service, error) {
	out, err := p.nft.run(ctx, nil, "-j", "list", "table", "ip", p.cfg.Table)
	if errors.Is(err, errNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read rules: %w", err)
	}
	return readServices(out, p.cfg.NodeName)
}

// readServices rebuilds the service ports from a table listed as JSON.
func readServices(listing []byte, nodeName string) ([]dataplane.Service, error) {
	var objs jsonObjects
	if err := json.Unmarshal(listing, &objs); err != nil {
		return nil, fmt.Errorf("decode nft listing: %w", err)
	}
	rb := readback{
		byKey:     map[dataplane.ServiceKey]*readEntry{},
		chains:    map[string]*chainInfo{},
		timeouts:  map[string]time.Duration{},
		clusterIP: map[string]bool{},
	}
	type container struct {
		Name    string
		Timeout int
		Elem    []json.RawMessage
	}
	var mapsByName = map[string]container{}
	for _, o := range objs.Nftables {
		for _, kind := range []string{"map", "set"} {
			if raw, ok := o[kind]; ok {
				var c container
				if err := json.Unmarshal(raw, &c); err != nil {
					return nil, fmt.Errorf("decode nft %s: %w", kind, err)
				}
				mapsByName[c.Name] = c
				if isAffinitySet(c.Name) {
					rb.timeouts[c.Name] = time.Duration(c.Timeout) * time.Second
				}
			}
		}
		if raw, ok := o["rule"]; ok {
			if err := rb.readRule(raw); err != nil {
				return nil, err
			}
		}
	}
	for _, e := range mapsByName[clusterIPsSet].Elem {
		var ip string
		if json.Unmarshal(e, &ip) == nil {
			rb.clusterIP[ip] = true
		}
	}
	for _, name := range []string{serviceIPsMap, serviceNodePortsMap, noEndpointServicesMap, noEndpointNodePortsMap} {
		for _, e := range mapsByName[name].Elem {
			if err := rb.readElement(name, e); err != nil {
				return nil, err
			}
		}
	}
	services := make([]dataplane.Service, 0, len(rb.order))
	for _, k := range rb.order {
		services = append(services, rb.service(rb.byKey[k], nodeName))
	}
	return services, nil
}

// readback is what readServices has gathered so far.
type readback struct {
	order     []dataplane.ServiceKey
	byKey     map[dataplane.ServiceKey]*readEntry
	chains    map[string]*chainInfo    // per-service chain → what its rules say
	timeouts  map[string]time.Duration // affinity set → timeout
	clusterIP map[string]bool          // the elements of @cluster-ips
}

// readEntry is one service port being read back.
type readEntry struct {
	svc                         dataplane.Service
	clusterChain, externalChain string
}

// chainInfo is what the rules of one per-service chain say.
type chainInfo struct {
	targets  []string // goto and jump targets, in order
	dnat     netip.AddrPort
	affinity []string // affinity sets matched or updated
	fib      bool     // matches on the source's address type: Local policy
}

func (rb *readback) entry(k dataplane.ServiceKey) *readEntry {
	e, ok := rb.byKey[k]
	if !ok {
		e = &readEntry{svc: dataplane.Service{Key: k}}
		rb.byKey[k] = e
		rb.order = append(rb.order, k)
	}
	return e
}

// readRule notes what one rule of a per-service chain says.
func (rb *readback) readRule(raw json.RawMessage) error {
	var r struct {
		Chain string
		Expr  []any
	}
	if err := json.Unmarshal(raw, &r); err != nil {
		return fmt.Errorf("decode nft rule: %w", err)
	}
	if !isServiceChain(r.Chain) {
		return nil
	}
	ci := rb.chains[r.Chain]
	if ci == nil {
		ci = &chainInfo{}
		rb.chains[r.Chain] = ci
	}
	walk(r.Expr, ci)
	return nil
}

// walk goes through a rule's JSON expressions for what chainInfo keeps.
func walk(v any, ci *chainInfo) {
	switch v := v.(type) {
	case []any:
		for _, x := range v {
			walk(x, ci)
		}
	case map[string]any:
		for k, x := range v {
			switch k {
			case "goto", "jump":
				if t, ok := x.(map[string]any)["target"].(string); ok {
					ci.targets = append(ci.targets, t)
				}
				continue
			case "dnat":
				d, _ := x.(map[string]any)
				addr, _ := netip.ParseAddr(fmt.Sprint(d["addr"]))
				port, _ := d["port"].(float64)
				ci.dnat = netip.AddrPortFrom(addr, uint16(port))
				continue
			case "fib":
				ci.fib = true
			}
			walk(x, ci)
		}
	case string:
		if name, ok := strings.CutPrefix(v, "@"); ok && isAffinitySet(name) {
			ci.affinity = append(ci.affinity, name)
		}
	}
}

// readElement takes one element of a service or no-endpoint map.
func (rb *readback) readElement(container string, raw json.RawMessage) error {
	var pair []json.RawMessage
	if err := json.Unmarshal(raw, &pair); err != nil || len(pair) != 2 {
		return fmt.Errorf("decode element of %s: %s", container, raw)
	}
	key, comment := elementKey(pair[0])
	var verdict map[string]any
	json.Unmarshal(pair[1], &verdict)
	target := ""
	if g, ok := verdict["goto"].(map[string]any); ok {
		target, _ = g["target"].(string)
	}
	var ip netip.Addr
	if len(key) == 3 {
		ip, _ = netip.ParseAddr(key[0])
		key = key[1:]
	}
	if len(key) != 2 {
		return nil
	}
	proto, port := key[0], parsePort(key[1])
	switch container {
	case serviceIPsMap, serviceNodePortsMap:
		k, ok := parseChainKey(target)
		if !ok {
			return nil
		}
		e := rb.entry(k)
		switch {
		case container == serviceNodePortsMap:
			e.svc.NodePort = port
			e.externalChain = target
		case strings.HasPrefix(target, externalChainPrefix):
			e.svc.ExternalIPs = append(e.svc.ExternalIPs, ip)
			e.externalChain = target
		default:
			e.svc.ClusterIP, e.svc.Port = ip, port
			e.clusterChain = target
		}
	default:
		// A "drop" is an address that has endpoints, but none local: it
		// is in the service map as well.
		if target != rejectChain {
			return nil
		}
		k, ok := parsePortName(comment, proto)
		if !ok {
			return nil
		}
		e := rb.entry(k)
		switch {
		case container == noEndpointNodePortsMap:
			e.svc.NodePort = port
		case rb.clusterIP[ip.String()]:
			e.svc.ClusterIP, e.svc.Port = ip, port
		default:
			e.svc.ExternalIPs = append(e.svc.ExternalIPs, ip)
		}
	}
	return nil
}

// elementKey reads a map element's key, a concatenation, and its comment.
func elementKey(raw json.RawMessage) (parts []string, comment string) {
	var k struct {
		Concat []any
		Elem   struct {
			Val struct {
				Concat []any
			}
			Comment string
		}
	}
	if json.Unmarshal(raw, &k) != nil {
		return nil, ""
	}
	concat := k.Concat
	if concat == nil {
		concat, comment = k.Elem.Val.Concat, k.Elem.Comment
	}
	for _, c := range concat {
		parts = append(parts, fmt.Sprint(c))
	}
	return parts, comment
}

// service finishes a service port: its endpoints and affinity from its
// cluster chain, its policy and local endpoints from its external chain.
func (rb *readback) service(e *readEntry, nodeName string) dataplane.Service {
	s := e.svc
	all, affinity := rb.endpointsOf(e.clusterChain)
	s.AffinityTimeout = affinity
	local := map[netip.AddrPort]bool{}
	if ext := rb.chains[e.externalChain]; ext != nil {
		s.ExternalPolicyLocal = ext.fib
		for _, t := range ext.targets {
			if strings.HasPrefix(t, localChainPrefix) {
				eps, _ := rb.endpointsOf(t)
				for _, ap := range eps {
					local[ap] = true
				}
			}
		}
	}
	s.Backends = changes.ReadBackends(all, local, nodeName)
	return s
}

// endpointsOf follows a cluster or local chain to its endpoint chains'
// DNATs, each once (the affinity checks name them a second time).
func (rb *readback) endpointsOf(chain string) (eps []netip.AddrPort, affinity time.Duration) {
	ci := rb.chains[chain]
	if ci == nil {
		return nil, 0
	}
	for _, set := range ci.affinity {
		affinity = rb.timeouts[set]
	}
	seen := map[string]bool{}
	for _, t := range ci.targets {
		if !strings.HasPrefix(t, endpointChainPrefix) || seen[t] {
			continue
		}
		seen[t] = true
		if ep := rb.chains[t]; ep != nil && ep.dnat.IsValid() {
			eps = append(eps, ep.dnat)
		}
	}
	return eps, affinity
}

func parsePort(s string) uint16 {
	n, _ := strconv.ParseUint(s, 10, 16)
	return uint16(n)
}
