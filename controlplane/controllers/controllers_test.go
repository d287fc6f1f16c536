package controllers

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/skep-io/skep/controlplane/api/conditions"
	"github.com/skep-io/skep/controlplane/apiserver/apiservertest"
	"github.com/skep-io/skep/controlplane/client"
	"github.com/skep-io/skep/controlplane/controllers/deployment"
	"github.com/skep-io/skep/controlplane/controllers/gc"
	"github.com/skep-io/skep/controlplane/controllers/podstate"
	"github.com/skep-io/skep/controlplane/leader"
	"github.com/skep-io/skep/controlplane/nodetest"
	"github.com/skep-io/skep/internal/testwait"
)

var deploymentRolloutStatus = deployment.RolloutStatus

func TestDeploymentScale(t *testing.T) {
	c := apiservertest.Start(t)
	nodetest.Start(t, c, "node-1", "node-2", "node-3")
	startManager(t, c, fastConfig("cm-1"))

	mustCreate(t, c, deploymentsR, deploymentOf("web", 3, "web:v1"))
	waitRolledOut(t, c, "web", 3, 20*time.Second)

	pods := activePods(t, c, "web")
	nodes := map[string]string{}
	for _, p := range pods {
		if other, ok := nodes[p.Spec.NodeName]; ok {
			t.Errorf("pods %s and %s are both on %s; 3 replicas on 3 equal nodes should spread", other, p.Name, p.Spec.NodeName)
		}
		nodes[p.Spec.NodeName] = p.Name
		ref := metav1.GetControllerOf(p)
		hash := p.Labels[deployment.PodTemplateHashLabel]
		if ref == nil || ref.Kind != "ReplicaSet" || ref.Name != "web-"+hash || hash == "" {
			t.Errorf("pod %s: controller %+v, pod-template-hash %q; want ReplicaSet web-<hash>", p.Name, ref, hash)
		}
		if !strings.HasPrefix(p.Name, "web-"+hash+"-") || len(p.Name) != len("web-"+hash+"-")+5 {
			t.Errorf("pod name %s, want web-%s-xxxxx", p.Name, hash)
		}
	}
	d := getDeployment(t, c, "web")
	if d.Annotations[deployment.RevisionAnnotation] != "1" {
		t.Errorf("revision annotation = %q, want 1", d.Annotations[deployment.RevisionAnnotation])
	}
	if !hasDeploymentCondition(d, appsv1.DeploymentAvailable, "True", deployment.ReasonMinimumAvailable) ||
		!hasDeploymentCondition(d, appsv1.DeploymentProgressing, "True", deployment.ReasonNewRSAvailable) {
		t.Errorf("conditions %+v; want Available=True and Progressing=True/NewReplicaSetAvailable", d.Status.Conditions)
	}

	updateDeployment(t, c, "web", func(d *appsv1.Deployment) { d.Spec.Replicas = ptr(int32(5)) })
	waitRolledOut(t, c, "web", 5, 20*time.Second)
	updateDeployment(t, c, "web", func(d *appsv1.Deployment) { d.Spec.Replicas = ptr(int32(2)) })
	waitRolledOut(t, c, "web", 2, 20*time.Second)

	// Every node got a pod CIDR of its own.
	objs, _, err := c.List(context.Background(), nodesR, "", client.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cidrs := map[string]string{}
	for _, o := range objs {
		n := o.(*corev1.Node)
		if !strings.HasPrefix(n.Spec.PodCIDR, "10.244.") || !strings.HasSuffix(n.Spec.PodCIDR, "/24") || len(n.Spec.PodCIDRs) != 1 {
			t.Errorf("node %s podCIDR %q podCIDRs %v; want a /24 of 10.244.0.0/16", n.Name, n.Spec.PodCIDR, n.Spec.PodCIDRs)
		}
		if other, ok := cidrs[n.Spec.PodCIDR]; ok {
			t.Errorf("nodes %s and %s share pod CIDR %s", other, n.Name, n.Spec.PodCIDR)
		}
		cidrs[n.Spec.PodCIDR] = n.Name
	}
}

func hasDeploymentCondition(d *appsv1.Deployment, typ appsv1.DeploymentConditionType, status, reason string) bool {
	for _, c := range d.Status.Conditions {
		if c.Type == typ {
			return string(c.Status) == status && c.Reason == reason
		}
	}
	return false
}

// readyWatcher counts, after every pod event, the app's pods that are
// ready and not terminating, and remembers the lowest count.
type readyWatcher struct {
	mu     sync.Mutex
	lowest int
	events int
}

func watchReady(t *testing.T, c client.Interface, app string) *readyWatcher {
	w := &readyWatcher{lowest: 1 << 30}
	inf := client.NewInformer(c, podsR, client.InformerOptions{Namespace: "default", LabelSelector: "app=" + app})
	count := func() {
		n := 0
		for _, o := range inf.List() {
			if p := o.(*corev1.Pod); podstate.Active(p) && conditions.PodReady(p) {
				n++
			}
		}
		w.mu.Lock()
		w.events++
		if inf.HasSynced() {
			w.lowest = min(w.lowest, n)
		}
		w.mu.Unlock()
	}
	inf.AddHandlers(client.Handlers{OnAdd: func(object) { count() }, OnUpdate: func(_, _ object) { count() }, OnDelete: func(object) { count() }})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); inf.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	if !client.WaitForSync(t.Context(), inf) {
		t.Fatal("pod watcher did not sync")
	}
	count()
	return w
}

