package node

import (
	"log/slog"
	"testing"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skep-io/skep/controlplane/api"
	"github.com/skep-io/skep/controlplane/apiserver/apiservertest"
	"github.com/skep-io/skep/controlplane/client"
)

// TestServedBy checks a terminating pod waits for its address to stop
// being ready in every EndpointSlice, as it waited for it to leave the
// Endpoints' addresses: a ready (or unset) condition holds it back, a
// not-ready one, or no slice at all, does not.
func TestServedBy(t *testing.T) {
	c := apiservertest.Start(t)
	ready, notReady := true, false
	es := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web-abcde", Labels: map[string]string{
			discoveryv1.LabelServiceName: "web", discoveryv1.LabelManagedBy: api.EndpointSliceController,
		}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{
			{Addresses: []string{"10.244.1.5"}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}},
			{Addresses: []string{"10.244.1.6"}, Conditions: discoveryv1.EndpointConditions{Ready: &notReady}},
			{Addresses: []string{"10.244.1.7"}}, // unset: ready
		},
	}
	if _, err := c.Create(t.Context(), slicesR, es); err != nil {
		t.Fatal(err)
	}
	inf := client.NewInformer(c, slicesR, client.InformerOptions{Logger: slog.New(slog.DiscardHandler)})
	go inf.Run(t.Context())
	if !client.WaitForSync(t.Context(), inf) {
		t.Fatal("informer never synced")
	}
	s := &podSyncer{slices: inf}
	for ip, want := range map[string]bool{"10.244.1.5": true, "10.244.1.6": false, "10.244.1.7": true, "10.244.1.8": false} {
		if got := s.servedBy(ip); got != want {
			t.Errorf("servedBy(%s) = %t; want %t", ip, got, want)
		}
	}
}
