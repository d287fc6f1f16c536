package dataplane

import (
	"fmt"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func ptr[T any](v T) *T { return &v }

// ep is an endpoint on node with the ready condition given (nil: unset).
func ep(ip, node string, ready *bool) discoveryv1.Endpoint {
	return discoveryv1.Endpoint{Addresses: []string{ip}, NodeName: ptr(node), Conditions: discoveryv1.EndpointConditions{Ready: ready}}
}

func slice(name, svc string, port int32, proto corev1.Protocol, eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "default", Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   eps,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr("http"), Port: ptr(port), Protocol: ptr(proto)}},
	}
}

// backends renders a port's backends as "ip:port node ready local".
func backends(s *Service) []string {
	var out []string
	for _, b := range s.Backends {
		out = append(out, fmt.Sprintf("%s:%d %s ready=%t local=%t", b.Addr, b.Port, b.NodeName, b.Ready, b.Local))
	}
	return out
}

// TestFromKubernetesSlices checks a Service's slices are merged by the
// service-name label, ready endpoints before not-ready ones as the
// Endpoints listed them, and ports matched by name and protocol.
func TestFromKubernetesSlices(t *testing.T) {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web"},
		Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.10", Ports: []corev1.ServicePort{
			{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP},
		}},
	}
	yes, no := ptr(true), ptr(false)
	in := []*discoveryv1.EndpointSlice{
		slice("web-b", "web", 8080, corev1.ProtocolTCP, ep("10.244.2.5", "node-b", yes)),
		slice("web-a", "web", 8080, corev1.ProtocolTCP,
			ep("10.244.1.5", "node-a", no), ep("10.244.1.6", "node-a", yes), ep("10.244.1.7", "node-b", nil)),
		slice("web-udp", "web", 5353, corev1.ProtocolUDP, ep("10.244.3.1", "node-a", yes)), // not the TCP port
		slice("other-a", "other", 8080, corev1.ProtocolTCP, ep("10.244.9.9", "node-a", yes)),
	}
	unlabelled := slice("stray", "web", 8080, corev1.ProtocolTCP, ep("10.244.8.8", "node-a", yes))
	delete(unlabelled.Labels, discoveryv1.LabelServiceName)
	in = append(in, unlabelled)

	got := FromKubernetes([]*corev1.Service{svc}, in, "node-a")
	s := got[ServiceKey{Namespace: "default", Name: "web", Port: "http", Protocol: TCP}]
	if s == nil || len(got) != 1 {
		t.Fatalf("FromKubernetes gave %v; want one port web/http", got)
	}
	want := []string{
		"10.244.1.6:8080 node-a ready=true local=true",
		"10.244.1.7:8080 node-b ready=true local=false", // an unset ready condition means ready
		"10.244.1.5:8080 node-a ready=false local=true",
		"10.244.2.5:8080 node-b ready=true local=false",
	}
	if b := backends(s); !slices.Equal(b, want) {
		t.Errorf("backends\n got %q\nwant %q", b, want)
	}
	// A not-ready backend is listed but takes no new connection; nothing
	// is marked terminating (ready already says so, as the Endpoints did).
	var serving []string
	for _, b := range s.ServingBackends() {
		serving = append(serving, b.Addr.String())
	}
	if want := []string{"10.244.1.6", "10.244.1.7", "10.244.2.5"}; !slices.Equal(serving, want) {
		t.Errorf("serving backends %v; want %v", serving, want)
	}

	// A Service with no slices keeps its port, without backends.
	if got := FromKubernetes([]*corev1.Service{svc}, nil, "node-a"); len(got) != 1 {
		t.Errorf("a Service without slices gave %d ports; want 1", len(got))
	}
}
