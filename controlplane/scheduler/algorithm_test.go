package scheduler

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

type nodeOpt func(*corev1.Node)

func node(name, cpu, mem string, opts ...nodeOpt) *corev1.Node {
	n := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"kubernetes.io/hostname": name}},
		Status: corev1.NodeStatus{
			Allocatable: corev1.ResourceList{
				corev1.ResourceCPU:    resource.MustParse(cpu),
				corev1.ResourceMemory: resource.MustParse(mem),
				corev1.ResourcePods:   resource.MustParse("110"),
			},
			Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}},
		},
	}
	for _, o := range opts {
		o(n)
	}
	return n
}

func notReady(n *corev1.Node) { n.Status.Conditions[0].Status = corev1.ConditionUnknown }
func cordoned(n *corev1.Node) { n.Spec.Unschedulable = true }
func maxPods(k string) nodeOpt {
	return func(n *corev1.Node) { n.Status.Allocatable[corev1.ResourcePods] = resource.MustParse(k) }
}
func label(k, v string) nodeOpt { return func(n *corev1.Node) { n.Labels[k] = v } }

type podOpt func(*corev1.Pod)

func pod(name, cpu, mem string, opts ...podOpt) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app"}}},
	}
	req := corev1.ResourceList{}
	if cpu != "" {
		req[corev1.ResourceCPU] = resource.MustParse(cpu)
	}
	if mem != "" {
		req[corev1.ResourceMemory] = resource.MustParse(mem)
	}
	p.Spec.Containers[0].Resources.Requests = req
	for _, o := range opts {
		o(p)
	}
	return p
}

func on(node string) podOpt { return func(p *corev1.Pod) { p.Spec.NodeName = node } }
func owned(uid string) podOpt {
	return func(p *corev1.Pod) {
		yes := true
		p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "rs", UID: types.UID(uid), Controller: &yes}}
	}
}
func selecting(k, v string) podOpt {
	return func(p *corev1.Pod) { p.Spec.NodeSelector = map[string]string{k: v} }
}
func phase(ph corev1.PodPhase) podOpt { return func(p *corev1.Pod) { p.Status.Phase = ph } }

func TestExplain(t *testing.T) {
	tests := []struct {
		name     string
		nodes    []*corev1.Node
		pods     []*corev1.Pod
		pod      *corev1.Pod
		wantNode string
		wantErr  string
	}{
		{
			name: "the message Kubernetes gives",
			nodes: []*corev1.Node{
				node("a", "4", "1Gi", label("disk", "ssd")),
				node("b", "4", "1Gi", label("disk", "ssd")),
				node("c", "4", "8Gi"),
			},
			pod:     pod("p", "1", "2Gi", selecting("disk", "ssd")),
			wantErr: "0/3 nodes are available: 2 Insufficient memory, 1 node(s) didn't match node selector.",
		},
		{
			name:     "requests of pods already on a node count",
			nodes:    []*corev1.Node{node("a", "2", "4Gi"), node("b", "2", "4Gi")},
			pods:     []*corev1.Pod{pod("x", "1500m", "", on("a"))},
			pod:      pod("p", "1", ""),
			wantNode: "b",
		},
		{
			name:    "every shortage of a node is named",
			nodes:   []*corev1.Node{node("a", "1", "1Gi")},
			pods:    []*corev1.Pod{pod("x", "1", "1Gi", on("a"))},
			pod:     pod("p", "100m", "100Mi"),
			wantErr: "0/1 nodes are available: 1 Insufficient cpu, 1 Insufficient memory.",
		},
		{
			name:     "finished pods take nothing",
			nodes:    []*corev1.Node{node("a", "1", "1Gi")},
			pods:     []*corev1.Pod{pod("x", "1", "1Gi", on("a"), phase(corev1.PodSucceeded))},
			pod:      pod("p", "1", "1Gi"),
			wantNode: "a",
		},
		{
			name:    "not ready and cordoned nodes are skipped",
			nodes:   []*corev1.Node{node("a", "4", "4Gi", notReady), node("b", "4", "4Gi", cordoned)},
			pod:     pod("p", "", ""),
			wantErr: "0/2 nodes are available: 1 node(s) were not ready, 1 node(s) were unschedulable.",
		},
		{
			name:     "pod count",
			nodes:    []*corev1.Node{node("a", "4", "4Gi", maxPods("1")), node("b", "4", "4Gi", maxPods("2"))},
			pods:     []*corev1.Pod{pod("x", "", "", on("a")), pod("y", "", "", on("b"), owned("other"))},
			pod:      pod("p", "", ""),
			wantNode: "b",
		},
		{
			name:    "pod count full everywhere",
			nodes:   []*corev1.Node{node("a", "4", "4Gi", maxPods("1"))},
			pods:    []*corev1.Pod{pod("x", "", "", on("a"))},
			pod:     pod("p", "", ""),
			wantErr: "0/1 nodes are available: 1 Too many pods.",
		},
		{
			name:     "least allocated wins",
			nodes:    []*corev1.Node{node("a", "4", "4Gi"), node("b", "4", "4Gi"), node("c", "4", "4Gi")},
			pods:     []*corev1.Pod{pod("x", "2", "1Gi", on("a")), pod("y", "1", "1Gi", on("c"))},
			pod:      pod("p", "500m", "512Mi"),
			wantNode: "b",
		},
		{
			name:  "replicas of one owner spread even onto a busier node",
			nodes: []*corev1.Node{node("a", "4", "8Gi"), node("b", "4", "8Gi")},
			pods: []*corev1.Pod{
				pod("r1", "100m", "", on("a"), owned("rs-1")),
				pod("busy", "1", "1Gi", on("b")),
			},
			pod:      pod("r2", "100m", "", owned("rs-1")),
			wantNode: "b",
		},
		{
			name:    "no nodes",
			pod:     pod("p", "", ""),
			wantErr: "0/0 nodes are available: no nodes available to schedule pods.",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Explain(tt.nodes, tt.pods, tt.pod)
			gotErr := ""
			if err != nil {
				gotErr = err.Error()
			}
			if got != tt.wantNode || gotErr != tt.wantErr {
				t.Fatalf("Explain = %q, %q\nwant      %q, %q", got, gotErr, tt.wantNode, tt.wantErr)
			}
		})
	}
}