func (w *readyWatcher) min() (int, int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.lowest, w.events
}

func TestRollingUpdateKeepsAvailability(t *testing.T) {
	c := apiservertest.Start(t)
	k := nodetest.Start(t, c, "node-1", "node-2", "node-3")
	k.SetReadyDelay(300 * time.Millisecond) // pods take a while to become ready
	startManager(t, c, fastConfig("cm-1"))

	d := deploymentOf("web", 4, "web:v1")
	d.Spec.Strategy = appsv1.DeploymentStrategy{Type: appsv1.RollingUpdateDeploymentStrategyType, RollingUpdate: &appsv1.RollingUpdateDeployment{
		MaxSurge: ptr(intstr.FromInt32(1)), MaxUnavailable: ptr(intstr.FromInt32(1))}}
	mustCreate(t, c, deploymentsR, d)
	waitRolledOut(t, c, "web", 4, 20*time.Second)

	w := watchReady(t, c, "web")
	updateDeployment(t, c, "web", func(d *appsv1.Deployment) { d.Spec.Template.Spec.Containers[0].Image = "web:v2" })
	waitRolledOut(t, c, "web", 4, 30*time.Second)
	for _, p := range activePods(t, c, "web") {
		if img := p.Spec.Containers[0].Image; img != "web:v2" {
			t.Errorf("after the rollout pod %s runs %s, want web:v2", p.Name, img)
		}
	}
	lowest, events := w.min()
	t.Logf("rolling update: %d pod events, never fewer than %d ready pods", events, lowest)
	if lowest < 3 {
		t.Fatalf("during the rolling update only %d pods were ready at one point; want at least replicas - maxUnavailable = 3", lowest)
	}
	if rev := getDeployment(t, c, "web").Annotations[deployment.RevisionAnnotation]; rev != "2" {
		t.Fatalf("after one update the revision is %q, want 2", rev)
	}

	// skep rollout undo: back to web:v1 as revision 3, availability kept.
	if _, err := deployment.Rollback(context.Background(), c, "default", "web", 0); err != nil {
		t.Fatalf("Rollback: %v", err)
	}
	waitRolledOut(t, c, "web", 4, 30*time.Second)
	testwait.For(t, 10*time.Second, 25*time.Millisecond, func() error {
		d := getDeployment(t, c, "web")
		if img := d.Spec.Template.Spec.Containers[0].Image; img != "web:v1" || d.Annotations[deployment.RevisionAnnotation] != "3" {
			return fmt.Errorf("after undo the deployment runs %s at revision %q, want web:v1 at 3", img, d.Annotations[deployment.RevisionAnnotation])
		}
		return nil
	})
	waitRolledOut(t, c, "web", 4, 30*time.Second)
	for _, p := range activePods(t, c, "web") {
		if img := p.Spec.Containers[0].Image; img != "web:v1" {
			t.Errorf("after undo pod %s runs %s, want web:v1", p.Name, img)
		}
	}
	if lowest, _ := w.min(); lowest < 3 {
		t.Fatalf("during the undo only %d pods were ready at one point; want at least 3", lowest)
	}
	history, err := deployment.History(context.Background(), c, getDeployment(t, c, "web"))
	if err != nil || len(history) != 2 {
		t.Fatalf("History = %d replicasets, %v; want 2 (v1 reused as revision 3, v2)", len(history), err)
	}
}

