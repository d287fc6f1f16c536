package node

import (
	"context"
	"hash/fnv"
	"net/netip"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/skep-io/skep/agent/network"
	"github.com/skep-io/skep/controlplane/api/conditions"
	"github.com/skep-io/skep/controlplane/client"
)

// announceLoadBalancers makes one Ready node answer ARP for each
// LoadBalancer address. Every agent computes the same owner from the same
// Node list — the Ready nodes by name, indexed by a hash of the address —
// so no election is needed, and when the owner stops being Ready (the node
// lifecycle controller marks it so) the address moves to another node.
func (a *Agent) announceLoadBalancers(ctx context.Context, svcs, nodes *client.Informer) {
	if a.cfg.Interface == "" {
		return
	}
	k := newKicker()
	svcs.AddHandlers(k.handlers())
	nodes.AddHandlers(k.handlers())
	k.run(ctx, 30*time.Second, func(bool) error {
		mine := ownedAddresses(a.cfg.Name, typed[*corev1.Service](svcs.List()), typed[*corev1.Node](nodes.List()))
		if err := network.AnnounceAddresses(a.cfg.Interface, mine); err != nil {
			a.log.Warn("announce LoadBalancer addresses", "err", err)
		}
		return nil // the next change or the 30 s resync tries again
	}, svcs, nodes)
}

// ownedAddresses lists the LoadBalancer addresses node must announce.
func ownedAddresses(node string, svcs []*corev1.Service, nodes []*corev1.Node) []netip.Addr {
	var ready []string
	for _, n := range nodes {
		if conditions.NodeReady(n) {
			ready = append(ready, n.Name)
		}
	}
	if len(ready) == 0 {
		return nil
	}
	sort.Strings(ready)
	var out []netip.Addr
	for _, s := range svcs {
		if s.Spec.Type != corev1.ServiceTypeLoadBalancer {
			continue
		}
		for _, ing := range s.Status.LoadBalancer.Ingress {
			ip, err := netip.ParseAddr(ing.IP)
			if err != nil || !ip.Is4() {
				continue
			}
			h := fnv.New32a()
			h.Write(ip.AsSlice())
			if ready[int(h.Sum32())%len(ready)] == node {
				out = append(out, ip)
			}
		}
	}
	return out
}
