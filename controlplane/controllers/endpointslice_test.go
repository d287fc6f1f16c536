package controllers

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skep-io/skep/controlplane/api"
	"github.com/skep-io/skep/controlplane/apiserver/apiservertest"
	"github.com/skep-io/skep/controlplane/client"
	"github.com/skep-io/skep/controlplane/nodetest"
	"github.com/skep-io/skep/internal/testwait"
)

var endpointSlicesR = api.MustLookup("endpointslices")

// slicesOf lists the EndpointSlices labelled as svc's.
func slicesOf(t *testing.T, c client.Interface, svc string) []*discoveryv1.EndpointSlice {
	t.Helper()
	objs, _, err := c.List(context.Background(), endpointSlicesR, "default", client.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + svc})
	if err != nil {
		t.Fatalf("list endpointslices of %s: %v", svc, err)
	}
	var out []*discoveryv1.EndpointSlice
	for _, o := range objs {
		out = append(out, o.(*discoveryv1.EndpointSlice))
	}
	return out
}

// TestEndpointSlices checks the slices of a Service with a selector (built
// from its pods, alongside its Endpoints) and of one without (mirrored from
// the Endpoints its user wrote), and that they go with their Service.
func TestEndpointSlices(t *testing.T) {
	c := apiservertest.Start(t)
	nodetest.Start(t, c, "node-1", "node-2")
	// node-1 is in a zone, node-2 in none.
	n1, err := c.Get(context.Background(), nodesR, "", "node-1")
	if err != nil {
		t.Fatal(err)
	}
	node := n1.(*corev1.Node)
	if node.Labels == nil {
		node.Labels = map[string]string{}
	}
	node.Labels[corev1.LabelTopologyZone] = "zone-a"
	if _, err := c.Update(context.Background(), nodesR, node); err != nil {
		t.Fatalf("label node-1 with a zone: %v", err)
	}
	startManager(t, c, fastConfig("cm-1"))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events, err := c.Watch(ctx, endpointSlicesR, "default", client.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	created := map[string]int{}
	go func() {
		for ev := range events {
			if ev.Type == "ADDED" {
				mu.Lock()
				created[ev.Object.GetLabels()[discoveryv1.LabelServiceName]]++
				mu.Unlock()
			}
		}
	}()

	svc := mustCreate(t, c, servicesR, serviceOf("web")).(*corev1.Service)
	manual := serviceOf("manual")
	manual.Spec.Selector = nil
	mustCreate(t, c, servicesR, manual)
	//lint:ignore SA1019 users still write v1 Endpoints for selectorless Services
	subsets := []corev1.EndpointSubset{{Addresses: []corev1.EndpointAddress{{IP: "198.18.0.10"}}, Ports: []corev1.EndpointPort{{Name: "http", Port: 8080}}}}
	//lint:ignore SA1019 users still write v1 Endpoints for selectorless Services
	mustCreate(t, c, endpointsR, &corev1.Endpoints{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "manual"}, Subsets: subsets})
	mustCreate(t, c, deploymentsR, deploymentOf("web", 4, "web:v1"))
	waitRolledOut(t, c, "web", 4, 30*time.Second)

	testwait.For(t, 10*time.Second, 25*time.Millisecond, func() error {
		s := slicesOf(t, c, "web")
		if len(s) != 1 {
			return fmt.Errorf("%d slices of web; want 1", len(s))
		}
		ready := 0
		for _, e := range s[0].Endpoints {
			if e.Conditions.Ready != nil && *e.Conditions.Ready {
				ready++
			}
		}
		if ready != 4 {
			return fmt.Errorf("slice of web has %d ready endpoints of %d; want 4", ready, len(s[0].Endpoints))
		}
		return nil
	})
	s := slicesOf(t, c, "web")[0]
	if !strings.HasPrefix(s.Name, "web-") || s.Labels[discoveryv1.LabelManagedBy] != api.EndpointSliceController {
		t.Errorf("slice %s labels %v; want a name web-… managed by %s", s.Name, s.Labels, api.EndpointSliceController)
	}
	if len(s.OwnerReferences) != 1 || s.OwnerReferences[0].Kind != "Service" || s.OwnerReferences[0].UID != svc.UID || !*s.OwnerReferences[0].Controller {
		t.Errorf("slice owners %+v; want the Service web (uid %s) as controller", s.OwnerReferences, svc.UID)
	}
	if len(s.Ports) != 1 || *s.Ports[0].Name != "http" || *s.Ports[0].Port != 8080 {
		t.Errorf("slice ports %+v; want http on the pods' 8080", s.Ports)
	}
	pods := map[string]*corev1.Pod{}
	for _, p := range activePods(t, c, "web") {
		pods[p.Name] = p
	}
	for _, e := range s.Endpoints {
		p := pods[e.TargetRef.Name]
		if p == nil || e.TargetRef.Kind != "Pod" || e.Addresses[0] != p.Status.PodIP || *e.NodeName != p.Spec.NodeName {
			t.Errorf("endpoint %v on %v → %v; want a web pod's address and node", e.Addresses, *e.NodeName, e.TargetRef)
			continue
		}
		zone := ""
		if e.Zone != nil {
			zone = *e.Zone
		}
		if want := map[string]string{"node-1": "zone-a"}[p.Spec.NodeName]; zone != want {
			t.Errorf("endpoint on %s has zone %q; want %q", p.Spec.NodeName, zone, want)
		}
	}

	m := slicesOf(t, c, "manual")
	if len(m) != 1 || len(m[0].Endpoints) != 1 || m[0].Endpoints[0].Addresses[0] != "198.18.0.10" ||
		m[0].Labels[discoveryv1.LabelManagedBy] != api.EndpointSliceMirroringController {
		t.Errorf("slices of the selectorless Service %+v; want one mirroring its Endpoints' 198.18.0.10", m)
	}
	// The Endpoints are still written, for old clients.
	//lint:ignore SA1019 kept for old clients
	if o, err := c.Get(context.Background(), endpointsR, "default", "web"); err != nil || len(o.(*corev1.Endpoints).Subsets) != 1 {
		t.Errorf("Endpoints web: %v, %v; want them kept alongside the slices", o, err)
	}

	// (Terminating pods' conditions are TestConditionsMatchEndpoints':
	// simulated nodes remove a deleted pod at once.)

	if err := c.Delete(context.Background(), servicesR, "default", "web", client.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, 10*time.Second, 25*time.Millisecond, func() error {
		if s := slicesOf(t, c, "web"); len(s) != 0 {
			return fmt.Errorf("%d slices of the deleted Service web remain", len(s))
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	if created["web"] != 1 || created["manual"] != 1 {
		t.Errorf("slices created per Service %v; want one each, then updated in place", created)
	}
}

// TestEndpointSlicesSplit checks a Service of more pods than fit one slice
// gets several, every pod in exactly one, and fewer again as it shrinks.
func TestEndpointSlicesSplit(t *testing.T) {
	c := apiservertest.Start(t)
	nodetest.Start(t, c, "node-1", "node-2")
	startManager(t, c, fastConfig("cm-1"))
	mustCreate(t, c, servicesR, serviceOf("web"))
	mustCreate(t, c, deploymentsR, deploymentOf("web", 130, "web:v1"))
	waitRolledOut(t, c, "web", 130, 60*time.Second)
	sizes := func() []int {
		var out []int
		for _, s := range slicesOf(t, c, "web") {
			out = append(out, len(s.Endpoints))
		}
		sort.Ints(out)
		return out
	}
	testwait.For(t, 20*time.Second, 25*time.Millisecond, func() error {
		if got := fmt.Sprint(sizes()); got != "[30 100]" {
			return errors.New("slices of web hold " + got + " endpoints; want [30 100]")
		}
		return nil
	})
	seen := map[string]bool{}
	for _, s := range slicesOf(t, c, "web") {
		for _, e := range s.Endpoints {
			if seen[e.TargetRef.Name] {
				t.Errorf("pod %s is in two slices", e.TargetRef.Name)
			}
			seen[e.TargetRef.Name] = true
		}
	}
	updateDeployment(t, c, "web", func(d *appsv1.Deployment) { d.Spec.Replicas = ptr(int32(20)) })
	testwait.For(t, 30*time.Second, 25*time.Millisecond, func() error {
		if got := fmt.Sprint(sizes()); got != "[20]" {
			return errors.New("slices of web hold " + got + " endpoints; want [20]")
		}
		return nil
	})
	if _, err := c.Get(context.Background(), servicesR, "default", "web"); apierrors.IsNotFound(err) {
		t.Fatal("service web vanished")
	}
}
