package apiserver_test

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skep-io/skep/controlplane/api"
	"github.com/skep-io/skep/controlplane/apiserver/apiservertest"
	"github.com/skep-io/skep/controlplane/client"
)

// TestEndpointSlices checks discovery.k8s.io/v1 EndpointSlices are served
// over HTTP with Kubernetes' defaulting and validation, and that an agent
// reads them but does not write them.
func TestEndpointSlices(t *testing.T) {
	s := apiservertest.StartServer(t)
	ctx := t.Context()
	r := api.MustLookup("endpointslices")
	admin := httpClient(t, s, s.AdminToken)
	node := httpClient(t, s, mustJoin(t, s, client.JoinRequest{NodeName: "node-a", Password: passwordOne}).Token)

	slice := func(mutate func(*discoveryv1.EndpointSlice)) *discoveryv1.EndpointSlice {
		port := int32(8080)
		es := &discoveryv1.EndpointSlice{
			ObjectMeta: metav1.ObjectMeta{Namespace: "default", GenerateName: "web-", Labels: map[string]string{
				discoveryv1.LabelServiceName: "web", discoveryv1.LabelManagedBy: api.EndpointSliceController,
			}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"10.244.1.5"}}},
			Ports:       []discoveryv1.EndpointPort{{Port: &port}},
		}
		if mutate != nil {
			mutate(es)
		}
		return es
	}
	obj, err := admin.Create(ctx, r, slice(nil))
	if err != nil {
		t.Fatalf("create an EndpointSlice: %v", err)
	}
	got := obj.(*discoveryv1.EndpointSlice)
	if !strings.HasPrefix(got.Name, "web-") || len(got.Name) <= len("web-") {
		t.Errorf("generateName web-: name %q", got.Name)
	}
	if p := got.Ports[0]; p.Name == nil || *p.Name != "" || p.Protocol == nil || *p.Protocol != corev1.ProtocolTCP {
		t.Errorf("port defaulted to %+v; want name \"\" and protocol TCP", p)
	}

	invalid := []struct {
		name, field string
		mutate      func(*discoveryv1.EndpointSlice)
	}{
		{"IPv6 addressType", "addressType", func(es *discoveryv1.EndpointSlice) { es.AddressType = discoveryv1.AddressTypeIPv6 }},
		{"FQDN addressType", "addressType", func(es *discoveryv1.EndpointSlice) { es.AddressType = discoveryv1.AddressTypeFQDN }},
		{"no addressType", "addressType", func(es *discoveryv1.EndpointSlice) { es.AddressType = "" }},
		{"bad address", "endpoints[0].addresses[0]", func(es *discoveryv1.EndpointSlice) { es.Endpoints[0].Addresses = []string{"10.244.1"} }},
		{"IPv6 address in an IPv4 slice", "endpoints[0].addresses[0]", func(es *discoveryv1.EndpointSlice) { es.Endpoints[0].Addresses = []string{"fd00::1"} }},
		{"no address", "endpoints[0].addresses", func(es *discoveryv1.EndpointSlice) { es.Endpoints[0].Addresses = nil }},
		{"too many endpoints", "endpoints", func(es *discoveryv1.EndpointSlice) {
			es.Endpoints = make([]discoveryv1.Endpoint, 1001)
			for i := range es.Endpoints {
				es.Endpoints[i].Addresses = []string{"10.244.1.5"}
			}
		}},
		{"bad port name", "ports[0].name", func(es *discoveryv1.EndpointSlice) { n := "Not_A_Name"; es.Ports[0].Name = &n }},
		{"bad protocol", "ports[0].protocol", func(es *discoveryv1.EndpointSlice) { p := corev1.Protocol("ICMP"); es.Ports[0].Protocol = &p }},
		{"duplicate port name", "ports[1].name", func(es *discoveryv1.EndpointSlice) { es.Ports = append(es.Ports, es.Ports[0]) }},
		{"bad port", "ports[0].port", func(es *discoveryv1.EndpointSlice) { p := int32(70000); es.Ports[0].Port = &p }},
		{"managed by skep without its Service", "kubernetes.io/service-name", func(es *discoveryv1.EndpointSlice) { delete(es.Labels, discoveryv1.LabelServiceName) }},
	}
	for _, tc := range invalid {
		t.Run(tc.name, func(t *testing.T) {
			_, err := admin.Create(ctx, r, slice(tc.mutate))
			if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), tc.field) {
				t.Errorf("create with %s: %v; want 422 naming %s", tc.name, err, tc.field)
			}
		})
	}
	// A slice someone else manages needs no service-name label.
	if _, err := admin.Create(ctx, r, slice(func(es *discoveryv1.EndpointSlice) {
		es.Labels = map[string]string{discoveryv1.LabelManagedBy: "someone"}
	})); err != nil {
		t.Errorf("create a slice managed by another controller without a service-name label: %v", err)
	}

	changed := got.DeepCopy()
	changed.AddressType = discoveryv1.AddressTypeIPv6
	if _, err := admin.Update(ctx, r, changed); !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "addressType") {
		t.Errorf("change addressType: %v; want 422 naming addressType", err)
	}

	list, _, err := node.List(ctx, r, "default", client.ListOptions{})
	if err != nil {
		t.Fatalf("an agent lists EndpointSlices: %v", err)
	}
	if len(list) != 2 {
		t.Errorf("an agent lists %d EndpointSlices; want 2", len(list))
	}
	if _, err := node.Create(ctx, r, slice(nil)); !apierrors.IsForbidden(err) {
		t.Errorf("an agent creates an EndpointSlice: %v; want 403", err)
	}
}
