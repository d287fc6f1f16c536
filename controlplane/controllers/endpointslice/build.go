package endpointslice

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/skep-io/skep/controlplane/api/conditions"
	"github.com/skep-io/skep/controlplane/controllers/endpoints"
)

// DefaultMaxEndpointsPerSlice is Kubernetes' default for
// --max-endpoints-per-slice.
const DefaultMaxEndpointsPerSlice = 100

// NodeInfo is what the controller knows of a pod's node: whether it is
// Ready and its topology.kubernetes.io/zone label ("" when it has none).
type NodeInfo func(name string) (ready bool, zone string)

// group is the endpoints that share one set of resolved ports.
type group struct {
	ports     []discoveryv1.EndpointPort
	endpoints []discoveryv1.Endpoint
}

// FromPods builds the content of svc's EndpointSlices (AddressType,
// Endpoints, Ports: no metadata) from pods already matched by its selector,
// at most max endpoints each. Which pods are endpoints, and which are
// ready, is exactly what the Endpoints controller decides for addresses
// and notReadyAddresses (see endpoints.Subsets):
//
//	serving     = the pod is Ready and its node is Ready
//	terminating = the pod has a deletionTimestamp
//	ready       = serving && !terminating, or publishNotReadyAddresses
//
// so ready is true exactly for the pods Endpoints list under addresses. A
// terminating pod stays in its slice, ready=false, serving while it is
// ready, as Kubernetes keeps it.
func FromPods(svc *corev1.Service, pods []*corev1.Pod, node NodeInfo, max int) []discoveryv1.EndpointSlice {
	groups := map[string]*group{}
	for _, p := range pods {
		if p.Status.PodIP == "" || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		if a, err := netip.ParseAddr(p.Status.PodIP); err != nil || !a.Is4() {
			continue // the slices are IPv4 only
		}
		ports := endpoints.ResolvePorts(svc, p)
		if len(ports) == 0 && len(svc.Spec.Ports) > 0 {
			continue // lacks every named port the Service targets
		}
		g := groupOf(groups, slicePorts(ports))
		g.endpoints = append(g.endpoints, podEndpoint(svc, p, node))
	}
	return split(groups, max)
}

func podEndpoint(svc *corev1.Service, p *corev1.Pod, node NodeInfo) discoveryv1.Endpoint {
	nodeReady, zone := true, ""
	if p.Spec.NodeName != "" {
		nodeReady, zone = node(p.Spec.NodeName)
	}
	serving := conditions.PodReady(p) && nodeReady
	terminating := p.DeletionTimestamp != nil
	ready := serving && !terminating || svc.Spec.PublishNotReadyAddresses
	ep := discoveryv1.Endpoint{
		Addresses:  []string{p.Status.PodIP},
		Conditions: discoveryv1.EndpointConditions{Ready: &ready, Serving: &serving, Terminating: &terminating},
		TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: p.Namespace, Name: p.Name, UID: p.UID},
	}
	if p.Spec.NodeName != "" {
		ep.NodeName = ptr(p.Spec.NodeName)
	}
	if zone != "" {
		ep.Zone = ptr(zone)
	}
	if p.Spec.Hostname != "" && p.Spec.Subdomain == svc.Name {
		ep.Hostname = ptr(p.Spec.Hostname)
	}
	return ep
}

// FromEndpoints mirrors the Endpoints a user wrote for a Service without a
// selector into slices, as Kubernetes' EndpointSlice mirroring controller
// does: addresses are ready and serving, notReadyAddresses neither, and
// addresses that are not IPv4 are left out.
//
//lint:ignore SA1019 mirrored for old clients: users still write v1 Endpoints for selectorless Services
func FromEndpoints(ep *corev1.Endpoints, max int) []discoveryv1.EndpointSlice {
	groups := map[string]*group{}
	for _, ss := range ep.Subsets {
		g := groupOf(groups, slicePorts(ss.Ports))
		add := func(addrs []corev1.EndpointAddress, ready bool) {
			for _, a := range addrs {
				if ip, err := netip.ParseAddr(a.IP); err != nil || !ip.Is4() {
					continue
				}
				e := discoveryv1.Endpoint{
					Addresses:  []string{a.IP},
					Conditions: discoveryv1.EndpointConditions{Ready: ptr(ready), Serving: ptr(ready), Terminating: ptr(false)},
					TargetRef:  a.TargetRef,
					NodeName:   a.NodeName,
				}
				if a.Hostname != "" {
					e.Hostname = ptr(a.Hostname)
				}
				g.endpoints = append(g.endpoints, e)
			}
		}
		add(ss.Addresses, true)
		add(ss.NotReadyAddresses, false)
	}
	return split(groups, max)
}

// slicePorts converts resolved Endpoints ports to slice ports, spelled as
// the API server defaults them (name and protocol set), so that what is
// built compares equal to what is stored.
func slicePorts(ports []corev1.EndpointPort) []discoveryv1.EndpointPort {
	var out []discoveryv1.EndpointPort
	for _, p := range ports {
		proto := p.Protocol
		if proto == "" {
			proto = corev1.ProtocolTCP
		}
		out = append(out, discoveryv1.EndpointPort{Name: ptr(p.Name), Port: ptr(p.Port), Protocol: ptr(proto), AppProtocol: p.AppProtocol})
	}
	return out
}

func groupOf(groups map[string]*group, ports []discoveryv1.EndpointPort) *group {
	var b strings.Builder
	for _, p := range ports {
		fmt.Fprintf(&b, "%s/%d/%s,", *p.Name, *p.Port, *p.Protocol)
	}
	k := b.String()
	g, ok := groups[k]
	if !ok {
		g = &group{ports: ports}
		groups[k] = g
	}
	return g
}

// split sorts each group's endpoints (by address, then pod) and cuts it
// into slices of at most max, groups in the order of their ports: equal
// inputs give equal slices and no needless write.
func split(groups map[string]*group, max int) []discoveryv1.EndpointSlice {
	if max <= 0 {
		max = DefaultMaxEndpointsPerSlice
	}
	keys := make([]string, 0, len(groups))
	for k := range groups {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var out []discoveryv1.EndpointSlice
	for _, k := range keys {
		g := groups[k]
		if len(g.endpoints) == 0 {
			continue
		}
		sort.Slice(g.endpoints, func(i, j int) bool { return endpointKey(g.endpoints[i]) < endpointKey(g.endpoints[j]) })
		for start := 0; start < len(g.endpoints); start += max {
			end := min(start+max, len(g.endpoints))
			out = append(out, discoveryv1.EndpointSlice{
				AddressType: discoveryv1.AddressTypeIPv4,
				Endpoints:   g.endpoints[start:end:end],
				Ports:       g.ports,
			})
		}
	}
	return out
}

func endpointKey(e discoveryv1.Endpoint) string {
	k := e.Addresses[0]
	if e.TargetRef != nil {
		k += "/" + e.TargetRef.Name
	}
	return k
}

func ptr[T any](v T) *T { return &v }
