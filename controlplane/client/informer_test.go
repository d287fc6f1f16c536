package client

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/skep-io/skep/controlplane/api"
	"github.com/skep-io/skep/internal/testwait"
)

// memClient is an in-memory Interface for one resource with a change log,
// so a test can break watch streams and compact history at will.
type memClient struct {
	mu        sync.Mutex
	rev       int
	objs      map[string]api.Object
	log       []Event // log[n] has revision n+1
	compacted int     // watches from before this revision get 410 Gone
	streams   []chan Event
	watches   []string // the resourceVersion each Watch asked for
	lists     int
	changed   chan struct{}
}

func newMemClient() *memClient {
	return &memClient{objs: map[string]api.Object{}, changed: make(chan struct{}, 1)}
}

func (m *memClient) put(name, image string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.rev++
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, ResourceVersion: strconv.Itoa(m.rev)},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: image}}}}
	typ := Modified
	if _, ok := m.objs[name]; !ok {
		typ = Added
	}
	m.objs[name] = p
	m.record(Event{Type: typ, Object: p})
}

func (m *memClient) del(name string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.rev++
	delete(m.objs, name)
	// As the API server sends it: name, namespace and revision only.
	tomb := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, ResourceVersion: strconv.Itoa(m.rev)}}
	m.record(Event{Type: Deleted, Object: tomb})
}

func (m *memClient) record(ev Event) {
	m.log = append(m.log, ev)
	for _, s := range m.streams {
		s <- ev
	}
}

// breakStreams ends every open watch, as a lost connection does.
func (m *memClient) breakStreams() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, s := range m.streams {
		close(s)
	}
	m.streams = nil
}

func (m *memClient) compact() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.compacted = m.rev + 1
}

func (m *memClient) watchCalls() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.watches...)
}

func (m *memClient) listCalls() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lists
}

func (m *memClient) List(ctx context.Context, r *api.Resource, ns string, opts ListOptions) ([]api.Object, string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.lists++
	var out []api.Object
	for _, o := range m.objs {
		out = append(out, o)
	}
	return out, strconv.Itoa(m.rev), nil
}

func (m *memClient) Watch(ctx context.Context, r *api.Resource, ns string, opts ListOptions) (<-chan Event, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.watches = append(m.watches, opts.ResourceVersion)
	from, err := strconv.Atoi(opts.ResourceVersion)
	if err != nil {
		return nil, fmt.Errorf("watch needs a resourceVersion, got %q", opts.ResourceVersion)
	}
	if from+1 < m.compacted {
		return nil, apierrors.NewResourceExpired(fmt.Sprintf("too old resource version: %d", from))
	}
	ch := make(chan Event, 1000)
	for _, ev := range m.log[from:] {
		ch <- ev
	}
	m.streams = append(m.streams, ch)
	go func() {
		<-ctx.Done()
		m.mu.Lock()
		defer m.mu.Unlock()
		for n, s := range m.streams {
			if s == ch {
				close(s)
				m.streams = append(m.streams[:n], m.streams[n+1:]...)
			}
		}
	}()
	return ch, nil
}

func (m *memClient) Get(ctx context.Context, r *api.Resource, ns, name string) (api.Object, error) {
	return nil, apierrors.NewNotFound(schema.GroupResource{Resource: r.Name}, name)
}
func (m *memClient) Create(ctx context.Context, r *api.Resource, obj api.Object) (api.Object, error) {
	panic("not used")
}
func (m *memClient) Update(ctx context.Context, r *api.Resource, obj api.Object) (api.Object, error) {
	panic("not used")
}
func (m *memClient) UpdateStatus(ctx context.Context, r *api.Resource, obj api.Object) (api.Object, error) {
	panic("not used")
}
func (m *memClient) Delete(ctx context.Context, r *api.Resource, ns, name string, opts DeleteOptions) error {
	panic("not used")
}

// recorder keeps what the handlers were told, as "add x", "update x a->b",
// "delete x (last image)".
type recorder struct {
	mu  sync.Mutex
	got []string
}

func image(obj api.Object) string {
	if c := obj.(*corev1.Pod).Spec.Containers; len(c) > 0 {
		return c[0].Image
	}
	return "<none>"
}

