package endpointslice

import (
	"fmt"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/skep-io/skep/controlplane/controllers/endpoints"
)

type podOpt func(*corev1.Pod)

func mkPod(name, ip, node string, opts ...podOpt) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, UID: types.UID("uid-" + name)},
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "app",
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080, Protocol: corev1.ProtocolTCP}}}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip,
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}},
	}
	for _, o := range opts {
		o(p)
	}
	return p
}

func notReady(p *corev1.Pod) { p.Status.Conditions[0].Status = corev1.ConditionFalse }
func terminating(p *corev1.Pod) {
	now := metav1.Now()
	p.DeletionTimestamp = &now
}
func httpOn(port int32) podOpt {
	return func(p *corev1.Pod) { p.Spec.Containers[0].Ports[0].ContainerPort = port }
}

func service(publishNotReady bool) *corev1.Service {
	return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"}, PublishNotReadyAddresses: publishNotReady,
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http")}}}}
}

// nodes: node-down is not Ready; node-a is in zone z1.
func nodes(name string) (bool, string) {
	switch name {
	case "node-down":
		return false, ""
	case "node-a":
		return true, "z1"
	}
	return true, ""
}

// endpointConditions renders an endpoint as "ip ready/serving/terminating".
func endpointConditions(e discoveryv1.Endpoint) string {
	c := e.Conditions
	return fmt.Sprintf("%s %t/%t/%t", e.Addresses[0], *c.Ready, *c.Serving, *c.Terminating)
}

// TestConditionsMatchEndpoints checks each pod's conditions, and that the
// ready ones are exactly the Endpoints controller's addresses and the
// others its notReadyAddresses: the agents, reading slices, see what
// they saw reading Endpoints.
func TestConditionsMatchEndpoints(t *testing.T) {
	pods := []*corev1.Pod{
		mkPod("ready", "10.0.0.1", "node-a"),
		mkPod("starting", "10.0.0.2", "node-a", notReady),
		mkPod("draining", "10.0.0.3", "node-a", terminating),
		mkPod("stopping", "10.0.0.4", "node-a", terminating, notReady),
		mkPod("lost", "10.0.0.5", "node-down"),
		mkPod("unbound", "10.0.0.6", ""),
	}
	for _, tc := range []struct {
		publishNotReady bool
		want            []string
	}{
		{false, []string{"10.0.0.1 true/true/false", "10.0.0.2 false/false/false", "10.0.0.3 false/true/true",
			"10.0.0.4 false/false/true", "10.0.0.5 false/false/false", "10.0.0.6 true/true/false"}},
		{true, []string{"10.0.0.1 true/true/false", "10.0.0.2 true/false/false", "10.0.0.3 true/true/true",
			"10.0.0.4 true/false/true", "10.0.0.5 true/false/false", "10.0.0.6 true/true/false"}},
	} {
		t.Run(fmt.Sprintf("publishNotReadyAddresses=%t", tc.publishNotReady), func(t *testing.T) {
			svc := service(tc.publishNotReady)
			got := FromPods(svc, pods, nodes, 0)
			if len(got) != 1 {
				t.Fatalf("%d slices; want 1", len(got))
			}
			var conds, ready, notReadyIPs []string
			for _, e := range got[0].Endpoints {
				conds = append(conds, endpointConditions(e))
				if *e.Conditions.Ready {
					ready = append(ready, e.Addresses[0])
				} else {
					notReadyIPs = append(notReadyIPs, e.Addresses[0])
				}
			}
			if !slices.Equal(conds, tc.want) {
				t.Errorf("conditions\n got %q\nwant %q", conds, tc.want)
			}
			subsets := endpoints.Subsets(svc, pods, func(n string) bool { r, _ := nodes(n); return r })
			var epReady, epNotReady []string
			for _, ss := range subsets {
				for _, a := range ss.Addresses {
					epReady = append(epReady, a.IP)
				}
				for _, a := range ss.NotReadyAddresses {
					epNotReady = append(epNotReady, a.IP)
				}
			}
			if !slices.Equal(ready, epReady) || !slices.Equal(notReadyIPs, epNotReady) {
				t.Errorf("slices ready %v not ready %v; Endpoints addresses %v notReadyAddresses %v", ready, notReadyIPs, epReady, epNotReady)
			}
		})
	}
}

