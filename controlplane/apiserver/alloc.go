package apiserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/skep-io/skep/controlplane/api"
	"github.com/skep-io/skep/controlplane/store"
)

// allocator hands out ClusterIPs, NodePorts and LoadBalancer addresses.
//
// Each address or port held is a key in the store, created with
// compare-and-set before the Service is written: of two creates racing for
// one port, exactly one key create succeeds. A server that dies between the
// two leaves a key without its Service; repair finds and frees those, as
// kube-apiserver's repair controllers do.
type allocator struct {
	store       *store.Store
	serviceCIDR netip.Prefix
	nodePorts   portRange
	lbPool      []netip.Prefix
	log         *slog.Logger
}

type portRange struct{ Base, Size int }

// ParsePortRange reads "30000-32767".
func ParsePortRange(s string) (portRange, error) {
	var lo, hi int
	if _, err := fmt.Sscanf(s, "%d-%d", &lo, &hi); err != nil || lo < 1 || hi > 65535 || lo > hi {
		return portRange{}, fmt.Errorf("%q is not a port range like 30000-32767", s)
	}
	return portRange{Base: lo, Size: hi - lo + 1}, nil
}

func (p portRange) String() string { return fmt.Sprintf("%d-%d", p.Base, p.Base+p.Size-1) }

// holder is the value of an allocation key: who holds it.
type holder struct {
	Service string    `json:"service"` // namespace/name
	UID     string    `json:"uid"`
	Since   time.Time `json:"since"`
}

const (
	clusterIPs  = "clusterips"
	nodePortsR  = "nodeports"
	lbAddresses = "lbaddresses"
)

func allocKey(kind, value string) store.Key { return store.Key{Resource: kind, Name: value} }

// take claims one value; it returns the holder when another has it.
func (a *allocator) take(ctx context.Context, kind, value string, svc *corev1.Service) (*holder, error) {
	h := holder{Service: svc.Namespace + "/" + svc.Name, UID: string(svc.UID), Since: time.Now()}
	data, _ := json.Marshal(h)
	_, err := a.store.Create(ctx, allocKey(kind, value), data)
	if errors.Is(err, store.ErrExists) {
		e, gerr := a.store.Get(ctx, allocKey(kind, value))
		if gerr != nil {
			return &holder{Service: "another Service"}, nil
		}
		var other holder
		_ = json.Unmarshal(e.Value, &other)
		if other.UID == h.UID {
			return nil, nil // ours already
		}
		return &other, nil
	}
	return nil, err
}

func (a *allocator) free(ctx context.Context, kind, value string) {
	if err := a.store.Delete(ctx, allocKey(kind, value), 0); err != nil && !errors.Is(err, store.ErrNotFound) {
		a.log.Warn("free allocation", "kind", kind, "value", value, "err", err)
	}
}

// claim is one value taken for a service, to undo on failure.
type claim struct{ kind, value string }

// request takes a value the user asked for, or says who holds it.
func (a *allocator) request(ctx context.Context, kind, value string, svc *corev1.Service, path *field.Path) error {
	other, err := a.take(ctx, kind, value, svc)
	if err != nil {
		return apierrors.NewInternalError(err)
	}
	if other != nil {
		return apierrors.NewInvalid(schemaGK("Service"), svc.Name, field.ErrorList{
			field.Invalid(path, value, fmt.Sprintf("provided %s is already allocated (held by Service %s)", describe(kind), other.Service))})
	}
	return nil
}

func describe(kind string) string {
	switch kind {
	case clusterIPs:
		return "IP"
	case nodePortsR:
		return "port"
	}
	return "address"
}

// pick takes a free value from candidates, starting at a random one.
func (a *allocator) pick(ctx context.Context, kind string, n int, at func(i int) string, svc *corev1.Service) (string, error) {
	if n <= 0 {
		return "", errors.New("empty range")
	}
	start := rand.IntN(n)
	for i := range n {
		v := at((start + i) % n)
		if v == "" {
			continue
		}
		other, err := a.take(ctx, kind, v, svc)
		if err != nil {
			return "", err
		}
		if other == nil {
			return v, nil
		}
	}
	return "", fmt.Errorf("no free %s left", describe(kind))
}

func (a *allocator) clusterIPAt(i int) string {
	// Skip the network address and the broadcast address.
	base := a.serviceCIDR.Masked().Addr().As4()
	n := uint32(base[0])<<24 | uint32(base[1])<<16 | uint32(base[2])<<8 | uint32(base[3])
	n += uint32(i) + 1
	return netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}).String()
}

func (a *allocator) clusterIPCount() int {
	bits := 32 - a.serviceCIDR.Bits()
	return (1 << bits) - 2
}