func TestRecreate(t *testing.T) {
	c := apiservertest.Start(t)
	nodetest.Start(t, c, "node-1", "node-2")
	startManager(t, c, fastConfig("cm-1"))
	d := deploymentOf("db", 2, "db:v1")
	d.Spec.Strategy = appsv1.DeploymentStrategy{Type: appsv1.RecreateDeploymentStrategyType}
	mustCreate(t, c, deploymentsR, d)
	waitRolledOut(t, c, "db", 2, 20*time.Second)

	// Watch that no v2 pod exists while a v1 pod does.
	var mu sync.Mutex
	var overlap string
	inf := client.NewInformer(c, podsR, client.InformerOptions{Namespace: "default", LabelSelector: "app=db"})
	check := func() {
		images := map[string]bool{}
		for _, o := range inf.List() {
			images[o.(*corev1.Pod).Spec.Containers[0].Image] = true
		}
		if images["db:v1"] && images["db:v2"] {
			mu.Lock()
			overlap = fmt.Sprint(len(inf.List()), " pods of both versions")
			mu.Unlock()
		}
	}
	inf.AddHandlers(client.Handlers{OnAdd: func(object) { check() }, OnUpdate: func(_, _ object) { check() }})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); inf.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	updateDeployment(t, c, "db", func(d *appsv1.Deployment) { d.Spec.Template.Spec.Containers[0].Image = "db:v2" })
	testwait.For(t, 30*time.Second, 25*time.Millisecond, func() error {
		pods := activePods(t, c, "db")
		for _, p := range pods {
			if p.Spec.Containers[0].Image != "db:v2" || !conditions.PodReady(p) {
				return errors.New("pod " + p.Name + " is not a ready db:v2 pod yet")
			}
		}
		if len(pods) != 2 {
			return fmt.Errorf("%d pods, want 2", len(pods))
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	if overlap != "" {
		t.Fatalf("Recreate ran old and new pods together: %s", overlap)
	}
}

func TestNodeFailure(t *testing.T) {
	c := apiservertest.Start(t)
	k := nodetest.Start(t, c, "node-1", "node-2", "node-3")
	startManager(t, c, fastConfig("cm-1"))
	mustCreate(t, c, servicesR, serviceOf("web"))
	mustCreate(t, c, deploymentsR, deploymentOf("web", 3, "web:v1"))
	waitRolledOut(t, c, "web", 3, 20*time.Second)
	readyIPs := func() map[string]string {
		o, err := c.Get(context.Background(), endpointsR, "default", "web")
		if err != nil {
			return nil
		}
		out := map[string]string{}
		//lint:ignore SA1019 the v1 Endpoints the controller writes, as kube-controller-manager does
		for _, s := range o.(*corev1.Endpoints).Subsets {
			for _, a := range s.Addresses {
				out[a.IP] = *a.NodeName
			}
		}
		return out
	}
	testwait.For(t, 10*time.Second, 25*time.Millisecond, func() error {
		if ips := readyIPs(); len(ips) != 3 {
			return fmt.Errorf("endpoints web has ready addresses %v, want 3", ips)
		}
		return nil
	})

	victim := activePods(t, c, "web")[0]
	dead := victim.Spec.NodeName
	k.SetAlive(dead, false)
	t.Logf("stopping the heartbeat of %s, which runs %s", dead, victim.Name)

	testwait.For(t, 10*time.Second, 25*time.Millisecond, func() error {
		o, _ := c.Get(context.Background(), nodesR, "", dead)
		if n := o.(*corev1.Node); conditions.NodeReady(n) {
			return errors.New("node " + dead + " is still Ready")
		}
		for _, ip := range readyIPs() {
			if ip == dead {
				return errors.New("endpoints web still lists a ready address on " + dead)
			}
		}
		return nil
	})
	o, _ := c.Get(context.Background(), nodesR, "", dead)
	for _, cond := range o.(*corev1.Node).Status.Conditions {
		if cond.Type == corev1.NodeReady && (cond.Status != corev1.ConditionUnknown || cond.Reason != "NodeStatusUnknown") {
			t.Errorf("node %s Ready condition %s/%s, want Unknown/NodeStatusUnknown", dead, cond.Status, cond.Reason)
		}
	}

	// After the eviction timeout its pods are gone and replaced elsewhere.
	testwait.For(t, 20*time.Second, 25*time.Millisecond, func() error {
		if _, err := c.Get(context.Background(), podsR, "default", victim.Name); !apierrors.IsNotFound(err) {
			return errors.New("pod " + victim.Name + " on the dead node still exists")
		}
		pods := activePods(t, c, "web")
		ready := 0
		for _, p := range pods {
			if p.Spec.NodeName == dead {
				return errors.New("pod " + p.Name + " was scheduled onto the dead node")
			}
			if conditions.PodReady(p) {
				ready++
			}
		}
		if ready != 3 || len(pods) != 3 {
			return fmt.Errorf("%d pods, %d ready; want 3 ready on the live nodes", len(pods), ready)
		}
		if ips := readyIPs(); len(ips) != 3 {
			return fmt.Errorf("endpoints ready addresses %v, want 3", ips)
		}
		return nil
	})

	// The node comes back: Ready again, and nothing is placed twice.
	k.SetAlive(dead, true)
	testwait.For(t, 10*time.Second, 25*time.Millisecond, func() error {
		o, _ := c.Get(context.Background(), nodesR, "", dead)
		if !conditions.NodeReady(o.(*corev1.Node)) {
			return errors.New("node " + dead + " is not Ready again")
		}
		return nil
	})
	if pods := activePods(t, c, "web"); len(pods) != 3 {
		t.Fatalf("after the node came back there are %d pods, want 3", len(pods))
	}
}

func TestEndpointsBatchPodChanges(t *testing.T) {
	c := apiservertest.Start(t)
	nodetest.Start(t, c, "node-1", "node-2")
	cfg := fastConfig("cm-1")
	cfg.EndpointsBatchPeriod = 500 * time.Millisecond
	startManager(t, c, cfg)
	mustCreate(t, c, servicesR, serviceOf("web"))
	// A selector-less Service keeps the Endpoints its user wrote.
	manual := serviceOf("manual")
	manual.Spec.Selector = nil
	mustCreate(t, c, servicesR, manual)
	//lint:ignore SA1019 a selectorless Service's Endpoints, which users still write
	mustCreate(t, c, endpointsR, &corev1.Endpoints{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "manual"},
		//lint:ignore SA1019 a selectorless Service's Endpoints, which users still write
		Subsets: []corev1.EndpointSubset{{Addresses: []corev1.EndpointAddress{{IP: "198.18.0.10"}}, Ports: []corev1.EndpointPort{{Name: "http", Port: 8080}}}}})

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events, err := c.Watch(ctx, endpointsR, "default", client.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	writes := map[string]int{}
	go func() {
		for ev := range events {
			mu.Lock()
			writes[ev.Object.GetName()]++
			mu.Unlock()
		}
	}()
	mustCreate(t, c, deploymentsR, deploymentOf("web", 10, "web:v1"))
	waitRolledOut(t, c, "web", 10, 30*time.Second)
	testwait.For(t, 10*time.Second, 25*time.Millisecond, func() error {
		o, err := c.Get(context.Background(), endpointsR, "default", "web")
		if err != nil {
			return err
		}
		//lint:ignore SA1019 the v1 Endpoints the controller writes, as kube-controller-manager does
		if subsets := o.(*corev1.Endpoints).Subsets; len(subsets) != 1 || len(subsets[0].Addresses) != 10 {
			return fmt.Errorf("subsets %+v, want one with 10 ready addresses", subsets)
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	// 10 pods each created, bound, run and made ready: 40 pod changes.
	t.Logf("endpoints writes: %v", writes)
	if writes["web"] > 12 {
		t.Fatalf("endpoints web was written %d times for 40 pod changes; want them batched", writes["web"])
	}
	o, err := c.Get(context.Background(), endpointsR, "default", "manual")
	//lint:ignore SA1019 the v1 Endpoints the controller writes, as kube-controller-manager does
	if err != nil || o.(*corev1.Endpoints).Subsets[0].Addresses[0].IP != "198.18.0.10" || writes["manual"] > 1 {
		t.Fatalf("the user's Endpoints of a selector-less Service changed: %v, %v, %d writes", o, err, writes["manual"])
	}
}

func TestGarbageCollection(t *testing.T) {
	c := apiservertest.Start(t)
	nodetest.Start(t, c, "node-1")
	startManager(t, c, fastConfig("cm-1"))
	ctx := context.Background()

	mustCreate(t, c, deploymentsR, deploymentOf("gone", 2, "app:v1"))
	mustCreate(t, c, deploymentsR, deploymentOf("kept", 2, "app:v1"))
	waitRolledOut(t, c, "gone", 2, 20*time.Second)
	waitRolledOut(t, c, "kept", 2, 20*time.Second)

	if err := c.Delete(ctx, deploymentsR, "default", "gone", client.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	// --cascade=orphan, as the CLI does it.
	if err := gc.DeleteOrphaning(ctx, c, deploymentsR, "default", "kept"); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, 20*time.Second, 25*time.Millisecond, func() error {
		rss, _, _ := c.List(ctx, replicaSetsR, "default", client.ListOptions{LabelSelector: "app=gone"})
		if len(rss) > 0 {
			return fmt.Errorf("%d replicasets of the deleted deployment remain", len(rss))
		}
		if pods, _, _ := c.List(ctx, podsR, "default", client.ListOptions{LabelSelector: "app=gone"}); len(pods) > 0 {
			return fmt.Errorf("%d pods of the deleted deployment remain", len(pods))
		}
		return nil
	})
	rss, _, _ := c.List(ctx, replicaSetsR, "default", client.ListOptions{LabelSelector: "app=kept"})
	if len(rss) != 1 {
		t.Fatalf("orphaned replicasets: %d, want 1 kept", len(rss))
	}
	if pods := activePods(t, c, "kept"); len(pods) != 2 {
		t.Fatalf("orphaned pods: %d, want 2 kept", len(pods))
	}
}

func TestReplicationController(t *testing.T) {
	c := apiservertest.Start(t)
	nodetest.Start(t, c, "node-1", "node-2")
	startManager(t, c, fastConfig("cm-1"))
	ctx := context.Background()
	rcR := replicationControllersR
	rc := &corev1.ReplicationController{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "legacy"},
		Spec: corev1.ReplicationControllerSpec{Replicas: ptr(int32(3)), Selector: map[string]string{"app": "legacy"},
			Template: &corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "legacy"}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "legacy:v1"}}}}},
	}
	mustCreate(t, c, rcR, rc)
	waitRC := func(n int32) {
		testwait.For(t, 20*time.Second, 25*time.Millisecond, func() error {
			o, _ := c.Get(ctx, rcR, "default", "legacy")
			st := o.(*corev1.ReplicationController).Status
			if pods := activePods(t, c, "legacy"); len(pods) != int(n) || st.ReadyReplicas != n || st.Replicas != n || st.AvailableReplicas != n {
				return fmt.Errorf("%d pods, status %+v; want %d ready", len(pods), st, n)
			}
			return nil
		})
	}
	waitRC(3)
	for range 10 {
		o, _ := c.Get(ctx, rcR, "default", "legacy")
		cur := o.(*corev1.ReplicationController)
		cur.Spec.Replicas = ptr(int32(1))
		if _, err := c.Update(ctx, rcR, cur); err == nil {
			break
		}
	}
	waitRC(1)
}

