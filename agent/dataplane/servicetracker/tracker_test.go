package servicetracker

import (
	"fmt"
	"maps"
	"math/rand"
	"os"
	"reflect"
	"slices"
	"strconv"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skep-io/skep/agent/dataplane"
)

func service(name, clusterIP string, ports ...string) *corev1.Service {
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: clusterIP}}
	for i, p := range ports {
		svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{Name: p, Port: int32(80 + i), Protocol: corev1.ProtocolTCP})
	}
	return svc
}

func slice(name, svc string, ips ...string) *discoveryv1.EndpointSlice {
	es := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "default", Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
	}
	for _, p := range []string{"http", "metrics"} {
		es.Ports = append(es.Ports, discoveryv1.EndpointPort{Name: ptr(p), Port: ptr(int32(8080)), Protocol: ptr(corev1.ProtocolTCP)})
	}
	for _, ip := range ips {
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{Addresses: []string{ip}, NodeName: ptr("node-a")})
	}
	return es
}

func ptr[T any](v T) *T { return &v }

func key(name, port string) dataplane.ServiceKey {
	return dataplane.ServiceKey{Namespace: "default", Name: name, Port: port, Protocol: dataplane.TCP}
}

func TestChangesCarryOnlyTheChangedService(t *testing.T) {
	kicks := 0
	tr := New("node-a", func() { kicks++ })
	tr.ServiceChanged(service("web", "10.96.0.10", "http", "metrics"))
	tr.ServiceChanged(service("db", "10.96.0.11", "http"))
	tr.SliceChanged(slice("web-1", "web", "10.244.1.2"))
	if kicks != 3 {
		t.Errorf("3 events notified %d times", kicks)
	}
	all := tr.All()
	if len(all) != 3 || len(all[key("web", "http")].Backends) != 1 || all[key("web", "metrics")].Backends[0].Local != true {
		t.Fatalf("All = %v, want web:http, web:metrics with the local backend, db:http", all)
	}
	if tr.Pending() || len(tr.Changes()) != 0 {
		t.Fatal("All left changes pending")
	}

	// An endpoint of web changes: both its ports, nothing of db.
	tr.SliceChanged(slice("web-1", "web", "10.244.1.2", "10.244.1.3"))
	got := tr.Changes()
	if want := []dataplane.ServiceKey{key("web", "http"), key("web", "metrics")}; !sameKeys(got, want) {
		t.Fatalf("after a slice change Changes has %v, want %v", slices.Collect(maps.Keys(got)), want)
	}
	if n := len(got[key("web", "http")].Backends); n != 2 {
		t.Errorf("web:http has %d backends, want 2", n)
	}

	// web loses its metrics port: that port is nil, http stays.
	tr.ServiceChanged(service("web", "10.96.0.10", "http"))
	got = tr.Changes()
	if s, ok := got[key("web", "metrics")]; !ok || s != nil {
		t.Errorf("the removed port is %v (present %v), want nil", s, ok)
	}
	if got[key("web", "http")] == nil {
		t.Error("the kept port is missing from the change")
	}

	// The slice moves to db: web loses its backends, db gains them.
	moved := slice("web-1", "db", "10.244.1.2")
	tr.SliceChanged(moved)
	got = tr.Changes()
	if len(got[key("web", "http")].Backends) != 0 || len(got[key("db", "http")].Backends) != 1 {
		t.Errorf("after relabelling, web has %v and db %v", got[key("web", "http")], got[key("db", "http")])
	}

	// db goes: its port is nil.
	tr.ServiceDeleted("default", "db")
	got = tr.Changes()
	if s, ok := got[key("db", "http")]; len(got) != 1 || !ok || s != nil {
		t.Errorf("after deleting db Changes is %v, want db:http nil only", got)
	}
	tr.SliceDeleted("default", "web-1") // filed under db, which is gone
	if got := tr.Changes(); len(got) != 0 {
		t.Errorf("deleting a slice of a deleted Service changed %v", got)
	}
}

func sameKeys(m map[dataplane.ServiceKey]*dataplane.Service, want []dataplane.ServiceKey) bool {
	got := slices.Collect(maps.Keys(m))
	return len(got) == len(want) && !slices.ContainsFunc(want, func(k dataplane.ServiceKey) bool { _, ok := m[k]; return !ok })
}

// TestChangesAccumulateToFromKubernetes applies random Service and slice
// events; after each, the changes applied to what was handed out before
// equal a full translation of every object.
func TestChangesAccumulateToFromKubernetes(t *testing.T) {
	seed := time.Now().UnixNano()
	if s := os.Getenv("SKEP_PROP_SEED"); s != "" {
		seed, _ = strconv.ParseInt(s, 10, 64)
	}
	t.Logf("seed %d (replay with SKEP_PROP_SEED=%d)", seed, seed)
	r := rand.New(rand.NewSource(seed))
	tr := New("node-a", nil)
	svcs := map[string]*corev1.Service{}
	sls := map[string]*discoveryv1.EndpointSlice{}
	state := map[dataplane.ServiceKey]*dataplane.Service{}
	for step := range 2000 {
		name := fmt.Sprintf("svc-%d", r.Intn(5))
		switch r.Intn(4) {
		case 0:
			ports := []string{"http"}
			if r.Intn(2) == 0 {
				ports = append(ports, "metrics")
			}
			svc := service(name, fmt.Sprintf("10.96.0.%d", 10+r.Intn(3)), ports...)
			svcs[name] = svc
			tr.ServiceChanged(svc)
		case 1:
			delete(svcs, name)
			tr.ServiceDeleted("default", name)
		case 2:
			sn := fmt.Sprintf("slice-%d", r.Intn(7))
			var ips []string
			for range r.Intn(3) {
				ips = append(ips, fmt.Sprintf("10.244.1.%d", 2+r.Intn(9)))
			}
			es := slice(sn, name, ips...)
			sls[sn] = es
			tr.SliceChanged(es)
		case 3:
			sn := fmt.Sprintf("slice-%d", r.Intn(7))
			delete(sls, sn)
			tr.SliceDeleted("default", sn)
		}
		if r.Intn(3) > 0 {
			continue // let changes pile up between takes
		}
		for k, s := range tr.Changes() {
			if s == nil {
				delete(state, k)
			} else {
				state[k] = s
			}
		}
		want := dataplane.FromKubernetes(slices.Collect(maps.Values(svcs)), slices.Collect(maps.Values(sls)), "node-a")
		if !equalStates(state, want) {
			t.Fatalf("seed %d step %d: accumulated changes %v, full translation %v", seed, step, state, want)
		}
		if step%50 == 0 && !equalStates(tr.All(), want) {
			t.Fatalf("seed %d step %d: All differs from the full translation", seed, step)
		}
	}
}

// equalStates compares two states port by port; backends compare as sets,
// since slices are listed in map order.
func equalStates(a, b map[dataplane.ServiceKey]*dataplane.Service) bool {
	if len(a) != len(b) {
		return false
	}
	for k, s := range a {
		o, ok := b[k]
		if !ok {
			return false
		}
		x, y := *s, *o
		x.Backends, y.Backends = sortedBackends(s.Backends), sortedBackends(o.Backends)
		if !reflect.DeepEqual(x, y) {
			return false
		}
	}
	return true
}

func sortedBackends(in []dataplane.Backend) []dataplane.Backend {
	out := slices.Clone(in)
	slices.SortFunc(out, func(a, b dataplane.Backend) int { return a.Addr.Compare(b.Addr) })
	if len(out) == 0 {
		return nil
	}
	return out
}
