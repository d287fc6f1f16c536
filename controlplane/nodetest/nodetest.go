// Package nodetest plays a cluster's nodes for tests of the control plane
// that need no containerd: it registers Node objects, renews their leases,
// and does to the pods bound to a live node what an agent would (runs them
// with an IP, makes them ready a little later, removes them once they are
// terminating). A node made dead stops all of that, as a crashed one does.
//
// Like the other ...test packages it imports testing, so only tests may
// import it; the node binary's dependency test (cmd/skep) checks that.
package nodetest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skep-io/skep/controlplane/api"
	"github.com/skep-io/skep/controlplane/api/conditions"
	"github.com/skep-io/skep/controlplane/client"
	"github.com/skep-io/skep/controlplane/controllers/nodelifecycle"
)

var (
	podsR   = api.MustLookup("pods")
	nodesR  = api.MustLookup("nodes")
	leasesR = api.MustLookup("leases")
)

// Cluster is a set of simulated nodes on one API.
type Cluster struct {
	t testing.TB
	c client.Interface

	mu         sync.Mutex
	readyDelay time.Duration
	alive      map[string]bool
	nodeIdx    map[string]int
	nextIP     map[string]int
	running    map[string]time.Time // pod uid -> when it started running
}

// Start registers the nodes and plays them until the test ends.
func Start(t testing.TB, c client.Interface, nodes ...string) *Cluster {
	t.Helper()
	k := &Cluster{t: t, c: c, readyDelay: 100 * time.Millisecond, alive: map[string]bool{},
		nodeIdx: map[string]int{}, nextIP: map[string]int{}, running: map[string]time.Time{}}
	for _, n := range nodes {
		k.AddNode(n)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); k.run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return k
}

// AddNode registers a Ready node with 4 CPUs, 8Gi and 110 pods, and its lease.
func (k *Cluster) AddNode(name string) {
	k.t.Helper()
	now := metav1.Now()
	capacity := corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("4"), corev1.ResourceMemory: resource.MustParse("8Gi"), corev1.ResourcePods: resource.MustParse("110")}
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"kubernetes.io/hostname": name}},
		Status: corev1.NodeStatus{
			Capacity: capacity, Allocatable: capacity,
			Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady", LastHeartbeatTime: now, LastTransitionTime: now}},
		},
	}
	if _, err := k.c.Create(context.Background(), nodesR, node); err != nil {
		k.t.Fatalf("register node %s: %v", name, err)
	}
	holder, secs := name, int32(40)
	renew := metav1.NewMicroTime(time.Now())
	lease := &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Namespace: nodelifecycle.LeaseNamespace, Name: name},
		Spec:       coordinationv1.LeaseSpec{HolderIdentity: &holder, LeaseDurationSeconds: &secs, RenewTime: &renew},
	}
	if _, err := k.c.Create(context.Background(), leasesR, lease); err != nil {
		k.t.Fatalf("create the lease of node %s: %v", name, err)
	}
	k.mu.Lock()
	k.alive[name] = true
	k.nodeIdx[name] = len(k.nodeIdx) + 1
	k.mu.Unlock()
}

// SetAlive stops or resumes a node's heartbeat and its work on pods.
func (k *Cluster) SetAlive(name string, alive bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.alive[name] = alive
}

// SetReadyDelay sets how long a pod runs before it becomes ready [100ms].
func (k *Cluster) SetReadyDelay(d time.Duration) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.readyDelay = d
}

func (k *Cluster) isAlive(name string) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.alive[name]
}

func (k *Cluster) run(ctx context.Context) {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	lastRenew := time.Time{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if time.Since(lastRenew) > 300*time.Millisecond {
			lastRenew = time.Now()
			k.renewLeases(ctx)
		}
		k.syncPods(ctx)
	}
}

func (k *Cluster) renewLeases(ctx context.Context) {
	k.mu.Lock()
	var nodes []string
	for n, ok := range k.alive {
		if ok {
			nodes = append(nodes, n)
		}
	}
	k.mu.Unlock()
	for _, n := range nodes {
		o, err := k.c.Get(ctx, leasesR, nodelifecycle.LeaseNamespace, n)
		if err != nil {
			continue
		}
		l := o.(*coordinationv1.Lease)
		renew := metav1.NewMicroTime(time.Now())
		l.Spec.RenewTime = &renew
		_, _ = k.c.Update(ctx, leasesR, l)
	}
}

// syncPods does one round of an agent's work on every live node's pods.
// Errors are ignored: the next round, 50ms later, tries again.
func (k *Cluster) syncPods(ctx context.Context) {
	objs, _, err := k.c.List(ctx, podsR, "", client.ListOptions{})
	if err != nil {
		return
	}
	for _, o := range objs {
		p := o.(*corev1.Pod)
		if p.Spec.NodeName == "" || !k.isAlive(p.Spec.NodeName) {
			continue
		}
		switch {
		case p.DeletionTimestamp != nil:
			zero := int64(0)
			_ = k.c.Delete(ctx, podsR, p.Namespace, p.Name, client.DeleteOptions{GracePeriodSeconds: &zero})
		case p.Status.Phase != corev1.PodRunning:
			k.mu.Lock()
			k.nextIP[p.Spec.NodeName]++
			ip := fmt.Sprintf("10.244.%d.%d", k.nodeIdx[p.Spec.NodeName], k.nextIP[p.Spec.NodeName])
			k.running[string(p.UID)] = time.Now()
			k.mu.Unlock()
			p.Status.Phase, p.Status.PodIP = corev1.PodRunning, ip
			p.Status.PodIPs = []corev1.PodIP{{IP: ip}}
			setContainerStatuses(p, false)
			setPodCondition(p, corev1.PodReady, corev1.ConditionFalse)
			_, _ = k.c.UpdateStatus(ctx, podsR, p)
		case !conditions.PodReady(p):
			k.mu.Lock()
			since, ok := k.running[string(p.UID)]
			delay := k.readyDelay
			k.mu.Unlock()
			if ok && time.Since(since) < delay {
				continue
			}
			setContainerStatuses(p, true)
			setPodCondition(p, corev1.PodReady, corev1.ConditionTrue)
			setPodCondition(p, corev1.ContainersReady, corev1.ConditionTrue)
			_, _ = k.c.UpdateStatus(ctx, podsR, p)
		}
	}
}

func setPodCondition(p *corev1.Pod, typ corev1.PodConditionType, st corev1.ConditionStatus) {
	for i := range p.Status.Conditions {
		if p.Status.Conditions[i].Type == typ {
			if p.Status.Conditions[i].Status != st {
				p.Status.Conditions[i].Status, p.Status.Conditions[i].LastTransitionTime = st, metav1.Now()
			}
			return
		}
	}
	p.Status.Conditions = append(p.Status.Conditions, corev1.PodCondition{Type: typ, Status: st, LastTransitionTime: metav1.Now()})
}

// setContainerStatuses reports every container running, and ready or not,
// as a kubelet does: clients count them (kubectl's READY column is the
// ready containers over all of them).
func setContainerStatuses(p *corev1.Pod, ready bool) {
	started := metav1.Now()
	if len(p.Status.ContainerStatuses) > 0 && p.Status.ContainerStatuses[0].State.Running != nil {
		started = p.Status.ContainerStatuses[0].State.Running.StartedAt
	}
	yes := true
	p.Status.ContainerStatuses = nil
	for _, c := range p.Spec.Containers {
		p.Status.ContainerStatuses = append(p.Status.ContainerStatuses, corev1.ContainerStatus{
			Name: c.Name, Image: c.Image, Ready: ready, Started: &yes,
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: started}},
		})
	}
}