// TestLeaderFailover runs two controller managers on one API. The leader
// is killed without releasing its lease (as a crash would); the other
// takes over once the lease expires and finishes the work, and no pod is
// ever bound twice or lost.
func TestLeaderFailover(t *testing.T) {
	c := apiservertest.Start(t)
	nodetest.Start(t, c, "node-1", "node-2", "node-3")
	var mu sync.Mutex
	bindings := map[string][]string{}
	manager := func(id string) (func(), Config) {
		cfg := fastConfig(id)
		cfg.KeepLeaseOnStop = true
		cfg.OnBound = func(ns, name, node string) {
			mu.Lock()
			defer mu.Unlock()
			bindings[name] = append(bindings[name], id+"->"+node)
		}
		return startManager(t, c, cfg), cfg
	}
	stop1, _ := manager("cm-1")
	testwait.For(t, 10*time.Second, 25*time.Millisecond, func() error {
		if h := leaseHolder(t, c); h != "cm-1" {
			return errors.New("lease held by " + h + ", want cm-1 (the only manager)")
		}
		return nil
	})
	manager("cm-2")
	mustCreate(t, c, deploymentsR, deploymentOf("web", 3, "web:v1"))
	waitRolledOut(t, c, "web", 3, 20*time.Second)
	if h := leaseHolder(t, c); h != "cm-1" {
		t.Fatalf("lease moved to %q while cm-1 was alive", h)
	}

	killed := time.Now()
	stop1()
	updateDeployment(t, c, "web", func(d *appsv1.Deployment) { d.Spec.Replicas = ptr(int32(6)) })
	testwait.For(t, 15*time.Second, 25*time.Millisecond, func() error {
		if h := leaseHolder(t, c); h != "cm-2" {
			return errors.New("lease held by " + h + ", want cm-2 after cm-1 died")
		}
		return nil
	})
	t.Logf("cm-2 took over %s after cm-1 died", time.Since(killed).Round(100*time.Millisecond))
	waitRolledOut(t, c, "web", 6, 20*time.Second)

	mu.Lock()
	defer mu.Unlock()
	for name, b := range bindings {
		if len(b) != 1 {
			t.Errorf("pod %s bound %d times: %v", name, len(b), b)
		}
	}
	pods := activePods(t, c, "web")
	for _, p := range pods {
		if len(bindings[p.Name]) != 1 {
			t.Errorf("pod %s on %s has bindings %v, want exactly one", p.Name, p.Spec.NodeName, bindings[p.Name])
		}
	}
	if len(bindings) != 6 {
		t.Errorf("%d pods were bound in all, want 6 (3, then 3 more): %v", len(bindings), bindings)
	}
}

func leaseHolder(t *testing.T, c client.Interface) string {
	t.Helper()
	o, err := c.Get(context.Background(), leasesR, leader.DefaultNamespace, leader.DefaultName)
	if err != nil {
		return "nobody (" + err.Error() + ")"
	}
	if h := o.(*coordinationv1.Lease).Spec.HolderIdentity; h != nil {
		return *h
	}
	return ""
}
