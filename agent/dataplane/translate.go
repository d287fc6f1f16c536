package dataplane

import (
	"net/netip"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// FromKubernetes turns Services and their EndpointSlices into the service
// ports a dataplane programs. A Service's slices are those labelled with
// its name (kubernetes.io/service-name), as kube-proxy finds them. nodeName
// marks which backends are local. Headless and ExternalName services, and
// ports of protocols the dataplanes do not carry, are left out.
func FromKubernetes(services []*corev1.Service, endpointSlices []*discoveryv1.EndpointSlice, nodeName string) map[ServiceKey]*Service {
	slicesOf := make(map[[2]string][]*discoveryv1.EndpointSlice)
	for _, es := range endpointSlices {
		svc, ok := es.Labels[discoveryv1.LabelServiceName]
		if !ok || es.AddressType != discoveryv1.AddressTypeIPv4 {
			continue
		}
		k := [2]string{es.Namespace, svc}
		slicesOf[k] = append(slicesOf[k], es)
	}
	for _, ss := range slicesOf {
		// By name, so the backends come in the same order on every sync.
		slices.SortFunc(ss, func(a, b *discoveryv1.EndpointSlice) int { return strings.Compare(a.Name, b.Name) })
	}
	out := make(map[ServiceKey]*Service)
	for _, svc := range services {
		if svc.Spec.Type == corev1.ServiceTypeExternalName {
			continue
		}
		clusterIP, err := netip.ParseAddr(svc.Spec.ClusterIP)
		if err != nil || !clusterIP.Is4() {
			continue // headless ("None") or not yet allocated
		}
		var lbIPs, extIPs []netip.Addr
		for _, ing := range svc.Status.LoadBalancer.Ingress {
			if a, err := netip.ParseAddr(ing.IP); err == nil && a.Is4() {
				lbIPs = append(lbIPs, a)
			}
		}
		for _, ip := range svc.Spec.ExternalIPs {
			if a, err := netip.ParseAddr(ip); err == nil && a.Is4() {
				extIPs = append(extIPs, a)
			}
		}
		var affinity time.Duration
		if svc.Spec.SessionAffinity == corev1.ServiceAffinityClientIP {
			affinity = 10800 * time.Second
			if c := svc.Spec.SessionAffinityConfig; c != nil && c.ClientIP != nil && c.ClientIP.TimeoutSeconds != nil {
				affinity = time.Duration(*c.ClientIP.TimeoutSeconds) * time.Second
			}
		}
		svcSlices := slicesOf[[2]string{svc.Namespace, svc.Name}]
		for _, sp := range svc.Spec.Ports {
			proto := Protocol(sp.Protocol)
			if proto == "" {
				proto = TCP
			}
			if proto != TCP && proto != UDP {
				continue
			}
			s := &Service{
				Key:                 ServiceKey{Namespace: svc.Namespace, Name: svc.Name, Port: sp.Name, Protocol: proto},
				ClusterIP:           clusterIP,
				Port:                uint16(sp.Port),
				NodePort:            uint16(sp.NodePort),
				LoadBalancerIPs:     lbIPs,
				ExternalIPs:         extIPs,
				ExternalPolicyLocal: svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal,
				AffinityTimeout:     affinity,
			}
			if svc.Spec.Type == corev1.ServiceTypeClusterIP || svc.Spec.Type == "" {
				s.NodePort = 0
			}
			s.Backends = backendsFor(svcSlices, sp, nodeName)
			out[s.Key] = s
		}
	}
	return out
}

// backendsFor finds, in each slice, the port matching a service port (by
// name, as the controller writes them) and lists the slice's endpoints.
//
// Ready is the endpoint's ready condition (unset means ready, as the API
// documents), which the controller sets exactly for the pods the Endpoints
// list under addresses: serving, not terminating, on a Ready node, or any
// pod of a Service that publishes not-ready addresses. Terminating is left
// unset: a terminating pod is already not ready, except under
// publishNotReadyAddresses, where it kept receiving connections from the
// Endpoints and still does. The backends not ready stay listed, as the
// Endpoints' notReadyAddresses were, so the dataplanes see them leave.
func backendsFor(svcSlices []*discoveryv1.EndpointSlice, sp corev1.ServicePort, nodeName string) []Backend {
	var out []Backend
	for _, es := range svcSlices {
		port, ok := slicePort(es, sp)
		if !ok {
			continue
		}
		// Ready ones first, as the Endpoints listed addresses before
		// notReadyAddresses: the same backends in the same order.
		for _, wantReady := range []bool{true, false} {
			for _, e := range es.Endpoints {
				if ready := e.Conditions.Ready == nil || *e.Conditions.Ready; ready != wantReady || len(e.Addresses) == 0 {
					continue
				}
				ip, err := netip.ParseAddr(e.Addresses[0]) // an endpoint's addresses are one pod's: kube-proxy takes the first
				if err != nil || !ip.Is4() {
					continue
				}
				node := ""
				if e.NodeName != nil {
					node = *e.NodeName
				}
				out = append(out, Backend{
					Addr:     ip,
					Port:     uint16(port),
					NodeName: node,
					Local:    node != "" && node == nodeName,
					Ready:    wantReady,
				})
			}
		}
	}
	return out
}

// slicePort is the number of the slice's port of the same name and
// protocol as sp (unset fields being "" and TCP).
func slicePort(es *discoveryv1.EndpointSlice, sp corev1.ServicePort) (int32, bool) {
	want := sp.Protocol
	if want == "" {
		want = corev1.ProtocolTCP
	}
	for _, p := range es.Ports {
		name, proto := "", corev1.ProtocolTCP
		if p.Name != nil {
			name = *p.Name
		}
		if p.Protocol != nil {
			proto = *p.Protocol
		}
		if name == sp.Name && proto == want && p.Port != nil && *p.Port != 0 {
			return *p.Port, true
		}
	}
	return 0, false
}
