package clientgo

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	clientfeatures "k8s.io/client-go/features"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

const ns = "default"

func pod(name string, labels map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "registry.example/app:1"}}},
	}
}

func service(name string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": name},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP}},
		},
	}
}

func endpointSlice(name string) *discoveryv1.EndpointSlice {
	port, proto := int32(8080), corev1.ProtocolTCP
	portName := "http"
	return &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{discoveryv1.LabelServiceName: name}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"10.0.0.1"}}},
		Ports:       []discoveryv1.EndpointPort{{Name: &portName, Port: &port, Protocol: &proto}},
	}
}

func node(name string) *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
}

// event is an old-style core/v1 Event about a pod, as client-go's
// record.EventRecorder writes one.
func event(name, pod string) *corev1.Event {
	now := metav1.Now()
	return &corev1.Event{
		ObjectMeta:     metav1.ObjectMeta{Name: name, Namespace: ns},
		InvolvedObject: corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: pod, APIVersion: "v1"},
		Reason:         "Scheduled",
		Message:        "Successfully assigned " + ns + "/" + pod + " to n1",
		Source:         corev1.EventSource{Component: "default-scheduler"},
		Type:           corev1.EventTypeNormal,
		FirstTimestamp: now,
		LastTimestamp:  now,
		Count:          1,
	}
}

// seen is what an informer's handlers were told, as "add NAME",
// "update NAME" and "delete NAME", with the object each carried.
type seen struct {
	kind string
	ch   chan notice
}

type notice struct {
	what string
	obj  any
}

func newSeen(kind string) *seen { return &seen{kind: kind, ch: make(chan notice, 1000)} }

func (s *seen) handlers() cache.ResourceEventHandlerFuncs {
	send := func(verb string, obj any) {
		name, err := metaName(obj)
		if err != nil {
			name = "(" + err.Error() + ")"
		}
		s.ch <- notice{what: verb + " " + name, obj: obj}
	}
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { send("add", obj) },
		UpdateFunc: func(_, obj any) { send("update", obj) },
		DeleteFunc: func(obj any) { send("delete", obj) },
	}
}

func metaName(obj any) (string, error) {
	switch o := obj.(type) {
	case cache.DeletedFinalStateUnknown:
		return "", fmt.Errorf("%s deleted with its final state unknown (a watch event was missed)", o.Key)
	case metav1.Object:
		return o.GetName(), nil
	}
	return "", fmt.Errorf("%T is not an object", obj)
}

// expect waits for the handlers to be told want, skipping other notices
// (resyncs, earlier changes), and returns the object they got.
func (s *seen) expect(t *testing.T, want string) any {
	t.Helper()
	timeout := time.After(5 * time.Second)
	var got []string
	for {
		select {
		case n := <-s.ch:
			if n.what == want {
				return n.obj
			}
			got = append(got, n.what)
		case <-timeout:
			t.Fatalf("%s informer: no %q within 5s; got %v", s.kind, want, got)
			return nil
		}
	}
}

// expectNone checks that the handlers are told nothing about name for a
// while: a label-selected informer must not hear of objects outside its
// selection.
func (s *seen) expectNone(t *testing.T, name string, d time.Duration) {
	t.Helper()
	timeout := time.After(d)
	for {
		select {
		case n := <-s.ch:
			if strings.HasSuffix(n.what, " "+name) {
				t.Fatalf("%s informer: told %q of an object outside its selection", s.kind, n.what)
			}
		case <-timeout:
			return
		}
	}
}

// startFactory starts f's informers, stopped when the test ends, and
// returns how long they took to sync; the test fails if they have not
// synced within 10s.
func startFactory(t *testing.T, f informers.SharedInformerFactory) time.Duration {
	t.Helper()
	stop := make(chan struct{})
	t.Cleanup(func() {
		close(stop)
		f.Shutdown()
	})
	begin := time.Now()
	f.Start(stop)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for typ, ok := range f.WaitForCacheSync(ctx.Done()) {
		if !ok {
			t.Fatalf("the %v informer did not sync within 10s", typ)
		}
	}
	return time.Since(begin)
}

