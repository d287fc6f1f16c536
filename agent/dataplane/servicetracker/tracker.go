// Package servicetracker keeps, from Service and EndpointSlice events, which
// Services changed since the dataplane was last given them, and compiles
// only those into dataplane.Service values: the agent's side of an
// incremental sync, as kube-proxy's ServiceChangeTracker and
// EndpointsChangeTracker are. An event marks its Service dirty; Changes
// compiles the dirty Services and says, for each of their ports, the new
// state or nil where a port went. One Service's ports are always handed
// over together, so one changed Service is one change set: the same unit a
// per-Service desired-state message carries.
package servicetracker

import (
	"sync"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/skep-io/skep/agent/dataplane"
)

// serviceName is a Service's namespace and name.
type serviceName struct{ namespace, name string }

// Tracker records Service and EndpointSlice events. Its methods may be
// called from any goroutine.
type Tracker struct {
	nodeName string

	mu       sync.Mutex
	services map[serviceName]*corev1.Service
	// slices are the IPv4 EndpointSlices of each Service, by slice name;
	// sliceOf says under which Service a slice was filed, so that a slice
	// relabelled to another Service leaves the first.
	slices  map[serviceName]map[string]*discoveryv1.EndpointSlice
	sliceOf map[serviceName]serviceName // slice namespace/name -> its Service
	// given are the ports last handed out for each Service, so that
	// Changes can say which went.
	given map[serviceName][]dataplane.ServiceKey
	dirty map[serviceName]struct{}
	// notify is called after every event that marked a Service dirty.
	notify func()
}

// New makes a Tracker for the node nodeName (whose backends are Local);
// notify, if not nil, is called after each event that leaves a change to
// hand out.
func New(nodeName string, notify func()) *Tracker {
	if notify == nil {
		notify = func() {}
	}
	return &Tracker{
		nodeName: nodeName,
		services: map[serviceName]*corev1.Service{},
		slices:   map[serviceName]map[string]*discoveryv1.EndpointSlice{},
		sliceOf:  map[serviceName]serviceName{},
		given:    map[serviceName][]dataplane.ServiceKey{},
		dirty:    map[serviceName]struct{}{},
		notify:   notify,
	}
}

// ServiceChanged records a Service added or updated.
func (t *Tracker) ServiceChanged(svc *corev1.Service) {
	n := serviceName{svc.Namespace, svc.Name}
	t.mu.Lock()
	t.services[n] = svc
	t.dirty[n] = struct{}{}
	t.mu.Unlock()
	t.notify()
}

// ServiceDeleted records a Service removed.
func (t *Tracker) ServiceDeleted(namespace, name string) {
	n := serviceName{namespace, name}
	t.mu.Lock()
	delete(t.services, n)
	t.dirty[n] = struct{}{}
	t.mu.Unlock()
	t.notify()
}

// SliceChanged records an EndpointSlice added or updated. A slice without
// the kubernetes.io/service-name label, or not of IPv4 addresses, belongs
// to no Service (as kube-proxy reads them); one that lost its label leaves
// the Service it was filed under.
func (t *Tracker) SliceChanged(es *discoveryv1.EndpointSlice) {
	id := serviceName{es.Namespace, es.Name}
	svc, labelled := es.Labels[discoveryv1.LabelServiceName]
	t.mu.Lock()
	t.dropSlice(id)
	if labelled && es.AddressType == discoveryv1.AddressTypeIPv4 {
		n := serviceName{es.Namespace, svc}
		if t.slices[n] == nil {
			t.slices[n] = map[string]*discoveryv1.EndpointSlice{}
		}
		t.slices[n][es.Name] = es
		t.sliceOf[id] = n
		t.dirty[n] = struct{}{}
	}
	t.mu.Unlock()
	t.notify()
}

// SliceDeleted records an EndpointSlice removed.
func (t *Tracker) SliceDeleted(namespace, name string) {
	t.mu.Lock()
	t.dropSlice(serviceName{namespace, name})
	t.mu.Unlock()
	t.notify()
}

// dropSlice takes a slice away from the Service it was filed under, marking
// that Service dirty. Caller holds mu.
func (t *Tracker) dropSlice(id serviceName) {
	n, ok := t.sliceOf[id]
	if !ok {
		return
	}
	delete(t.sliceOf, id)
	delete(t.slices[n], id.name)
	if len(t.slices[n]) == 0 {
		delete(t.slices, n)
	}
	t.dirty[n] = struct{}{}
}

// Pending reports whether some Service changed since the last Changes or
// All.
func (t *Tracker) Pending() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.dirty) > 0
}

// Changes compiles the Services that changed since the last Changes or All
// and returns their ports: each with its new state, or nil where a port
// (or the whole Service) is gone. A Service that changed and changed back
// is in it all the same; the dataplanes find it equal and write nothing.
func (t *Tracker) Changes() map[dataplane.ServiceKey]*dataplane.Service {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := map[dataplane.ServiceKey]*dataplane.Service{}
	for n := range t.dirty {
		for _, k := range t.given[n] {
			out[k] = nil
		}
		ports := t.compile(n)
		keys := make([]dataplane.ServiceKey, 0, len(ports))
		for k, s := range ports {
			out[k] = s
			keys = append(keys, k)
		}
		if len(keys) == 0 {
			delete(t.given, n)
		} else {
			t.given[n] = keys
		}
	}
	clear(t.dirty)
	return out
}

// All compiles every Service, for a full sync, and clears what is pending.
func (t *Tracker) All() map[dataplane.ServiceKey]*dataplane.Service {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := map[dataplane.ServiceKey]*dataplane.Service{}
	clear(t.given)
	for n := range t.services {
		ports := t.compile(n)
		keys := make([]dataplane.ServiceKey, 0, len(ports))
		for k, s := range ports {
			out[k] = s
			keys = append(keys, k)
		}
		if len(keys) > 0 {
			t.given[n] = keys
		}
	}
	clear(t.dirty)
	return out
}

// compile turns one Service and its slices into its ports, as
// dataplane.FromKubernetes does for all. Caller holds mu.
func (t *Tracker) compile(n serviceName) map[dataplane.ServiceKey]*dataplane.Service {
	svc, ok := t.services[n]
	if !ok {
		return nil
	}
	slices := make([]*discoveryv1.EndpointSlice, 0, len(t.slices[n]))
	for _, es := range t.slices[n] {
		slices = append(slices, es)
	}
	return dataplane.FromKubernetes([]*corev1.Service{svc}, slices, t.nodeName)
}
