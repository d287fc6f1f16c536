package node

import (
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func node(name string, ready corev1.ConditionStatus) *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name},
		Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: ready}}}}
}

func lbService(i int) *corev1.Service {
	return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprint("lb", i)}, Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer},
		Status: corev1.ServiceStatus{LoadBalancer: corev1.LoadBalancerStatus{Ingress: []corev1.LoadBalancerIngress{{IP: fmt.Sprintf("198.18.7.%d", 200+i)}}}}}
}

// TestEveryAddressHasOneOwner: the nodes, each computing alone, agree on
// exactly one announcer per address, and a node that is not Ready
// announces nothing: its addresses move.
func TestEveryAddressHasOneOwner(t *testing.T) {
	var svcs []*corev1.Service
	for i := range 8 {
		svcs = append(svcs, lbService(i))
	}
	svcs = append(svcs, &corev1.Service{Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP}})
	for _, tc := range []struct {
		name  string
		nodes []*corev1.Node
	}{
		{"all ready", []*corev1.Node{node("a", "True"), node("b", "True"), node("c", "True")}},
		{"b lost", []*corev1.Node{node("a", "True"), node("b", "Unknown"), node("c", "True")}},
	} {
		owners := map[string]string{}
		for _, n := range tc.nodes {
			for _, ip := range ownedAddresses(n.Name, svcs, tc.nodes) {
				if prev, ok := owners[ip.String()]; ok {
					t.Errorf("%s: %s announced by both %s and %s", tc.name, ip, prev, n.Name)
				}
				owners[ip.String()] = n.Name
				if n.Status.Conditions[0].Status != "True" {
					t.Errorf("%s: node %s is not Ready but announces %s", tc.name, n.Name, ip)
				}
			}
		}
		if len(owners) != 8 {
			t.Errorf("%s: %d of 8 LoadBalancer addresses have an announcer: %v", tc.name, len(owners), owners)
		}
	}
}
