// Package nodeipam gives every Node a pod CIDR (a /24 by default) out of
// the cluster CIDR, written once into spec.podCIDR and spec.podCIDRs. The
// allocation lives only in the Nodes themselves, so it survives restarts
// of anything, and a CIDR held by one node is never given to another.
package nodeipam

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net/netip"
	"sync"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/skep-io/skep/controlplane/api"
	"github.com/skep-io/skep/controlplane/client"
	"github.com/skep-io/skep/controlplane/queue"
)

var nodesResource = api.MustLookup("nodes")

// ErrFull means every CIDR of the cluster range is taken.
var ErrFull = errors.New("no pod CIDR left in the cluster CIDR")

// Allocator hands out the subnets of one cluster CIDR, lowest free first.
type Allocator struct {
	cluster netip.Prefix
	bits    int // size of each node's subnet
	mu      sync.Mutex
	used    map[netip.Prefix]string // subnet -> node
}

// NewAllocator splits cluster (e.g. 10.244.0.0/16) into /maskSize subnets.
func NewAllocator(cluster string, maskSize int) (*Allocator, error) {
	p, err := netip.ParsePrefix(cluster)
	if err != nil {
		return nil, fmt.Errorf("cluster CIDR %q: %w", cluster, err)
	}
	p = p.Masked()
	if maskSize < p.Bits() || maskSize > p.Addr().BitLen() {
		return nil, fmt.Errorf("node CIDR mask /%d does not fit in cluster CIDR %s", maskSize, p)
	}
	if maskSize-p.Bits() > 24 {
		return nil, fmt.Errorf("cluster CIDR %s split into /%d gives too many subnets", p, maskSize)
	}
	return &Allocator{cluster: p, bits: maskSize, used: map[netip.Prefix]string{}}, nil
}

// Occupy records that node holds cidr (read from its spec). It fails if
// another node holds it or it lies outside the cluster CIDR.
func (a *Allocator) Occupy(node, cidr string) error {
	p, err := netip.ParsePrefix(cidr)
	if err != nil {
		return fmt.Errorf("pod CIDR %q of node %s: %w", cidr, node, err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if other, ok := a.used[p]; ok && other != node {
		return fmt.Errorf("pod CIDR %s of node %s is also held by node %s", p, node, other)
	}
	for q, n := range a.used {
		if n == node && q != p {
			delete(a.used, q) // a reservation the node did not take
		}
	}
	if a.cluster.Contains(p.Addr()) && p.Bits() == a.bits {
		a.used[p] = node
	}
	return nil
}

// Release frees what node holds.
func (a *Allocator) Release(node string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for p, n := range a.used {
		if n == node {
			delete(a.used, p)
		}
	}
}

// Allocate gives node the lowest free subnet (or the one it holds).
func (a *Allocator) Allocate(node string) (netip.Prefix, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for p, n := range a.used {
		if n == node {
			return p, nil
		}
	}
	count := 1 << (a.bits - a.cluster.Bits())
	base := new(big.Int).SetBytes(a.cluster.Addr().AsSlice())
	step := new(big.Int).Lsh(big.NewInt(1), uint(a.cluster.Addr().BitLen()-a.bits))
	for i := range count {
		n := new(big.Int).Add(base, new(big.Int).Mul(big.NewInt(int64(i)), step))
		buf := make([]byte, a.cluster.Addr().BitLen()/8)
		n.FillBytes(buf)
		addr, _ := netip.AddrFromSlice(buf)
		p := netip.PrefixFrom(addr, a.bits)
		if _, taken := a.used[p]; !taken {
			a.used[p] = node
			return p, nil
		}
	}
	return netip.Prefix{}, fmt.Errorf("allocate pod CIDR for node %s from %s: %w", node, a.cluster, ErrFull)
}

// Controller writes pod CIDRs into Nodes that have none.
type Controller struct {
	c      client.Interface
	nodes  *client.Informer
	alloc  *Allocator
	queue  *queue.Queue
	logger *slog.Logger
}

// New returns the controller; it registers handlers on nodes.
func New(c client.Interface, nodes *client.Informer, alloc *Allocator, logger *slog.Logger) *Controller {
	nc := &Controller{c: c, nodes: nodes, alloc: alloc, queue: queue.New(), logger: logger.With("controller", "nodeipam")}
	nodes.AddHandlers(client.Handlers{
		OnAdd:    func(o api.Object) { nc.observe(o.(*corev1.Node)) },
		OnUpdate: func(_, o api.Object) { nc.observe(o.(*corev1.Node)) },
		OnDelete: func(o api.Object) { nc.alloc.Release(o.GetName()) },
	})
	return nc
}

func (nc *Controller) observe(n *corev1.Node) {
	if n.Spec.PodCIDR == "" {
		nc.queue.Add(n.Name)
		return
	}
	if err := nc.alloc.Occupy(n.Name, n.Spec.PodCIDR); err != nil {
		nc.logger.Error("node pod CIDR conflict", "node", n.Name, "err", err)
	}
}

// Run allocates until ctx ends. Every node already holding a CIDR is
// known before the first allocation, since the informer has synced.
func (nc *Controller) Run(ctx context.Context) {
	if !client.WaitForSync(ctx, nc.nodes) {
		return
	}
	queue.Run(ctx, nc.queue, 1, nc.sync, nc.logger)
}

func (nc *Controller) sync(ctx context.Context, name string) error {
	o, ok := nc.nodes.Get("", name)
	if !ok {
		return nil
	}
	node := o.(*corev1.Node)
	if node.Spec.PodCIDR != "" {
		return nil
	}
	cidr, err := nc.alloc.Allocate(name)
	if err != nil {
		return err
	}
	n := node.DeepCopy()
	n.Spec.PodCIDR = cidr.String()
	n.Spec.PodCIDRs = []string{cidr.String()}
	if _, err := nc.c.Update(ctx, nodesResource, n); err != nil {
		if apierrors.IsNotFound(err) {
			nc.alloc.Release(name)
			return nil
		}
		// Keep the subnet reserved for this node: the retry reuses it.
		return fmt.Errorf("set pod CIDR of node %s: %w", name, err)
	}
	nc.logger.Info("pod CIDR allocated", "node", name, "podCIDR", cidr)
	return nil
}
