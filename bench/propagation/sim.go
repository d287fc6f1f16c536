package propagation

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skep-io/skep/controlplane/api"
	"github.com/skep-io/skep/controlplane/client"
)

var (
	podsR   = api.MustLookup("pods")
	nodesR  = api.MustLookup("nodes")
	leasesR = api.MustLookup("leases")
)

// leaseEvery is how often an agent renews its Lease (a quarter of the
// agent's default 40s lease).
const leaseEvery = 10 * time.Second

// simulated is n agents as goroutines. Each has its own credential and
// HTTPS connection, keeps the watches an agent keeps (Services,
// Endpoints, Nodes, and the Pods bound to it) and renews its Lease as an
// agent does, without containerd or a dataplane.
type simulated struct {
	name   string // the variant
	admin  client.Interface
	agents []simAgent
	trk    *tracker
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// leaseErrors counts failed Lease renewals: a server that cannot keep
	// up with its agents' reports shows here first.
	leaseErrors atomic.Int64
}

type simAgent struct {
	services, endpoints, nodes, pods *client.Informer
	// lastErr keeps what the agent's informers last complained about.
	lastErr *lastError
}

// startSimulated starts n agents on srv and waits until every one has
// listed everything it watches. The agents join in batches, as nodes of a
// cluster come up over time rather than in one instant.
func startSimulated(ctx context.Context, cfg Config, srv *serverProcess, n int) (*simulated, error) {
	tokens, err := srv.agentTokens(ctx, n)
	if err != nil {
		return nil, err
	}
	admin, err := client.New(srv.admin)
	if err != nil {
		return nil, err
	}
	actx, cancel := context.WithCancel(ctx)
	s := &simulated{name: srv.variant, admin: admin, agents: make([]simAgent, n), trk: newTracker(n), cancel: cancel}
	const batch = 50
	for from := 0; from < n; from += batch {
		for i := from; i < min(from+batch, n); i++ {
			if err := s.startAgent(actx, srv, i, tokens[i], cfg.Logger); err != nil {
				s.stop()
				return nil, err
			}
		}
		sctx, scancel := context.WithTimeout(ctx, time.Minute)
		for i := from; i < min(from+batch, n); i++ {
			a := s.agents[i]
			if !client.WaitForSync(sctx, a.services, a.endpoints, a.nodes, a.pods) {
				scancel()
				s.stop()
				return nil, fmt.Errorf("simulated agent %d of %d has not listed what it watches after a minute; "+
					"its informers last said: %s", i, n, a.lastErr.get())
			}
		}
		scancel()
	}
	return s, nil
}

func (s *simulated) startAgent(ctx context.Context, srv *serverProcess, i int, token string, log *slog.Logger) error {
	c, err := client.New(client.Config{Server: srv.admin.Server, CAPEM: srv.admin.CAPEM, Token: token})
	if err != nil {
		return err
	}
	node := simNodeName(i)
	last := &lastError{}
	// Informers log failed lists and watches; the first agents' go to the
	// logger, every agent's last one is kept for the error that says why
	// an agent could not start.
	handler := slog.Handler(last)
	if i < 3 {
		handler = teeHandler{last, log.Handler()}
	}
	ilog := slog.New(handler).With("agent", node)
	opts := func(field string) client.InformerOptions {
		return client.InformerOptions{Logger: ilog, FieldSelector: field}
	}
	a := simAgent{
		services:  client.NewInformer(c, servicesR, opts("")),
		endpoints: client.NewInformer(c, endpointsR, opts("")),
		nodes:     client.NewInformer(c, nodesR, opts("")),
		pods:      client.NewInformer(c, podsR, opts("spec.nodeName="+node)),
		lastErr:   last,
	}
	seen := func() { s.trk.observe(i, time.Now()) }
	h := client.Handlers{OnAdd: func(api.Object) { seen() }, OnUpdate: func(_, _ api.Object) { seen() }}
	a.services.AddHandlers(h)
	a.endpoints.AddHandlers(h)
	s.agents[i] = a
	for _, inf := range []*client.Informer{a.services, a.endpoints, a.nodes, a.pods} {
		s.wg.Go(func() { inf.Run(ctx) })
	}
	s.wg.Go(func() { s.keepLease(ctx, c, node) })
	return nil
}

