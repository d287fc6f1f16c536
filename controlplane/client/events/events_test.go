package events_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skep-io/skep/controlplane/api"
	"github.com/skep-io/skep/controlplane/apiserver/apiservertest"
	"github.com/skep-io/skep/controlplane/client"
	"github.com/skep-io/skep/controlplane/client/events"
	"github.com/skep-io/skep/controlplane/client/events/eventstest"
	"github.com/skep-io/skep/internal/testwait"
)

var eventsResource = api.MustLookup("events")

// clock is a settable time for the broadcaster.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func listEvents(t *testing.T, c client.Interface, selector string) []*corev1.Event {
	t.Helper()
	objs, _, err := c.List(t.Context(), eventsResource, "", client.ListOptions{FieldSelector: selector})
	if err != nil {
		t.Fatal(err)
	}
	var out []*corev1.Event
	for _, o := range objs {
		out = append(out, o.(*corev1.Event))
	}
	return out
}

func pod(c client.Interface, t *testing.T, name string) *corev1.Pod {
	t.Helper()
	obj, err := c.Create(t.Context(), api.MustLookup("pods"), &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "web:1"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return obj.(*corev1.Pod)
}

// TestRepeatsAggregate records an event three times, and another with a
// different message, and checks that kubectl would see two Events: the
// first with count 3, its first and last timestamps those of the first
// and third occurrence, named <pod>.<hex>.
func TestRepeatsAggregate(t *testing.T) {
	c := apiservertest.Start(t)
	clk := &clock{t: time.Date(2026, 12, 2, 14, 0, 0, 0, time.UTC)}
	b := eventstest.Start(t, c, events.Options{Now: clk.now})
	rec := b.Recorder(corev1.EventSource{Component: "default-scheduler"})
	p := pod(c, t, "web-1")
	first := clk.now()
	for range 3 {
		rec.Event(p, corev1.EventTypeWarning, "FailedScheduling", "0/1 nodes are available: 1 node(s) were unschedulable.")
		clk.add(time.Minute)
	}
	rec.Eventf(p, corev1.EventTypeNormal, "Scheduled", "Successfully assigned %s/%s to %s", p.Namespace, p.Name, "node-1")

	sel := "involvedObject.kind=Pod,involvedObject.name=web-1,involvedObject.namespace=default,involvedObject.uid=" + string(p.UID)
	testwait.For(t, 5*time.Second, 10*time.Millisecond, func() error {
		got := listEvents(t, c, sel)
		if len(got) != 2 {
			return fmt.Errorf("%d events about the pod, want 2 (one aggregated FailedScheduling, one Scheduled)", len(got))
		}
		for _, e := range got {
			if e.Reason == "FailedScheduling" && e.Count != 3 {
				return fmt.Errorf("FailedScheduling count %d, want 3", e.Count)
			}
		}
		return nil
	})
	for _, e := range listEvents(t, c, sel) {
		if !strings.HasPrefix(e.Name, "web-1.") || e.Source.Component != "default-scheduler" || e.InvolvedObject.APIVersion != "v1" {
			t.Errorf("event %s: source %+v, involvedObject %+v; want a name web-1.<hex>, the scheduler as source, apiVersion v1", e.Name, e.Source, e.InvolvedObject)
		}
		if e.Reason != "FailedScheduling" {
			continue
		}
		if !e.FirstTimestamp.Time.Equal(first) || !e.LastTimestamp.Time.Equal(first.Add(2*time.Minute)) || e.Type != corev1.EventTypeWarning {
			t.Errorf("FailedScheduling: first %v last %v type %s; want first %v, last two minutes later, Warning", e.FirstTimestamp, e.LastTimestamp, e.Type, first)
		}
	}
}

// TestRepeatAfterWindowOrTTL checks that a repeat starts a new Event once
// the window has passed, and when the Event it would count into is gone.
func TestRepeatAfterWindowOrTTL(t *testing.T) {
	c := apiservertest.Start(t)
	clk := &clock{t: time.Date(2026, 12, 2, 14, 0, 0, 0, time.UTC)}
	b := eventstest.Start(t, c, events.Options{Now: clk.now, Window: 5 * time.Minute})
	rec := b.Recorder(corev1.EventSource{Component: "kubelet", Host: "node-1"})
	p := pod(c, t, "web-2")
	count := func(n int) func() error {
		return func() error {
			if got := listEvents(t, c, "involvedObject.name=web-2"); len(got) != n {
				return fmt.Errorf("%d events, want %d", len(got), n)
			}
			return nil
		}
	}
	rec.Event(p, corev1.EventTypeNormal, "Pulled", "Container image \"web:1\" already present on machine")
	testwait.For(t, 5*time.Second, 10*time.Millisecond, count(1))
	clk.add(6 * time.Minute)
	rec.Event(p, corev1.EventTypeNormal, "Pulled", "Container image \"web:1\" already present on machine")
	testwait.For(t, 5*time.Second, 10*time.Millisecond, count(2))

	for _, e := range listEvents(t, c, "involvedObject.name=web-2") {
		if err := c.Delete(t.Context(), eventsResource, e.Namespace, e.Name, client.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	clk.add(time.Second)
	rec.Event(p, corev1.EventTypeNormal, "Pulled", "Container image \"web:1\" already present on machine")
	testwait.For(t, 5*time.Second, 10*time.Millisecond, count(1))
	if e := listEvents(t, c, "involvedObject.name=web-2")[0]; e.Count != 1 {
		t.Errorf("the repeat of a deleted Event has count %d, want a new Event with count 1", e.Count)
	}
}

// TestNodeEventsGoToDefault checks that an event about a cluster-scoped
// object lands in the default namespace, where kubectl describe looks.
func TestNodeEventsGoToDefault(t *testing.T) {
	c := apiservertest.Start(t)
	b := eventstest.Start(t, c, events.Options{})
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1", UID: "node-uid"}}
	b.Recorder(corev1.EventSource{Component: "node-controller"}).Eventf(node, corev1.EventTypeNormal, "NodeNotReady", "Node %s status is now: NodeNotReady", node.Name)
	testwait.For(t, 5*time.Second, 10*time.Millisecond, func() error {
		got := listEvents(t, c, "involvedObject.kind=Node,involvedObject.name=node-1")
		if len(got) != 1 || got[0].Namespace != "default" || got[0].InvolvedObject.Namespace != "" {
			return fmt.Errorf("events about node-1: %v; want one in namespace default", got)
		}
		return nil
	})
}

// blockingClient holds every write until released: an API server that
// does not answer.
type blockingClient struct {
	client.Interface
	release chan struct{}
}

func (b blockingClient) Create(ctx context.Context, r *api.Resource, obj api.Object) (api.Object, error) {
	select {
	case <-b.release:
	case <-ctx.Done():
	}
	return nil, ctx.Err()
}

// TestNeverBlocks records far more events than the queue holds while the
// API server does not answer: every call returns at once and the events
// past the queue are counted as dropped.
func TestNeverBlocks(t *testing.T) {
	bc := blockingClient{release: make(chan struct{})}
	t.Cleanup(func() { close(bc.release) })
	b := eventstest.Start(t, bc, events.Options{QueueSize: 10})
	rec := b.Recorder(corev1.EventSource{Component: "deployment-controller"})
	d := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "default"}}
	began := time.Now()
	for i := range 1000 {
		rec.Eventf(d, corev1.EventTypeNormal, "SuccessfulCreate", "Created pod: p-%d", i)
	}
	if took := time.Since(began); took > time.Second {
		t.Fatalf("1000 events took %v to record: the recorder blocked on the API server", took)
	}
	// 10 queued, at most one being written.
	if got := b.Dropped(); got < 989 || got > 990 {
		t.Errorf("Dropped() = %d, want 989 or 990 of 1000 with a queue of 10", got)
	}
	var nilRec *events.Recorder
	nilRec.Event(d, corev1.EventTypeNormal, "Nothing", "a nil recorder records nothing")
}

// TestSpamFilter has one reporter say 30 different things about one pod
// at once: 25 are written and 5 filtered, another pod is not held back by
// the first's budget, and five minutes later one more write is allowed.
func TestSpamFilter(t *testing.T) {
	c := apiservertest.Start(t)
	clk := &clock{t: time.Date(2026, 12, 2, 14, 0, 0, 0, time.UTC)}
	b := eventstest.Start(t, c, events.Options{Now: clk.now})
	rec := b.Recorder(corev1.EventSource{Component: "kubelet", Host: "node-1"})
	noisy, quiet := pod(c, t, "noisy"), pod(c, t, "quiet")
	for i := range 30 {
		rec.Eventf(noisy, corev1.EventTypeWarning, "Unhealthy", "Readiness probe failed: attempt %d", i)
	}
	rec.Event(quiet, corev1.EventTypeNormal, "Started", "Started container web")
	count := func(name string, n int) func() error {
		return func() error {
			if got := listEvents(t, c, "involvedObject.name="+name); len(got) != n {
				return fmt.Errorf("%d events about %s, want %d", len(got), name, n)
			}
			return nil
		}
	}
	testwait.For(t, 5*time.Second, 10*time.Millisecond, count("quiet", 1))
	testwait.For(t, 5*time.Second, 10*time.Millisecond, count("noisy", 25))
	if got := b.Filtered(); got != 5 {
		t.Errorf("Filtered() = %d, want 5 of 30 with a burst of 25", got)
	}
	clk.add(5 * time.Minute)
	rec.Eventf(noisy, corev1.EventTypeWarning, "Unhealthy", "Readiness probe failed: later")
	testwait.For(t, 5*time.Second, 10*time.Millisecond, count("noisy", 26))
}
