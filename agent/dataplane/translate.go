package dataplane

import (
	"net/netip"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// FromKubernetes turns Services and their Endpoints into the service ports a
// dataplane programs. nodeName marks which backends are local. Headless and
// ExternalName services, and ports of protocols the dataplanes do not carry,
// are left out.
func FromKubernetes(services []*corev1.Service, endpoints []*corev1.Endpoints, nodeName string) map[ServiceKey]*Service {
	epsByName := make(map[[2]string]*corev1.Endpoints, len(endpoints))
	for _, ep := range endpoints {
		epsByName[[2]string{ep.Namespace, ep.Name}] = ep
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
		ep := epsByName[[2]string{svc.Namespace, svc.Name}]
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
			if ep != nil {
				s.Backends = backendsFor(ep, sp, nodeName)
			}
			out[s.Key] = s
		}
	}
	return out
}

// backendsFor finds the Endpoints port matching a service port (by name, as
// the endpoints controller writes them) and lists its addresses.
func backendsFor(ep *corev1.Endpoints, sp corev1.ServicePort, nodeName string) []Backend {
	var out []Backend
	for _, subset := range ep.Subsets {
		var port int32
		for _, p := range subset.Ports {
			proto := p.Protocol
			if proto == "" {
				proto = corev1.ProtocolTCP
			}
			if p.Name == sp.Name && proto == sp.Protocol || p.Name == sp.Name && sp.Protocol == "" && proto == corev1.ProtocolTCP {
				port = p.Port
				break
			}
		}
		if port == 0 {
			continue
		}
		add := func(addrs []corev1.EndpointAddress, ready bool) {
			for _, a := range addrs {
				ip, err := netip.ParseAddr(a.IP)
				if err != nil || !ip.Is4() {
					continue
				}
				node := ""
				if a.NodeName != nil {
					node = *a.NodeName
				}
				out = append(out, Backend{
					Addr:     ip,
					Port:     uint16(port),
					NodeName: node,
					Local:    node != "" && node == nodeName,
					Ready:    ready,
				})
			}
		}
		add(subset.Addresses, true)
		add(subset.NotReadyAddresses, false)
	}
	return out
}
