package namespace

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skep-io/skep/controlplane/api"
	"github.com/skep-io/skep/controlplane/apiserver/apiservertest"
	"github.com/skep-io/skep/controlplane/client"
	"github.com/skep-io/skep/internal/testwait"
)

var (
	configMapsR = api.MustLookup("configmaps")
	podsR       = api.MustLookup("pods")
)

// stopAfter lets n deletes through and then stops the controller using it,
// as a crash or a lost leadership does in the middle of a namespace.
type stopAfter struct {
	client.Interface
	n    atomic.Int32
	stop context.CancelFunc
}

func (s *stopAfter) Delete(ctx context.Context, r *api.Resource, ns, name string, opts client.DeleteOptions) error {
	if s.n.Add(-1) < 0 {
		s.stop()
		return context.Canceled
	}
	return s.Interface.Delete(ctx, r, ns, name, opts)
}

// start runs a controller on c until the returned stop, or the test's end.
func start(t *testing.T, c client.Interface, cfg Config) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	if s, ok := c.(*stopAfter); ok {
		s.stop = cancel
	}
	inf := client.NewInformer(c, namespacesR, client.InformerOptions{Logger: slog.New(slog.DiscardHandler)})
	nc := New(c, inf, cfg, slog.New(slog.DiscardHandler))
	var wg sync.WaitGroup
	wg.Go(func() { inf.Run(ctx) })
	wg.Go(func() { nc.Run(ctx, 2) })
	stop = func() { cancel(); wg.Wait() }
	t.Cleanup(stop)
	return stop
}

// TestNamespaceDeletionSurvivesRestart stops the controller halfway
// through a namespace and starts a new one, which finds the namespace
// still terminating and finishes it from what is left. The namespace also
// waits for its pod bound to a node until the node has stopped it.
func TestNamespaceDeletionSurvivesRestart(t *testing.T) {
	c := apiservertest.Start(t)
	ctx := t.Context()
	const configMaps = 200
	create(t, c, namespacesR, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team"}})
	for i := range configMaps {
		create(t, c, configMapsR, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: fmt.Sprintf("cm-%03d", i)}})
	}
	create(t, c, podsR, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "bound"},
		Spec: corev1.PodSpec{NodeName: "node-1", Containers: []corev1.Container{{Name: "c", Image: "app:v1"}}}})
	if err := c.Delete(ctx, namespacesR, "", "team", client.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}

	// The first controller deletes 50 objects, in batches of 20, and stops.
	first := &stopAfter{Interface: c}
	first.n.Store(50)
	stopFirst := start(t, first, Config{BatchSize: 20, Parallel: 2, RecheckPeriod: 50 * time.Millisecond})
	testwait.For(t, 20*time.Second, 25*time.Millisecond, func() error {
		if first.n.Load() >= 0 {
			return fmt.Errorf("the first controller has %d deletes to go before it stops", first.n.Load())
		}
		return nil
	})
	stopFirst()
	left := count(t, c, configMapsR, "team")
	if left == configMaps || left == 0 {
		t.Fatalf("after the first controller stopped: %d of %d configmaps left; want it stopped partway", left, configMaps)
	}
	if ns := getNamespace(t, c, "team"); ns == nil || ns.Status.Phase != corev1.NamespaceTerminating {
		t.Fatalf("namespace after the first controller stopped: %+v; want it still there, Terminating", ns)
	}

	// A new one carries on; the bound pod is marked terminating and the
	// namespace waits for its node.
	start(t, c, Config{BatchSize: 20, Parallel: 2, RecheckPeriod: 50 * time.Millisecond})
	testwait.For(t, 20*time.Second, 25*time.Millisecond, func() error {
		if n := count(t, c, configMapsR, "team"); n > 0 {
			return fmt.Errorf("%d configmaps left", n)
		}
		p, err := c.Get(ctx, podsR, "team", "bound")
		if err != nil || p.GetDeletionTimestamp() == nil {
			return fmt.Errorf("bound pod: %v %v; want it terminating, waiting for its node", p, err)
		}
		return nil
	})
	time.Sleep(300 * time.Millisecond) // several rechecks
	if ns := getNamespace(t, c, "team"); ns == nil {
		t.Fatal("namespace removed while its pod was still terminating on its node")
	}
	// The node stops the pod and removes it, as an agent does.
	zero := int64(0)
	if err := c.Delete(ctx, podsR, "team", "bound", client.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, 20*time.Second, 25*time.Millisecond, func() error {
		if ns := getNamespace(t, c, "team"); ns != nil {
			return fmt.Errorf("namespace team still there: finalizers %v", ns.Spec.Finalizers)
		}
		return nil
	})
}

func create(t *testing.T, c client.Interface, r *api.Resource, obj api.Object) {
	t.Helper()
	if _, err := c.Create(t.Context(), r, obj); err != nil {
		t.Fatalf("create %s %s: %v", r.Kind, obj.GetName(), err)
	}
}

func count(t *testing.T, c client.Interface, r *api.Resource, ns string) int {
	t.Helper()
	objs, _, err := c.List(t.Context(), r, ns, client.ListOptions{})
	if err != nil {
		t.Fatalf("list %s: %v", r.Name, err)
	}
	return len(objs)
}

// getNamespace is the namespace, or nil once it is gone.
func getNamespace(t *testing.T, c client.Interface, name string) *corev1.Namespace {
	t.Helper()
	o, err := c.Get(t.Context(), namespacesR, "", name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		t.Fatalf("get namespace %s: %v", name, err)
	}
	return o.(*corev1.Namespace)
}