func (a *allocator) lbAddressList() []string {
	var out []string
	for _, p := range a.lbPool {
		for ip := p.Masked().Addr(); p.Contains(ip); ip = ip.Next() {
			out = append(out, ip.String())
			if len(out) > 65536 {
				return out
			}
		}
	}
	return out
}

func needsClusterIP(s *corev1.Service) bool {
	return s.Spec.Type != corev1.ServiceTypeExternalName && s.Spec.ClusterIP != corev1.ClusterIPNone
}

func needsNodePorts(s *corev1.Service) bool {
	return s.Spec.Type == corev1.ServiceTypeNodePort || s.Spec.Type == corev1.ServiceTypeLoadBalancer
}

// admitCreate allocates what a new object needs; release undoes it when the
// object is not written after all.
func (a *allocator) admitCreate(ctx context.Context, r *api.Resource, obj api.Object) (func(), error) {
	svc, ok := obj.(*corev1.Service)
	if !ok {
		return func() {}, nil
	}
	var taken []claim
	release := func() {
		for _, c := range taken {
			a.free(context.WithoutCancel(ctx), c.kind, c.value)
		}
	}
	if err := a.allocate(ctx, svc, nil, &taken); err != nil {
		release()
		return nil, err
	}
	return release, nil
}

// admitUpdate keeps what a Service already holds, allocates what its new
// type needs and, once the update is written, frees what it no longer
// uses. release(false) undoes the new allocations instead.
func (a *allocator) admitUpdate(ctx context.Context, r *api.Resource, obj, oldObj api.Object) (func(committed bool), error) {
	svc, ok := obj.(*corev1.Service)
	if !ok {
		return func(bool) {}, nil
	}
	old := oldObj.(*corev1.Service)
	// Values the server assigned stay when the new object leaves them out,
	// as kube-apiserver's patchAllocatedValues keeps them.
	if needsClusterIP(svc) && svc.Spec.ClusterIP == "" {
		svc.Spec.ClusterIP, svc.Spec.ClusterIPs = old.Spec.ClusterIP, old.Spec.ClusterIPs
	}
	if !needsClusterIP(svc) && svc.Spec.ClusterIP != corev1.ClusterIPNone {
		svc.Spec.ClusterIP, svc.Spec.ClusterIPs = "", nil
	}
	if needsNodePorts(svc) {
		for i := range svc.Spec.Ports {
			p := &svc.Spec.Ports[i]
			for _, op := range old.Spec.Ports {
				if p.NodePort == 0 && op.NodePort != 0 && op.Port == p.Port && op.Protocol == p.Protocol {
					p.NodePort = op.NodePort
				}
			}
		}
	}
	if svc.Spec.Type != corev1.ServiceTypeLoadBalancer {
		svc.Status.LoadBalancer = corev1.LoadBalancerStatus{}
	}
	var taken []claim
	undo := func() {
		for _, c := range taken {
			a.free(context.WithoutCancel(ctx), c.kind, c.value)
		}
	}
	if err := a.allocate(ctx, svc, old, &taken); err != nil {
		undo()
		return nil, err
	}
	return func(committed bool) {
		if !committed {
			undo()
			return
		}
		keep := held(svc)
		for _, c := range held(old) {
			if !containsClaim(keep, c) {
				a.free(context.WithoutCancel(ctx), c.kind, c.value)
			}
		}
	}, nil
}

func containsClaim(list []claim, c claim) bool {
	for _, x := range list {
		if x == c {
			return true
		}
	}
	return false
}

// held lists what a stored Service holds.
func held(s *corev1.Service) []claim {
	var out []claim
	if s.Spec.ClusterIP != "" && s.Spec.ClusterIP != corev1.ClusterIPNone {
		out = append(out, claim{clusterIPs, s.Spec.ClusterIP})
	}
	for _, p := range s.Spec.Ports {
		if p.NodePort != 0 {
			out = append(out, claim{nodePortsR, strconv.Itoa(int(p.NodePort))})
		}
	}
	for _, ing := range s.Status.LoadBalancer.Ingress {
		if ing.IP != "" {
			out = append(out, claim{lbAddresses, ing.IP})
		}
	}
	return out
}

