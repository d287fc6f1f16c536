// Package changes is what the rule-writing dataplanes (iptables, nftables)
// share of kube-proxy's bookkeeping: the tracker of service changes between
// syncs, and the conntrack entries a change leaves stale.
package changes

import (
	"cmp"
	"maps"
	"net/netip"
	"slices"
	"sync"

	"github.com/skep-io/skep/agent/dataplane"
)

// Change is one service port's pending change, as kube-proxy's
// ServiceChangeTracker keeps it: Previous is what the kernel carries (nil for
// a new service), Current is what it should carry (nil for a removed one).
type Change struct {
	Previous, Current *dataplane.Service
}

// Tracker records what differs between the programmed state and the
// latest desired state. A change that is undone before a sync (a backend
// that flaps back) cancels out and is dropped, so it costs no write.
type Tracker struct {
	mu      sync.Mutex
	applied map[dataplane.ServiceKey]*dataplane.Service // what the last successful write carried
	desired map[dataplane.ServiceKey]*dataplane.Service // the latest full state given to Update
	pending map[dataplane.ServiceKey]Change
	gen     uint64 // counts Updates; a sync carries every Update up to the gen it took
	// shared is set when Snapshot handed desired out: the next Apply
	// copies it before changing it, so a sync reading its Snapshot never
	// sees it move.
	shared bool
}

func NewTracker() *Tracker {
	return &Tracker{
		applied: map[dataplane.ServiceKey]*dataplane.Service{},
		desired: map[dataplane.ServiceKey]*dataplane.Service{},
		pending: map[dataplane.ServiceKey]Change{},
	}
}

// Update records a complete desired state and returns its generation. The
// services are copied, so the caller may change them afterwards.
func (t *Tracker) Update(services map[dataplane.ServiceKey]*dataplane.Service) uint64 {
	desired := make(map[dataplane.ServiceKey]*dataplane.Service, len(services))
	for k, s := range services {
		if s == nil || !s.ClusterIP.IsValid() {
			continue // headless: never programmed
		}
		desired[k] = normalize(s)
	}

	t.mu.Lock()
	defer t.mu.Unlock()
	t.gen++
	// Services whose desired state moved since the last Update; comparing
	// against the previous desired state first keeps an unchanged 10,000
	// service list cheap.
	for k, cur := range desired {
		if old, ok := t.desired[k]; ok && serviceEqual(old, cur) {
			continue
		}
		t.record(k, cur)
	}
	for k := range t.desired {
		if _, ok := desired[k]; !ok {
			t.record(k, nil)
		}
	}
	t.desired = desired
	t.shared = false
	return t.gen
}

// Apply records a change of some service ports (nil: removed), leaving the
// others as the last Update or Apply left them, and returns its
// generation. Its cost is that of the changed ports, plus one copy of the
// desired state per sync at most.
func (t *Tracker) Apply(changed map[dataplane.ServiceKey]*dataplane.Service) uint64 {
	norm := make(map[dataplane.ServiceKey]*dataplane.Service, len(changed))
	for k, s := range changed {
		if s == nil || !s.ClusterIP.IsValid() {
			norm[k] = nil // removed, or headless: never programmed
			continue
		}
		norm[k] = normalize(s)
	}

	t.mu.Lock()
	defer t.mu.Unlock()
	t.gen++
	if t.shared {
		t.desired = maps.Clone(t.desired)
		t.shared = false
	}
	for k, cur := range norm {
		old, ok := t.desired[k]
		if serviceEqual(old, cur) {
			continue
		}
		if cur == nil {
			if !ok {
				continue
			}
			delete(t.desired, k)
		} else {
			t.desired[k] = cur
		}
		t.record(k, cur)
	}
	return t.gen
}

// record sets the pending change of k to end at cur, dropping it when cur is
// what is already programmed. Caller holds mu.
func (t *Tracker) record(k dataplane.ServiceKey, cur *dataplane.Service) {
	prev := t.applied[k]
	if serviceEqual(prev, cur) {
		delete(t.pending, k)
		return
	}
	t.pending[k] = Change{Previous: prev, Current: cur}
}

// Snapshot is what one sync writes: the whole desired state, the changes
// since the last successful write, and the generation they carry.
type Snapshot struct {
	Services map[dataplane.ServiceKey]*dataplane.Service
	Changes  map[dataplane.ServiceKey]Change
	Gen      uint64
}

// Snapshot returns the state a sync should write now.
func (t *Tracker) Snapshot() Snapshot {
	t.mu.Lock()
	defer t.mu.Unlock()
	changes := make(map[dataplane.ServiceKey]Change, len(t.pending))
	for k, c := range t.pending {
		changes[k] = c
	}
	t.shared = true
	return Snapshot{Services: t.desired, Changes: changes, Gen: t.gen}
}

// Applied marks a Snapshot as written: its changes become the baseline, and
// what was recorded since the Snapshot stays pending against that baseline.
func (t *Tracker) Applied(s Snapshot) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for k, c := range s.Changes {
		if c.Current == nil {
			delete(t.applied, k)
		} else {
			t.applied[k] = c.Current
		}
		t.record(k, t.desired[k])
	}
}

// normalize copies a service with its backends and addresses in a canonical
// order, so that equal services compare equal and rules come out the same
// whatever order the Endpoints listed them in.
func normalize(s *dataplane.Service) *dataplane.Service {
	c := *s
	c.Backends = slices.Clone(s.Backends)
	slices.SortFunc(c.Backends, func(a, b dataplane.Backend) int {
		if r := a.Addr.Compare(b.Addr); r != 0 {
			return r
		}
		return cmp.Compare(a.Port, b.Port)
	})
	c.Backends = slices.CompactFunc(c.Backends, func(a, b dataplane.Backend) bool {
		return a.Addr == b.Addr && a.Port == b.Port
	})
	c.LoadBalancerIPs = sortedAddrs(s.LoadBalancerIPs)
	c.ExternalIPs = sortedAddrs(s.ExternalIPs)
	return &c
}

func sortedAddrs(in []netip.Addr) []netip.Addr {
	if len(in) == 0 {
		return nil
	}
	out := slices.Clone(in)
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out)
}

// serviceEqual reports whether two normalized services program the same
// rules and clean up the same conntrack entries; nil equals only nil.
func serviceEqual(a, b *dataplane.Service) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Key == b.Key && a.ClusterIP == b.ClusterIP && a.Port == b.Port && a.NodePort == b.NodePort &&
		a.ExternalPolicyLocal == b.ExternalPolicyLocal && a.AffinityTimeout == b.AffinityTimeout &&
		slices.Equal(a.LoadBalancerIPs, b.LoadBalancerIPs) && slices.Equal(a.ExternalIPs, b.ExternalIPs) &&
		slices.Equal(a.Backends, b.Backends)
}

// ReadBackends is the backends a dataplane reads back from its rules, in
// the order of all: every endpoint its chains lead to, ready (only serving
// endpoints are written), and local, on nodeName, where a local chain
// leads to it too.
func ReadBackends(all []netip.AddrPort, local map[netip.AddrPort]bool, nodeName string) []dataplane.Backend {
	var out []dataplane.Backend
	for _, ap := range all {
		b := dataplane.Backend{Addr: ap.Addr(), Port: ap.Port(), Ready: true, Local: local[ap]}
		if b.Local {
			b.NodeName = nodeName
		}
		out = append(out, b)
	}
	return out
}