// TestInformersSyncAndFollowChanges runs a SharedInformerFactory with
// client-go's default feature gates (WatchListClient on since 1.35: the
// informers watch with sendInitialEvents=true and wait for the
// initial-events-end bookmark instead of listing) over pods, services,
// EndpointSlices, nodes and events.
func TestInformersSyncAndFollowChanges(t *testing.T) {
	_, cs, log := start(t)
	ctx := t.Context()
	seed(t, ctx, cs)

	f := informers.NewSharedInformerFactory(cs, 0)
	kinds := map[string]cache.SharedIndexInformer{
		"pods":           f.Core().V1().Pods().Informer(),
		"services":       f.Core().V1().Services().Informer(),
		"endpointslices": f.Discovery().V1().EndpointSlices().Informer(),
		"nodes":          f.Core().V1().Nodes().Informer(),
		"events":         f.Core().V1().Events().Informer(),
	}
	seens := map[string]*seen{}
	for kind, inf := range kinds {
		seens[kind] = newSeen(kind)
		if _, err := inf.AddEventHandler(seens[kind].handlers()); err != nil {
			t.Fatal(err)
		}
	}
	took := startFactory(t, f)
	if took > time.Second {
		t.Errorf("informers synced in %v, want under 1s", took)
	}
	t.Logf("informers synced in %v", took)
	for kind, s := range seens {
		s.expect(t, "add seed-"+strings.TrimSuffix(kind, "s"))
	}
	checkWatchList(t, log, kinds)

	t.Run("pods", func(t *testing.T) { followPods(t, ctx, cs, seens["pods"]) })
	t.Run("services", func(t *testing.T) { followServices(t, ctx, cs, seens["services"]) })
	t.Run("endpointslices", func(t *testing.T) { followEndpointSlices(t, ctx, cs, seens["endpointslices"]) })
	t.Run("nodes", func(t *testing.T) { followNodes(t, ctx, cs, seens["nodes"]) })
	t.Run("events", func(t *testing.T) { followEvents(t, ctx, cs, seens["events"]) })
}

// seed creates one object of each kind before the informers start, so
// that their initial events carry something.
func seed(t *testing.T, ctx context.Context, cs kubernetes.Interface) {
	t.Helper()
	must(t, "create pod", create(ctx, cs.CoreV1().Pods(ns), pod("seed-pod", nil)))
	must(t, "create service", create(ctx, cs.CoreV1().Services(ns), service("seed-service")))
	must(t, "create endpointslice", create(ctx, cs.DiscoveryV1().EndpointSlices(ns), endpointSlice("seed-endpointslice")))
	must(t, "create node", create(ctx, cs.CoreV1().Nodes(), node("seed-node")))
	must(t, "create event", create(ctx, cs.CoreV1().Events(ns), event("seed-event", "seed-pod")))
}

// checkWatchList checks that client-go, with its defaults, got its
// initial state from a watch with sendInitialEvents=true and did not fall
// back to a list: client-go falls back when the server does not end the
// initial events with the k8s.io/initial-events-end bookmark.
func checkWatchList(t *testing.T, log *requestLog, kinds map[string]cache.SharedIndexInformer) {
	t.Helper()
	if !clientfeatures.FeatureGates().Enabled(clientfeatures.WatchListClient) {
		t.Fatal("client-go's WatchListClient gate is off by default: this test was written for v0.37, where it is on")
	}
	for kind := range kinds {
		var watchList, lists int
		for _, e := range log.find("GET", "/"+kind) {
			switch {
			case strings.Contains(e.Query, "watch=true") && strings.Contains(e.Query, "sendInitialEvents=true"):
				watchList++
			case !strings.Contains(e.Query, "watch="):
				lists++
			}
		}
		if watchList == 0 || lists != 0 {
			t.Errorf("%s informer: %d watches with sendInitialEvents=true and %d lists, want the watch and no list (client-go lists when the watch-list does not work)", kind, watchList, lists)
		}
	}
}

func followPods(t *testing.T, ctx context.Context, cs kubernetes.Interface, s *seen) {
	pods := cs.CoreV1().Pods(ns)
	must(t, "create", create(ctx, pods, pod("p", map[string]string{"app": "web"})))
	s.expect(t, "add p")
	must(t, "update", update(ctx, pods, "p", func(p *corev1.Pod) { p.Labels["tier"] = "front" }))
	if got := s.expect(t, "update p").(*corev1.Pod); got.Labels["tier"] != "front" {
		t.Errorf("the update told the handler labels %v, want tier=front", got.Labels)
	}
	must(t, "delete", pods.Delete(ctx, "p", metav1.DeleteOptions{}))
	// A DELETED event carries the object's last state, not only its name.
	if got := s.expect(t, "delete p").(*corev1.Pod); got.Labels["tier"] != "front" || len(got.Spec.Containers) != 1 {
		t.Errorf("the deletion told the handler %+v, want the pod's last state (tier=front, its container)", got)
	}
}

func followServices(t *testing.T, ctx context.Context, cs kubernetes.Interface, s *seen) {
	svcs := cs.CoreV1().Services(ns)
	must(t, "create", create(ctx, svcs, service("web")))
	if got := s.expect(t, "add web").(*corev1.Service); got.Spec.ClusterIP == "" {
		t.Error("the service the handler was told of has no ClusterIP; skep allocates one on create")
	}
	must(t, "update", update(ctx, svcs, "web", func(v *corev1.Service) { v.Spec.Selector["app"] = "web2" }))
	if got := s.expect(t, "update web").(*corev1.Service); got.Spec.Selector["app"] != "web2" {
		t.Errorf("the update told the handler selector %v, want app=web2", got.Spec.Selector)
	}
	must(t, "delete", svcs.Delete(ctx, "web", metav1.DeleteOptions{}))
	s.expect(t, "delete web")
}