// TestSpreadAcrossEqualNodes places the replicas of one owner one after
// the other, as the scheduler does, and finds one per node.
func TestSpreadAcrossEqualNodes(t *testing.T) {
	c := newCache()
	for _, n := range []string{"a", "b", "c"} {
		c.setNode(node(n, "4", "4Gi"))
	}
	rng := rand.New(rand.NewPCG(1, 2))
	perNode := map[string]int{}
	for i := range 6 {
		p := pod(fmt.Sprintf("r%d", i), "", "", owned("rs-1"))
		n, req, err := schedule(c.sorted, p, rng)
		if err != nil {
			t.Fatalf("schedule %s: %v", p.Name, err)
		}
		c.assumeLocked(p.Name, placement{node: n.name, req: req, owner: ownerOf(p)})
		perNode[n.name]++
	}
	for _, n := range []string{"a", "b", "c"} {
		if perNode[n] != 2 {
			t.Fatalf("6 replicas on 3 equal nodes went %v, want 2 each", perNode)
		}
	}
}

// TestCacheAssumedSurvivesStaleEvent: a watch event from before the
// binding must not free what the binding took.
func TestCacheAssumedSurvivesStaleEvent(t *testing.T) {
	c := newCache()
	c.setNode(node("a", "1", "1Gi"))
	p := pod("p", "1", "1Gi")
	c.assumeLocked("default/p", placement{node: "a", req: podRequest(p)})
	c.setPod("default/p", p) // stale: still pending
	if got := c.nodes["a"].requested.milliCPU; got != 1000 {
		t.Fatalf("after a stale pending event node a has %dm cpu requested, want 1000m (assumed)", got)
	}
	bound := p.DeepCopy()
	bound.Spec.NodeName = "a"
	c.setPod("default/p", bound)
	c.forget("default/p") // confirmed bindings are not forgotten
	if got := c.nodes["a"].requested.milliCPU; got != 1000 {
		t.Fatalf("after the bound event and forget, node a has %dm cpu requested, want 1000m", got)
	}
	c.removePod("default/p")
	if got := c.nodes["a"].requested.milliCPU; got != 0 {
		t.Fatalf("after delete node a has %dm cpu requested, want 0", got)
	}
}

// BenchmarkSchedule measures the scheduling core alone: 10,000 pods placed
// one after the other on 1,000 nodes, each decision seeing the previous.
func BenchmarkSchedule(b *testing.B) {
	const nodes, pods = 1000, 10000
	var total time.Duration
	for b.Loop() {
		c := newCache()
		for i := range nodes {
			c.setNode(node(fmt.Sprintf("node-%04d", i), "32", "128Gi"))
		}
		ps := make([]*corev1.Pod, pods)
		for i := range ps {
			ps[i] = pod(fmt.Sprintf("p-%05d", i), "100m", "128Mi", owned(fmt.Sprintf("rs-%d", i%100)))
		}
		rng := rand.New(rand.NewPCG(1, 2))
		start := time.Now()
		for _, p := range ps {
			n, req, err := schedule(c.sorted, p, rng)
			if err != nil {
				b.Fatalf("schedule %s: %v", p.Name, err)
			}
			c.assumeLocked(p.Name, placement{node: n.name, req: req, owner: ownerOf(p)})
		}
		total += time.Since(start)
	}
	b.ReportMetric(float64(pods*b.N)/total.Seconds(), "pods/s")
}
