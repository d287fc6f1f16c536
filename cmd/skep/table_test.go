package main

import (
	"slices"
	"testing"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skep-io/skep/controlplane/api"
)

// TestEndpointSliceTable checks `skep get endpointslices` shows kubectl's
// columns.
func TestEndpointSliceTable(t *testing.T) {
	port := int32(8080)
	es := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "web-x7k2p", CreationTimestamp: metav1.Now()},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Port: &port}},
	}
	for _, ip := range []string{"10.244.1.5", "10.244.1.6", "10.244.2.5", "10.244.2.6", "10.244.3.5"} {
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{Addresses: []string{ip}})
	}
	cols, row := table(api.MustLookup("endpointslices"), false)
	got := row(es)
	if want := []string{"NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"}; !slices.Equal(cols, want) {
		t.Errorf("columns %q; want %q", cols, want)
	}
	if want := []string{"web-x7k2p", "IPv4", "8080", "10.244.1.5,10.244.1.6,10.244.2.5 + 2 more..."}; !slices.Equal(got[:4], want) {
		t.Errorf("row %q; want %q then the age", got, want)
	}
}