// keepLease renews the agent's Lease every leaseEvery, starting at a
// random point of the period so that the agents' renewals spread out.
func (s *simulated) keepLease(ctx context.Context, c client.Interface, node string) {
	wait := rand.N(leaseEvery)
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = leaseEvery
		if err := renewLease(ctx, c, node); err != nil && ctx.Err() == nil {
			s.leaseErrors.Add(1)
		}
	}
}

func renewLease(ctx context.Context, c client.Interface, node string) error {
	now := metav1.NewMicroTime(time.Now())
	secs := int32(4 * leaseEvery / time.Second)
	cur, err := c.Get(ctx, leasesR, "kube-node-lease", node)
	if apierrors.IsNotFound(err) {
		l := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: node, Namespace: "kube-node-lease"},
			Spec: coordinationv1.LeaseSpec{HolderIdentity: &node, LeaseDurationSeconds: &secs, RenewTime: &now, AcquireTime: &now}}
		_, err = c.Create(ctx, leasesR, l)
		return err
	}
	if err != nil {
		return err
	}
	l := cur.(*coordinationv1.Lease)
	l.Spec.RenewTime = &now
	_, err = c.Update(ctx, leasesR, l)
	return err
}

func simNodeName(i int) string { return fmt.Sprintf("sim-%05d", i) }

func (s *simulated) stop() {
	s.cancel()
	s.wg.Wait()
}

func (s *simulated) variant() string          { return s.name }
func (s *simulated) nodes() int               { return len(s.agents) }
func (s *simulated) client() client.Interface { return s.admin }

// expect waits for every agent's caches to hold what a real agent would
// program: the Service (unless only the Endpoints are awaited) and
// Endpoints with the awaited backend. The handlers run after the cache
// holds the change, so the time recorded is the time of delivery.
func (s *simulated) expect(want expectation) func(context.Context, time.Duration) ([]time.Time, error) {
	done := s.trk.expect(func(node int) bool {
		a := s.agents[node]
		if !want.endpointsOnly {
			if _, ok := a.services.Get(namespace, want.name); !ok {
				return false
			}
		}
		obj, ok := a.endpoints.Get(namespace, want.name)
		//lint:ignore SA1019 the simulated agent reads Endpoints; the real agent reads the EndpointSlices mirrored from them
		return ok && hasAddress(obj.(*corev1.Endpoints), want.addr.String())
	})
	return func(ctx context.Context, timeout time.Duration) ([]time.Time, error) {
		if err := wait(ctx, done, timeout); err != nil {
			return nil, err
		}
		return s.trk.result()
	}
}

//lint:ignore SA1019 the simulated agent reads Endpoints; the real agent reads the EndpointSlices mirrored from them
func hasAddress(ep *corev1.Endpoints, ip string) bool {
	for _, ss := range ep.Subsets {
		for _, a := range ss.Addresses {
			if a.IP == ip {
				return true
			}
		}
	}
	return false
}

// lastError is a slog.Handler that keeps the last warning or error with
// its "err" attribute.
type lastError struct {
	mu   sync.Mutex
	last string
}

func (h *lastError) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }

func (h *lastError) Handle(_ context.Context, r slog.Record) error {
	msg := r.Message
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "err" {
			msg += ": " + a.Value.String()
		}
		return true
	})
	h.mu.Lock()
	h.last = msg
	h.mu.Unlock()
	return nil
}

// The agent's attributes are not needed in the kept message.
func (h *lastError) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *lastError) WithGroup(string) slog.Handler      { return h }

func (h *lastError) get() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.last == "" {
		return "nothing"
	}
	return h.last
}

// teeHandler sends records to both handlers.
type teeHandler struct{ a, b slog.Handler }

func (t teeHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return t.a.Enabled(ctx, l) || t.b.Enabled(ctx, l)
}

func (t teeHandler) Handle(ctx context.Context, r slog.Record) error {
	if t.a.Enabled(ctx, r.Level) {
		_ = t.a.Handle(ctx, r.Clone())
	}
	if t.b.Enabled(ctx, r.Level) {
		return t.b.Handle(ctx, r)
	}
	return nil
}

func (t teeHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return teeHandler{t.a.WithAttrs(as), t.b.WithAttrs(as)}
}

func (t teeHandler) WithGroup(g string) slog.Handler {
	return teeHandler{t.a.WithGroup(g), t.b.WithGroup(g)}
}
