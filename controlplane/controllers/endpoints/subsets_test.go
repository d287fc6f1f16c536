package endpoints

import (
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
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
func succeeded(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded }

func service(ports ...corev1.ServicePort) *corev1.Service {
	return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"}, Ports: ports}}
}

// summary renders subsets compactly: "ports | ready | notReady" per subset.
//
//lint:ignore SA1019 the v1 Endpoints the controller writes, as kube-controller-manager does
func summary(subsets []corev1.EndpointSubset) []string {
	var out []string
	for _, s := range subsets {
		line := ""
		for _, p := range s.Ports {
			line += fmt.Sprintf("%s:%d ", p.Name, p.Port)
		}
		line += "|"
		for _, a := range s.Addresses {
			line += " " + a.IP + "@" + *a.NodeName
		}
		line += " |"
		for _, a := range s.NotReadyAddresses {
			line += " " + a.IP
		}
		out = append(out, line)
	}
	return out
}

func TestSubsets(t *testing.T) {
	named := corev1.ServicePort{Name: "http", Port: 80, TargetPort: intstr.FromString("http"), Protocol: corev1.ProtocolTCP}
	numbered := corev1.ServicePort{Name: "metrics", Port: 9090, TargetPort: intstr.FromInt32(9091), Protocol: corev1.ProtocolTCP}
	nodeReady := func(n string) bool { return n != "dead" }
	tests := []struct {
		name string
		svc  *corev1.Service
		pods []*corev1.Pod
		want []string
	}{
		{
			name: "ready and not ready, sorted",
			svc:  service(named),
			pods: []*corev1.Pod{mkPod("b", "10.244.1.3", "n1"), mkPod("a", "10.244.1.2", "n1"), mkPod("c", "10.244.2.2", "n2", notReady)},
			want: []string{"http:8080 | 10.244.1.2@n1 10.244.1.3@n1 | 10.244.2.2"},
		},
		{
			name: "terminating pods are not ready; finished and IP-less pods are left out",
			svc:  service(named),
			pods: []*corev1.Pod{mkPod("a", "10.244.1.2", "n1", terminating), mkPod("b", "10.244.1.3", "n1", succeeded), mkPod("c", "", "n1")},
			want: []string{"http:8080 | | 10.244.1.2"},
		},
		{
			name: "a pod on a node that is not Ready is not ready",
			svc:  service(named),
			pods: []*corev1.Pod{mkPod("a", "10.244.1.2", "dead"), mkPod("b", "10.244.2.2", "n2")},
			want: []string{"http:8080 | 10.244.2.2@n2 | 10.244.1.2"},
		},
		{
			name: "a named port resolving differently per pod splits subsets",
			svc:  service(named, numbered),
			pods: []*corev1.Pod{mkPod("a", "10.244.1.2", "n1"), mkPod("b", "10.244.2.2", "n2", httpOn(8443))},
			want: []string{
				"http:8080 metrics:9091 | 10.244.1.2@n1 |",
				"http:8443 metrics:9091 | 10.244.2.2@n2 |",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := summary(Subsets(tt.svc, tt.pods, nodeReady))
			if len(got) != len(tt.want) {
				y, _ := yaml.Marshal(got)
				t.Fatalf("got subsets\n%s\nwant %q", y, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Fatalf("subset %d = %q, want %q (all: %q)", i, got[i], tt.want[i], got)
				}
			}
		})
	}
}

func TestSubsetsCarryTargetRef(t *testing.T) {
	svc := service(corev1.ServicePort{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP})
	got := Subsets(svc, []*corev1.Pod{mkPod("a", "10.244.1.2", "n1")}, func(string) bool { return true })
	ref := got[0].Addresses[0].TargetRef
	if ref == nil || ref.Kind != "Pod" || ref.Name != "a" || ref.Namespace != "default" {
		t.Fatalf("targetRef = %+v, want Pod default/a", ref)
	}
}
