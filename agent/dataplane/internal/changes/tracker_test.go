package changes

import (
	"net/netip"
	"testing"

	"github.com/skep-io/skep/agent/dataplane"
)

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

func key(ns, name string) dataplane.ServiceKey {
	return dataplane.ServiceKey{Namespace: ns, Name: name, Port: "p80", Protocol: dataplane.TCP}
}

func ready(ip string, local bool) dataplane.Backend {
	return dataplane.Backend{Addr: addr(ip), Port: 80, Ready: true, Local: local}
}

func services(list ...*dataplane.Service) map[dataplane.ServiceKey]*dataplane.Service {
	m := map[dataplane.ServiceKey]*dataplane.Service{}
	for _, s := range list {
		m[s.Key] = s
	}
	return m
}

func TestChangeTracker(t *testing.T) {
	a := &dataplane.Service{Key: key("ns1", "a"), ClusterIP: addr("10.96.0.1"), Port: 80,
		Backends: []dataplane.Backend{ready("10.244.0.1", false), ready("10.244.0.2", false)}}
	// The same service with its backends listed the other way round.
	aReordered := *a
	aReordered.Backends = []dataplane.Backend{ready("10.244.0.2", false), ready("10.244.0.1", false)}
	aChanged := *a
	aChanged.Backends = []dataplane.Backend{ready("10.244.0.3", false)}
	b := &dataplane.Service{Key: key("ns1", "b"), ClusterIP: addr("10.96.0.2"), Port: 80}

	tr := NewTracker()
	tr.Update(services(a, b))
	snap := tr.Snapshot()
	if len(snap.Changes) != 2 {
		t.Fatalf("first update: %d changes, want 2", len(snap.Changes))
	}
	tr.Applied(snap)

	tr.Update(services(&aReordered, b))
	if n := len(tr.Snapshot().Changes); n != 0 {
		t.Errorf("reordered backends: %d changes, want 0", n)
	}

	// A change undone before the sync cancels out.
	tr.Update(services(&aChanged, b))
	tr.Update(services(a, b))
	if n := len(tr.Snapshot().Changes); n != 0 {
		t.Errorf("change and undo: %d changes, want 0", n)
	}

	// A change recorded while a sync is writing stays pending after it.
	tr.Update(services(&aChanged, b))
	snap = tr.Snapshot()
	tr.Update(services(a, b)) // back, while the write of aChanged runs
	tr.Applied(snap)
	c, ok := tr.Snapshot().Changes[a.Key]
	if !ok || c.Current == nil || len(c.Current.Backends) != 2 || c.Previous == nil || len(c.Previous.Backends) != 1 {
		t.Errorf("change during a sync: pending = %+v, want aChanged -> a", c)
	}
	tr.Applied(tr.Snapshot())

	// Removal.
	tr.Update(services(a))
	c, ok = tr.Snapshot().Changes[b.Key]
	if !ok || c.Previous == nil || c.Current != nil {
		t.Errorf("removal of b: pending = %+v, want b -> nil", c)
	}
}

func TestStaleUDPFlows(t *testing.T) {
	udpKey := dataplane.ServiceKey{Namespace: "ns", Name: "dns", Protocol: dataplane.UDP}
	be := func(ip string) dataplane.Backend {
		return dataplane.Backend{Addr: addr(ip), Port: 53, Ready: true}
	}
	prev := &dataplane.Service{Key: udpKey, ClusterIP: addr("10.96.0.10"), Port: 53, NodePort: 30053,
		Backends: []dataplane.Backend{be("10.244.0.1"), be("10.244.0.2")}}
	cur := *prev
	cur.Backends = []dataplane.Backend{be("10.244.0.2")}
	got := StaleUDPFlows(map[dataplane.ServiceKey]Change{udpKey: {Previous: prev, Current: &cur}})
	want := []udpFlow{
		{dst: addr("10.96.0.10"), dstPort: 53, replySrc: addr("10.244.0.1"), replySrcPort: 53},
		{dstPort: 30053, replySrc: addr("10.244.0.1"), replySrcPort: 53},
	}
	if len(got) != len(want) {
		t.Fatalf("filters = %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("filter %d = %+v, want %+v", i, got[i], want[i])
		}
	}

	// First endpoint: flows that were never DNATed go.
	none := *prev
	none.Backends = nil
	got = StaleUDPFlows(map[dataplane.ServiceKey]Change{udpKey: {Previous: &none, Current: prev}})
	if len(got) != 2 || !got[0].(udpFlow).notNATed {
		t.Errorf("first endpoint: filters = %+v, want two not-NATed ones", got)
	}

	// TCP is left alone.
	tcpKey := udpKey
	tcpKey.Protocol = dataplane.TCP
	if got := StaleUDPFlows(map[dataplane.ServiceKey]Change{tcpKey: {Previous: prev, Current: nil}}); len(got) != 0 {
		t.Errorf("TCP change: filters = %+v, want none", got)
	}
}

// TestTrackerApply: a change set changes only its ports, a change back to
// what is programmed cancels out, a removal of an unknown port is nothing,
// and a Snapshot handed out before never moves.
func TestTrackerApply(t *testing.T) {
	a := &dataplane.Service{Key: key("ns1", "a"), ClusterIP: addr("10.96.0.1"), Port: 80,
		Backends: []dataplane.Backend{ready("10.244.0.1", false)}}
	b := &dataplane.Service{Key: key("ns1", "b"), ClusterIP: addr("10.96.0.2"), Port: 80}
	aChanged := *a
	aChanged.Backends = []dataplane.Backend{ready("10.244.0.3", false)}

	tr := NewTracker()
	tr.Update(services(a, b))
	first := tr.Snapshot()
	tr.Applied(first)

	gen := tr.Apply(map[dataplane.ServiceKey]*dataplane.Service{a.Key: &aChanged, key("ns1", "never"): nil})
	snap := tr.Snapshot()
	if snap.Gen != gen || len(snap.Changes) != 1 || snap.Changes[a.Key].Current.Backends[0].Addr != addr("10.244.0.3") {
		t.Fatalf("after Apply of a: changes %v (gen %d, want %d), want a alone", snap.Changes, snap.Gen, gen)
	}
	if len(snap.Services) != 2 || first.Services[a.Key].Backends[0].Addr != addr("10.244.0.1") {
		t.Errorf("desired %v; the earlier snapshot's a now %v", snap.Services, first.Services[a.Key])
	}

	// b removed, a changed back: the change of a cancels out.
	tr.Apply(map[dataplane.ServiceKey]*dataplane.Service{a.Key: a, b.Key: nil})
	last := tr.Snapshot()
	if _, ok := last.Changes[b.Key]; len(last.Changes) != 1 || !ok || last.Changes[b.Key].Current != nil {
		t.Fatalf("after removing b and undoing a: changes %v, want b removed alone", last.Changes)
	}
	if _, ok := snap.Services[b.Key]; !ok || len(last.Services) != 1 {
		t.Errorf("the removal of b moved the earlier snapshot (%d services) or left b in the new one (%d)", len(snap.Services), len(last.Services))
	}
}
