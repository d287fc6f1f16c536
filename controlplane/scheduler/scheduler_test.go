package scheduler

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/skep-io/skep/controlplane/api"
	"github.com/skep-io/skep/controlplane/apiserver/apiservertest"
	"github.com/skep-io/skep/controlplane/client"
	"github.com/skep-io/skep/internal/testwait"
)

var nodesResource = api.MustLookup("nodes")

// startScheduler runs a scheduler with its own informers until the test ends.
func startScheduler(t testing.TB, c client.Interface, opts Options) {
	t.Helper()
	pods := client.NewInformer(c, podsResource, client.InformerOptions{})
	nodes := client.NewInformer(c, nodesResource, client.InformerOptions{})
	s := New(c, pods, nodes, opts)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { pods.Run(ctx) })
	wg.Go(func() { nodes.Run(ctx) })
	wg.Go(func() { s.Run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
}

func create(t testing.TB, c client.Interface, r *api.Resource, obj api.Object) {
	t.Helper()
	if _, err := c.Create(context.Background(), r, obj); err != nil {
		t.Fatalf("create %s %s: %v", r.Kind, obj.GetName(), err)
	}
}

func getPod(t testing.TB, c client.Interface, name string) *corev1.Pod {
	t.Helper()
	obj, err := c.Get(context.Background(), podsResource, "default", name)
	if err != nil {
		t.Fatalf("get pod %s: %v", name, err)
	}
	return obj.(*corev1.Pod)
}

func TestSchedulerSpreadsAndExplains(t *testing.T) {
	c := apiservertest.Start(t)
	for _, n := range []string{"node-a", "node-b", "node-c"} {
		create(t, c, nodesResource, node(n, "2", "2Gi"))
	}
	startScheduler(t, c, Options{})
	for i := range 3 {
		create(t, c, podsResource, pod(fmt.Sprintf("web-%d", i), "100m", "64Mi", owned("rs-web")))
	}
	create(t, c, podsResource, pod("big", "100m", "16Gi"))

	testwait.For(t, 10*time.Second, 20*time.Millisecond, func() error {
		used := map[string]string{}
		for i := range 3 {
			p := getPod(t, c, fmt.Sprintf("web-%d", i))
			if p.Spec.NodeName == "" {
				return errors.New(p.Name + " is not bound")
			}
			if other, ok := used[p.Spec.NodeName]; ok {
				return fmt.Errorf("%s and %s share %s; want one replica per node", other, p.Name, p.Spec.NodeName)
			}
			used[p.Spec.NodeName] = p.Name
			if !hasCondition(p, corev1.ConditionTrue, "") {
				return errors.New(p.Name + " is bound without PodScheduled=True")
			}
		}
		return nil
	})
	want := "0/3 nodes are available: 3 Insufficient memory."
	testwait.For(t, 10*time.Second, 20*time.Millisecond, func() error {
		p := getPod(t, c, "big")
		if !hasCondition(p, corev1.ConditionFalse, want) {
			return fmt.Errorf("pod big has conditions %+v, want PodScheduled=False Unschedulable %q", p.Status.Conditions, want)
		}
		return nil
	})

	// A node that fits arrives: the parked pod is retried without delay.
	create(t, c, nodesResource, node("node-big", "4", "32Gi"))
	testwait.For(t, 10*time.Second, 20*time.Millisecond, func() error {
		if p := getPod(t, c, "big"); p.Spec.NodeName != "node-big" {
			return fmt.Errorf("pod big is on %q, want node-big", p.Spec.NodeName)
		}
		return nil
	})
}

func hasCondition(p *corev1.Pod, status corev1.ConditionStatus, msg string) bool {
	for _, cond := range p.Status.Conditions {
		if cond.Type == corev1.PodScheduled && cond.Status == status {
			return status == corev1.ConditionTrue || (cond.Reason == corev1.PodReasonUnschedulable && cond.Message == msg)
		}
	}
	return false
}

// TestTwoSchedulersNeverBindTwice runs two schedulers on one API at the
// same time (as during a leader hand-over): every pod is bound by exactly
// one of them.
func TestTwoSchedulersNeverBindTwice(t *testing.T) {
	c := apiservertest.Start(t)
	for i := range 5 {
		create(t, c, nodesResource, node(fmt.Sprintf("node-%d", i), "64", "64Gi"))
	}
	const pods = 200
	for i := range pods {
		create(t, c, podsResource, pod(fmt.Sprintf("p-%03d", i), "10m", "1Mi"))
	}
	var mu sync.Mutex
	bindings := map[string][]string{}
	record := func(who string) func(ns, name, node string) {
		return func(ns, name, node string) {
			mu.Lock()
			defer mu.Unlock()
			bindings[name] = append(bindings[name], who+"->"+node)
		}
	}
	startScheduler(t, c, Options{OnBound: record("s1")})
	startScheduler(t, c, Options{OnBound: record("s2")})
	testwait.For(t, 30*time.Second, 20*time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(bindings) < pods {
			return fmt.Errorf("%d of %d pods bound", len(bindings), pods)
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	perScheduler := map[string]int{}
	for name, b := range bindings {
		if len(b) != 1 {
			t.Errorf("pod %s was bound %d times: %v", name, len(b), b)
		}
		perScheduler[b[0][:2]]++
	}
	for i := range pods {
		name := fmt.Sprintf("p-%03d", i)
		if p := getPod(t, c, name); p.Spec.NodeName == "" || "s1->"+p.Spec.NodeName != bindings[name][0] && "s2->"+p.Spec.NodeName != bindings[name][0] {
			t.Errorf("pod %s is on %q; the accepted binding was %v", name, p.Spec.NodeName, bindings[name])
		}
	}
	t.Logf("bindings per scheduler: %v", perScheduler)
}

// BenchmarkSchedulerAPI measures binding end to end through the real API
// server and store: 1,000 nodes and 10,000 pending pods are created first,
// then the clock runs from the scheduler's start until every pod is bound.
func BenchmarkSchedulerAPI(b *testing.B) {
	const nodes, pods = 1000, 10000
	var total time.Duration
	for b.Loop() {
		b.StopTimer()
		c := apiservertest.Start(b)
		createMany(b, c, nodes, func(i int) (*api.Resource, api.Object) {
			return nodesResource, node(fmt.Sprintf("node-%04d", i), "32", "128Gi")
		})
		createMany(b, c, pods, func(i int) (*api.Resource, api.Object) {
			p := pod(fmt.Sprintf("p-%05d", i), "100m", "128Mi", owned(fmt.Sprintf("rs-%d", i%100)))
			p.Spec.Containers[0].Resources.Limits = corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("128Mi")}
			return podsResource, p
		})
		var bound atomic.Int64
		done := make(chan struct{})
		b.StartTimer()
		start := time.Now()
		startScheduler(b, c, Options{OnBound: func(ns, name, node string) {
			if bound.Add(1) == pods {
				close(done)
			}
		}})
		select {
		case <-done:
		case <-time.After(5 * time.Minute):
			b.Fatalf("only %d of %d pods bound after 5 minutes", bound.Load(), pods)
		}
		total += time.Since(start)
	}
	b.ReportMetric(float64(pods*b.N)/total.Seconds(), "pods/s")
}

func createMany(b *testing.B, c client.Interface, n int, obj func(i int) (*api.Resource, api.Object)) {
	b.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	next := atomic.Int64{}
	for range 16 {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				r, o := obj(i)
				if _, err := c.Create(context.Background(), r, o); err != nil {
					select {
					case errs <- fmt.Errorf("create %s: %w", o.GetName(), err):
					default:
					}
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
}