func followEndpointSlices(t *testing.T, ctx context.Context, cs kubernetes.Interface, s *seen) {
	slices := cs.DiscoveryV1().EndpointSlices(ns)
	must(t, "create", create(ctx, slices, endpointSlice("web-abc")))
	s.expect(t, "add web-abc")
	must(t, "update", update(ctx, slices, "web-abc", func(e *discoveryv1.EndpointSlice) {
		e.Endpoints = append(e.Endpoints, discoveryv1.Endpoint{Addresses: []string{"10.0.0.2"}})
	}))
	if got := s.expect(t, "update web-abc").(*discoveryv1.EndpointSlice); len(got.Endpoints) != 2 {
		t.Errorf("the update told the handler %d endpoints, want 2", len(got.Endpoints))
	}
	must(t, "delete", slices.Delete(ctx, "web-abc", metav1.DeleteOptions{}))
	s.expect(t, "delete web-abc")
}

func followNodes(t *testing.T, ctx context.Context, cs kubernetes.Interface, s *seen) {
	nodes := cs.CoreV1().Nodes()
	must(t, "create", create(ctx, nodes, node("n1")))
	s.expect(t, "add n1")
	must(t, "update", update(ctx, nodes, "n1", func(n *corev1.Node) { n.Spec.Unschedulable = true }))
	if got := s.expect(t, "update n1").(*corev1.Node); !got.Spec.Unschedulable {
		t.Error("the update told the handler a schedulable node, want it cordoned")
	}
	must(t, "delete", nodes.Delete(ctx, "n1", metav1.DeleteOptions{}))
	s.expect(t, "delete n1")
}

// followEvents repeats an event as a recorder does (count and
// lastTimestamp move on).
func followEvents(t *testing.T, ctx context.Context, cs kubernetes.Interface, s *seen) {
	events := cs.CoreV1().Events(ns)
	must(t, "create", create(ctx, events, event("p.1", "p")))
	s.expect(t, "add p.1")
	must(t, "update", update(ctx, events, "p.1", func(e *corev1.Event) {
		e.Count++
		e.LastTimestamp = metav1.Now()
	}))
	if got := s.expect(t, "update p.1").(*corev1.Event); got.Count != 2 {
		t.Errorf("the update told the handler count %d, want 2", got.Count)
	}
	must(t, "delete", events.Delete(ctx, "p.1", metav1.DeleteOptions{}))
	s.expect(t, "delete p.1")
}

// TestLabelSelectedInformer checks selector transitions through a
// label-selected informer: a pod whose labels move into the selection is
// added, one whose labels move out is deleted, and one never in it is
// never heard of.
func TestLabelSelectedInformer(t *testing.T) {
	_, cs, _ := start(t)
	ctx := t.Context()
	pods := cs.CoreV1().Pods(ns)
	f := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.LabelSelector = "app=web"
	}))
	inf := f.Core().V1().Pods()
	s := newSeen("app=web pods")
	if _, err := inf.Informer().AddEventHandler(s.handlers()); err != nil {
		t.Fatal(err)
	}
	startFactory(t, f)

	must(t, "create", create(ctx, pods, pod("other", map[string]string{"app": "db"})))
	must(t, "create", create(ctx, pods, pod("moving", map[string]string{"app": "db"})))
	s.expectNone(t, "moving", 300*time.Millisecond)

	must(t, "label in", update(ctx, pods, "moving", func(p *corev1.Pod) { p.Labels["app"] = "web" }))
	s.expect(t, "add moving")
	if _, err := inf.Lister().Pods(ns).Get("moving"); err != nil {
		t.Errorf("after its labels moved into the selection: %v", err)
	}

	must(t, "label out", update(ctx, pods, "moving", func(p *corev1.Pod) { p.Labels["app"] = "db" }))
	s.expect(t, "delete moving")
	if _, err := inf.Lister().Pods(ns).Get("moving"); err == nil {
		t.Error("after its labels moved out of the selection the pod is still in the informer's cache")
	}

	// Changes and the deletion of a pod never selected are not heard of.
	must(t, "update other", update(ctx, pods, "other", func(p *corev1.Pod) { p.Labels["tier"] = "back" }))
	must(t, "delete other", pods.Delete(ctx, "other", metav1.DeleteOptions{}))
	must(t, "delete moving", pods.Delete(ctx, "moving", metav1.DeleteOptions{}))
	s.expectNone(t, "other", 300*time.Millisecond)
}

// creator, getUpdater: the typed clients' methods the helpers use, for
// every kind.
type creator[T runtime.Object] interface {
	Create(context.Context, T, metav1.CreateOptions) (T, error)
}

type getUpdater[T runtime.Object] interface {
	Get(context.Context, string, metav1.GetOptions) (T, error)
	Update(context.Context, T, metav1.UpdateOptions) (T, error)
}

func create[T runtime.Object](ctx context.Context, c creator[T], obj T) error {
	_, err := c.Create(ctx, obj, metav1.CreateOptions{})
	return err
}

// update reads the object, changes it and writes it back, as controllers
// do (a conflict is an error here: nothing else writes these objects).
func update[T runtime.Object](ctx context.Context, c getUpdater[T], name string, change func(T)) error {
	obj, err := c.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	change(obj)
	_, err = c.Update(ctx, obj, metav1.UpdateOptions{})
	return err
}

func must(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}