func (r *recorder) handlers() Handlers {
	add := func(s string) { r.mu.Lock(); r.got = append(r.got, s); r.mu.Unlock() }
	return Handlers{
		OnAdd:    func(o api.Object) { add("add " + o.GetName() + " " + image(o)) },
		OnUpdate: func(old, o api.Object) { add("update " + o.GetName() + " " + image(old) + "->" + image(o)) },
		OnDelete: func(o api.Object) { add("delete " + o.GetName() + " " + image(o)) },
	}
}

func (r *recorder) events() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.got...)
}

func startInformer(t *testing.T, m *memClient, rec *recorder) *Informer {
	t.Helper()
	inf := NewInformer(m, api.MustLookup("pods"), InformerOptions{})
	inf.AddHandlers(rec.handlers())
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { inf.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	testwait.For(t, 5*time.Second, 5*time.Millisecond, testwait.Holds("sync", inf.HasSynced))
	return inf
}

func TestInformerListThenWatch(t *testing.T) {
	m := newMemClient()
	m.put("a", "v1")
	rec := &recorder{}
	inf := startInformer(t, m, rec)

	m.put("b", "v1")
	m.put("a", "v2")
	m.del("b")
	want := []string{"add a v1", "add b v1", "update a v1->v2", "delete b v1"}
	testwait.For(t, 5*time.Second, 5*time.Millisecond, testwait.Holds("events", func() bool { return len(rec.events()) == len(want) }))
	if got := rec.events(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("handlers got %q, want %q", got, want)
	}
	if o, ok := inf.Get("default", "a"); !ok || image(o) != "v2" {
		t.Fatalf("Get(default, a) = %v, %v; want image v2", o, ok)
	}
	if _, ok := inf.Get("default", "b"); ok {
		t.Fatal("Get(default, b) found a deleted pod")
	}
	if n := len(inf.List()); n != 1 {
		t.Fatalf("List() has %d objects, want 1", n)
	}
}

func TestInformerResumesFromLastRevision(t *testing.T) {
	m := newMemClient()
	m.put("a", "v1") // rev 1
	rec := &recorder{}
	inf := startInformer(t, m, rec)
	m.put("a", "v2") // rev 2
	testwait.For(t, 5*time.Second, 5*time.Millisecond, testwait.Holds("update", func() bool { return len(rec.events()) == 2 }))

	m.breakStreams()
	testwait.For(t, 5*time.Second, 5*time.Millisecond, testwait.Holds("second watch", func() bool { return len(m.watchCalls()) == 2 }))
	if got := m.watchCalls(); got[1] != "2" {
		t.Fatalf("watch resumed from %q, want 2 (the last revision seen); calls %q", got[1], got)
	}
	if n := m.listCalls(); n != 1 {
		t.Fatalf("a broken stream caused %d lists, want 1 (resume, not relist)", n)
	}
	m.put("a", "v3")
	testwait.For(t, 5*time.Second, 5*time.Millisecond, testwait.Holds("update after resume", func() bool { return len(rec.events()) == 3 }))
	if o, _ := inf.Get("default", "a"); image(o) != "v3" {
		t.Fatalf("after resume a has image %s, want v3", image(o))
	}
}

func TestInformerRelistsWhenResumeIsRefused(t *testing.T) {
	m := newMemClient()
	m.put("a", "v1")
	m.put("b", "v1")
	rec := &recorder{}
	inf := startInformer(t, m, rec)

	// While the stream is down, b goes and c comes; then history is
	// compacted, so the watch cannot resume and the informer must list,
	// and say what changed, including the deletion it never saw.
	m.mu.Lock()
	for _, s := range m.streams {
		close(s)
	}
	m.streams = nil
	m.rev++
	delete(m.objs, "b")
	m.log = append(m.log, Event{Type: Deleted})
	m.compacted = m.rev + 1
	m.mu.Unlock()
	m.put("c", "v1")
	m.compact()

	testwait.For(t, 5*time.Second, 5*time.Millisecond, testwait.Holds("relist", func() bool { return m.listCalls() == 2 }))
	testwait.For(t, 5*time.Second, 5*time.Millisecond, testwait.Holds("events", func() bool { return len(rec.events()) == 4 }))
	got := rec.events()
	want := map[string]bool{"delete b v1": true, "add c v1": true}
	for _, e := range got[2:] {
		if !want[e] {
			t.Fatalf("after relist handlers got %q, want add c and delete b", got)
		}
	}
	if _, ok := inf.Get("default", "b"); ok {
		t.Fatal("b still cached after relist")
	}
}
