package node

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skep-io/skep/agent/dataplane"
	"github.com/skep-io/skep/controlplane/apiserver/apiservertest"
	"github.com/skep-io/skep/controlplane/client"
)

// recordingDataplane records the calls the agent makes.
type recordingDataplane struct {
	mu    sync.Mutex
	calls []call
}

type call struct {
	full     bool
	services map[dataplane.ServiceKey]*dataplane.Service
}

func (r *recordingDataplane) Sync(_ context.Context, s map[dataplane.ServiceKey]*dataplane.Service) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, call{true, maps.Clone(s)})
	return nil
}

func (r *recordingDataplane) Apply(_ context.Context, s map[dataplane.ServiceKey]*dataplane.Service) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, call{false, maps.Clone(s)})
	return nil
}

func (r *recordingDataplane) Services(context.Context) ([]dataplane.Service, error) { return nil, nil }
func (r *recordingDataplane) Close() error                                          { return nil }
func (r *recordingDataplane) Cleanup(context.Context) error                         { return nil }

// waitCall waits for call number i.
func (r *recordingDataplane) waitCall(t *testing.T, i int) call {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r.mu.Lock()
		if len(r.calls) > i {
			c := r.calls[i]
			r.mu.Unlock()
			return c
		}
		r.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatalf("no dataplane call %d within 10s", i)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestSyncServicesAppliesOnlyChangedServices runs the agent's service sync
// against a real API server: a full Sync of every Service first, then one
// Apply per change carrying only the changed Service's ports.
func TestSyncServicesAppliesOnlyChangedServices(t *testing.T) {
	ctx := t.Context()
	c := apiservertest.Start(t)
	port := func(name string, p int32) corev1.ServicePort {
		return corev1.ServicePort{Name: name, Port: p, Protocol: corev1.ProtocolTCP}
	}
	mkService := func(name, ip string) *corev1.Service {
		return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: ip, ClusterIPs: []string{ip},
				Ports: []corev1.ServicePort{port("http", 80)}}}
	}
	for _, s := range []*corev1.Service{mkService("web", "10.96.0.10"), mkService("db", "10.96.0.11")} {
		if _, err := c.Create(ctx, servicesR, s); err != nil {
			t.Fatal(err)
		}
	}
	pname, pnum, proto := "http", int32(8080), corev1.ProtocolTCP
	es := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "default", Name: "web-1", Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &pname, Port: &pnum, Protocol: &proto}},
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"10.244.1.2"}}},
	}
	if _, err := c.Create(ctx, slicesR, es); err != nil {
		t.Fatal(err)
	}

	a := &Agent{cfg: Config{Name: "node-a"}, log: slog.New(slog.DiscardHandler), metrics: newAgentMetrics("ebpf")}
	svcs := client.NewInformer(c, servicesR, client.InformerOptions{Logger: a.log})
	sls := client.NewInformer(c, slicesR, client.InformerOptions{Logger: a.log})
	go svcs.Run(ctx)
	go sls.Run(ctx)
	dp := &recordingDataplane{}
	go a.syncServices(ctx, dp, svcs, sls)

	web := dataplane.ServiceKey{Namespace: "default", Name: "web", Port: "http", Protocol: dataplane.TCP}
	db := dataplane.ServiceKey{Namespace: "default", Name: "db", Port: "http", Protocol: dataplane.TCP}
	first := dp.waitCall(t, 0)
	if !first.full || len(first.services) != 2 || len(first.services[web].Backends) != 1 {
		t.Fatalf("first call: full %t with %v, want a full Sync of web (one backend) and db", first.full, first.services)
	}

	// A second endpoint for web: an Apply of web alone.
	got, err := c.Get(ctx, slicesR, "default", "web-1")
	if err != nil {
		t.Fatal(err)
	}
	es = got.(*discoveryv1.EndpointSlice)
	es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{Addresses: []string{"10.244.1.3"}})
	if _, err := c.Update(ctx, slicesR, es); err != nil {
		t.Fatal(err)
	}
	next := dp.waitCall(t, 1)
	if next.full || !slices.Equal(slices.Collect(maps.Keys(next.services)), []dataplane.ServiceKey{web}) ||
		len(next.services[web].Backends) != 2 {
		t.Fatalf("after an endpoint change: full %t with %v, want an Apply of web with two backends", next.full, next.services)
	}

	// db deleted: an Apply removing db's port.
	if err := c.Delete(ctx, servicesR, "default", "db", client.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	last := dp.waitCall(t, 2)
	if s, ok := last.services[db]; last.full || len(last.services) != 1 || !ok || s != nil {
		t.Fatalf("after deleting db: full %t with %v, want an Apply of db: nil", last.full, last.services)
	}
}