// allocate claims every value svc needs that old (nil on create) did not
// hold, appending each new claim to taken.
func (a *allocator) allocate(ctx context.Context, svc, old *corev1.Service, taken *[]claim) error {
	var had []claim
	if old != nil {
		had = held(old)
	}
	claimNew := func(kind, value string, path *field.Path) error {
		if containsClaim(had, claim{kind, value}) {
			return nil
		}
		if err := a.request(ctx, kind, value, svc, path); err != nil {
			return err
		}
		*taken = append(*taken, claim{kind, value})
		return nil
	}
	spec := field.NewPath("spec")
	if needsClusterIP(svc) {
		if ip := svc.Spec.ClusterIP; ip != "" {
			addr, err := netip.ParseAddr(ip)
			if err == nil && !a.serviceCIDR.Contains(addr) {
				return apierrors.NewInvalid(schemaGK("Service"), svc.Name, field.ErrorList{field.Invalid(spec.Child("clusterIP"), ip,
					fmt.Sprintf("provided IP is not in the valid range. The range of valid IPs is %s", a.serviceCIDR))})
			}
			if err := claimNew(clusterIPs, ip, spec.Child("clusterIP")); err != nil {
				return err
			}
		} else {
			ip, err := a.pick(ctx, clusterIPs, a.clusterIPCount(), a.clusterIPAt, svc)
			if err != nil {
				return apierrors.NewInternalError(fmt.Errorf("allocate a ClusterIP from %s: %w", a.serviceCIDR, err))
			}
			*taken = append(*taken, claim{clusterIPs, ip})
			svc.Spec.ClusterIP = ip
		}
		svc.Spec.ClusterIPs = []string{svc.Spec.ClusterIP}
	}
	if needsNodePorts(svc) {
		for i := range svc.Spec.Ports {
			p := &svc.Spec.Ports[i]
			path := spec.Child("ports").Index(i).Child("nodePort")
			if p.NodePort != 0 {
				if int(p.NodePort) < a.nodePorts.Base || int(p.NodePort) >= a.nodePorts.Base+a.nodePorts.Size {
					return apierrors.NewInvalid(schemaGK("Service"), svc.Name, field.ErrorList{field.Invalid(path, p.NodePort,
						fmt.Sprintf("provided port is not in the valid range. The range of valid ports is %s", a.nodePorts))})
				}
				if err := claimNew(nodePortsR, strconv.Itoa(int(p.NodePort)), path); err != nil {
					return err
				}
				continue
			}
			port, err := a.pick(ctx, nodePortsR, a.nodePorts.Size, func(i int) string { return strconv.Itoa(a.nodePorts.Base + i) }, svc)
			if err != nil {
				return apierrors.NewInternalError(fmt.Errorf("allocate a NodePort from %s: %w", a.nodePorts, err))
			}
			*taken = append(*taken, claim{nodePortsR, port})
			n, _ := strconv.Atoi(port)
			p.NodePort = int32(n)
		}
	} else {
		for i := range svc.Spec.Ports {
			svc.Spec.Ports[i].NodePort = 0
		}
	}
	if svc.Spec.Type == corev1.ServiceTypeLoadBalancer && len(svc.Status.LoadBalancer.Ingress) == 0 && len(a.lbPool) > 0 {
		list := a.lbAddressList()
		ip, err := a.pick(ctx, lbAddresses, len(list), func(i int) string { return list[i] }, svc)
		if err != nil {
			// As in Kubernetes without a load balancer: the Service stays
			// pending, with no external address.
			a.log.Warn("no LoadBalancer address free", "service", svc.Namespace+"/"+svc.Name, "err", err)
			return nil
		}
		*taken = append(*taken, claim{lbAddresses, ip})
		svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: ip, IPMode: ptr(corev1.LoadBalancerIPModeVIP)}}
	}
	return nil
}

// release frees what a deleted object held.
func (a *allocator) release(ctx context.Context, r *api.Resource, obj api.Object) {
	if svc, ok := obj.(*corev1.Service); ok {
		for _, c := range held(svc) {
			a.free(ctx, c.kind, c.value)
		}
	}
}

// repair frees allocations whose Service is gone or no longer holds them,
// left by a server that died between allocating and writing. It skips
// recent ones, which may belong to a create in flight.
func (a *allocator) repair(ctx context.Context, g *registry) error {
	svcs, _, err := g.list(ctx, api.MustLookup("services"), "", clientListAll)
	if err != nil {
		return err
	}
	live := map[claim]string{}
	for _, o := range svcs {
		s := o.(*corev1.Service)
		for _, c := range held(s) {
			live[c] = string(s.UID)
		}
	}
	for _, kind := range []string{clusterIPs, nodePortsR, lbAddresses} {
		entries, _, err := a.store.List(ctx, kind, "")
		if err != nil {
			return err
		}
		for _, e := range entries {
			var h holder
			_ = json.Unmarshal(e.Value, &h)
			c := claim{kind, e.Key.Name}
			if live[c] == h.UID || time.Since(h.Since) < time.Minute {
				continue
			}
			if err := a.store.Delete(ctx, e.Key, e.Revision); err == nil {
				a.log.Info("freed leaked allocation", "kind", kind, "value", e.Key.Name, "heldBy", h.Service)
			}
		}
	}
	return nil
}

func ptr[T any](v T) *T { return &v }
