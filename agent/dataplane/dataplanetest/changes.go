package dataplanetest

import (
	"fmt"
	"maps"
	"math/rand"
	"net/netip"
	"slices"
	"time"

	"github.com/skep-io/skep/agent/dataplane"
)

// Changer makes random changes to a desired state one Service at a time,
// for the property tests that check an incremental sync against a full
// one. A Service has one or two ports (TCP "http", and UDP "dns"), so a
// change can add, change or remove ports of one Service at once, as one
// per-Service change message does. Names, cluster IPs and backends come
// from small pools, so services come back after being removed, backends
// move between services, and now and then two services claim one address.
type Changer struct {
	r     *rand.Rand
	State map[dataplane.ServiceKey]*dataplane.Service
	// NodeName is the node whose backends are marked Local.
	NodeName string
}

// changerNames is the pool of Service names.
const changerNames = 8

// NewChanger starts from an empty state; seed makes the sequence repeatable.
func NewChanger(seed int64, nodeName string) *Changer {
	return &Changer{r: rand.New(rand.NewSource(seed)), State: map[dataplane.ServiceKey]*dataplane.Service{}, NodeName: nodeName}
}

// Step changes one Service (adds, changes or removes it) and returns the
// change: every port of that Service whose state moved, with its new state
// or nil where the port is gone. State holds the result.
func (c *Changer) Step() map[dataplane.ServiceKey]*dataplane.Service {
	name := fmt.Sprintf("svc-%d", c.r.Intn(changerNames))
	old := c.portsOf(name)
	var next []*dataplane.Service
	switch {
	case len(old) == 0 || c.r.Intn(10) > 0:
		next = c.service(name, old)
	default:
		// removed: next stays empty
	}
	changed := map[dataplane.ServiceKey]*dataplane.Service{}
	for _, s := range old {
		changed[s.Key] = nil
		delete(c.State, s.Key)
	}
	for _, s := range next {
		changed[s.Key] = s
		c.State[s.Key] = s
	}
	return changed
}

func (c *Changer) portsOf(name string) []*dataplane.Service {
	var out []*dataplane.Service
	for _, s := range c.State {
		if s.Key.Name == name {
			out = append(out, s)
		}
	}
	slices.SortFunc(out, func(a, b *dataplane.Service) int { return cmpString(string(a.Key.Protocol), string(b.Key.Protocol)) })
	return out
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// service makes the next version of a Service: mostly a small change to
// one thing (a backend comes, goes, turns unready or local; a node port,
// a load balancer address, the traffic policy or affinity moves), now and
// then a new one from scratch.
func (c *Changer) service(name string, old []*dataplane.Service) []*dataplane.Service {
	r := c.r
	var base dataplane.Service
	if len(old) > 0 && r.Intn(5) > 0 {
		base = *old[0]
		base.Backends = slices.Clone(base.Backends)
		base.LoadBalancerIPs = slices.Clone(base.LoadBalancerIPs)
		switch r.Intn(8) {
		case 0, 1: // a backend comes
			base.Backends = c.addBackend(base.Backends)
		case 2: // a backend goes
			if n := len(base.Backends); n > 0 {
				i := r.Intn(n)
				base.Backends = append(base.Backends[:i], base.Backends[i+1:]...)
			}
		case 3: // a backend turns unready, or ready, or terminating
			if n := len(base.Backends); n > 0 {
				b := &base.Backends[r.Intn(n)]
				b.Ready = !b.Ready
				b.Terminating = r.Intn(4) == 0
			}
		case 4:
			base.NodePort = c.nodePort()
		case 5:
			base.LoadBalancerIPs = c.lbIPs()
		case 6:
			base.ExternalPolicyLocal = !base.ExternalPolicyLocal
		case 7:
			base.AffinityTimeout = c.affinity()
		}
	} else {
		base = dataplane.Service{
			// Mostly an address of its own; one in eight shares a pool of
			// two, so two services claim one frontend.
			ClusterIP:           netip.AddrFrom4([4]byte{10, 96, 1, byte(10 + c.r.Intn(changerNames))}),
			Port:                80,
			NodePort:            c.nodePort(),
			LoadBalancerIPs:     c.lbIPs(),
			ExternalPolicyLocal: r.Intn(3) == 0,
			AffinityTimeout:     c.affinity(),
		}
		if r.Intn(8) == 0 {
			base.ClusterIP = netip.AddrFrom4([4]byte{10, 96, 2, byte(1 + r.Intn(2))})
		}
		for range r.Intn(4) {
			base.Backends = c.addBackend(base.Backends)
		}
	}
	http := base
	http.Key = dataplane.ServiceKey{Namespace: "prop", Name: name, Port: "http", Protocol: dataplane.TCP}
	out := []*dataplane.Service{&http}
	// Half the services also have a UDP port, which comes and goes.
	if r.Intn(2) == 0 {
		dns := base
		dns.Key = dataplane.ServiceKey{Namespace: "prop", Name: name, Port: "dns", Protocol: dataplane.UDP}
		dns.Port, dns.NodePort = 53, 0
		dns.Backends = slices.Clone(base.Backends)
		for i := range dns.Backends {
			dns.Backends[i].Port = 5353
		}
		out = append(out, &dns)
	}
	return out
}

// addBackend adds a backend at an address the service does not have yet.
func (c *Changer) addBackend(have []dataplane.Backend) []dataplane.Backend {
	addr := netip.AddrFrom4([4]byte{10, 244, 1, byte(2 + c.r.Intn(12))})
	if slices.ContainsFunc(have, func(b dataplane.Backend) bool { return b.Addr == addr }) {
		return have
	}
	b := dataplane.Backend{Addr: addr, Port: 8080, Ready: c.r.Intn(5) > 0}
	if c.r.Intn(2) == 0 {
		b.NodeName, b.Local = c.NodeName, true
	} else {
		b.NodeName = "node-b"
	}
	return append(have, b)
}

func (c *Changer) nodePort() uint16 {
	if c.r.Intn(2) == 0 {
		return 0
	}
	return uint16(30000 + c.r.Intn(changerNames+2))
}

func (c *Changer) lbIPs() []netip.Addr {
	if c.r.Intn(3) > 0 {
		return nil
	}
	return []netip.Addr{netip.AddrFrom4([4]byte{203, 0, 113, byte(10 + c.r.Intn(changerNames))})}
}

func (c *Changer) affinity() time.Duration {
	if c.r.Intn(4) > 0 {
		return 0
	}
	return time.Duration(60+c.r.Intn(3)*60) * time.Second
}

// Snapshot is a copy of State, for a full sync.
func (c *Changer) Snapshot() map[dataplane.ServiceKey]*dataplane.Service {
	return maps.Clone(c.State)
}