// TestFromPods checks what each endpoint carries, the ports resolved per
// pod, and the split into slices of at most max endpoints.
func TestFromPods(t *testing.T) {
	var pods []*corev1.Pod
	for i := range 250 {
		pods = append(pods, mkPod(fmt.Sprintf("p%03d", i), fmt.Sprintf("10.0.%d.%d", i/200, i%200+1), "node-a"))
	}
	pods = append(pods, mkPod("other-port", "10.1.0.1", "node-b", httpOn(9090)),
		mkPod("no-ip", "", "node-a"), mkPod("v6", "fd00::1", "node-a"))
	noPort := mkPod("no-named-port", "10.1.0.2", "node-a")
	noPort.Spec.Containers[0].Ports = nil
	pods = append(pods, noPort)

	got := FromPods(service(false), pods, nodes, 100)
	var sizes []int
	var ports []int32
	for _, s := range got {
		sizes = append(sizes, len(s.Endpoints))
		ports = append(ports, *s.Ports[0].Port)
		if s.AddressType != discoveryv1.AddressTypeIPv4 || len(s.Ports) != 1 || *s.Ports[0].Name != "http" || *s.Ports[0].Protocol != corev1.ProtocolTCP {
			t.Errorf("slice %+v; want IPv4 with one port http/TCP", s)
		}
	}
	if !slices.Equal(sizes, []int{100, 100, 50, 1}) || !slices.Equal(ports, []int32{8080, 8080, 8080, 9090}) {
		t.Fatalf("slices of %v endpoints on ports %v; want [100 100 50 1] on [8080 8080 8080 9090]", sizes, ports)
	}
	e := got[0].Endpoints[0]
	if e.NodeName == nil || *e.NodeName != "node-a" || e.Zone == nil || *e.Zone != "z1" ||
		e.TargetRef == nil || e.TargetRef.Kind != "Pod" || e.TargetRef.Name != "p000" || e.TargetRef.UID != "uid-p000" {
		t.Errorf("first endpoint %+v; want node-a in zone z1, targetRef Pod p000", e)
	}
	if e := got[3].Endpoints[0]; e.Zone != nil {
		t.Errorf("endpoint on a node without a zone label has zone %q", *e.Zone)
	}
	// The same pods in another order give the same slices: no write.
	slices.Reverse(pods)
	if again := FromPods(service(false), pods, nodes, 100); !apiequality.Semantic.DeepEqual(again, got) {
		t.Errorf("slices depend on the order of the pods")
	}
}

// TestFromEndpoints checks a user's Endpoints mirrored: addresses ready
// and serving, notReadyAddresses neither, IPv6 left out.
func TestFromEndpoints(t *testing.T) {
	//lint:ignore SA1019 mirrored for old clients
	ep := &corev1.Endpoints{Subsets: []corev1.EndpointSubset{{
		Addresses:         []corev1.EndpointAddress{{IP: "198.18.0.10", Hostname: "db-0"}, {IP: "fd00::1"}},
		NotReadyAddresses: []corev1.EndpointAddress{{IP: "198.18.0.11"}},
		Ports:             []corev1.EndpointPort{{Name: "pg", Port: 5432}},
	}}}
	got := FromEndpoints(ep, 0)
	if len(got) != 1 || len(got[0].Ports) != 1 || *got[0].Ports[0].Port != 5432 || *got[0].Ports[0].Protocol != corev1.ProtocolTCP {
		t.Fatalf("mirrored %+v; want one slice on pg 5432/TCP", got)
	}
	var conds []string
	for _, e := range got[0].Endpoints {
		conds = append(conds, endpointConditions(e))
	}
	if want := []string{"198.18.0.10 true/true/false", "198.18.0.11 false/false/false"}; !slices.Equal(conds, want) {
		t.Errorf("mirrored endpoints %q; want %q", conds, want)
	}
	if h := got[0].Endpoints[0].Hostname; h == nil || *h != "db-0" {
		t.Errorf("hostname %v; want db-0", h)
	}
}
