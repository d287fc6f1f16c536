package propagation

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/skep-io/skep/controlplane/api"
	"github.com/skep-io/skep/controlplane/client"
)

// simulated is n agents as goroutines: each with its own credential and
// HTTPS connection, watching Services and Endpoints as an agent does.
type simulated struct {
	admin  client.Interface
	agents []simAgent
	trk    *tracker
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

type simAgent struct {
	services, endpoints *client.Informer
}

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
	s := &simulated{admin: admin, agents: make([]simAgent, n), trk: newTracker(n), cancel: cancel}
	quiet := slog.New(slog.DiscardHandler)
	for i := range n {
		c, err := client.New(client.Config{Server: srv.admin.Server, CAPEM: srv.admin.CAPEM, Token: tokens[i]})
		if err != nil {
			s.stop()
			return nil, err
		}
		a := simAgent{
			services:  client.NewInformer(c, servicesR, client.InformerOptions{Logger: quiet}),
			endpoints: client.NewInformer(c, endpointsR, client.InformerOptions{Logger: quiet}),
		}
		seen := func() { s.trk.observe(i, time.Now()) }
		h := client.Handlers{OnAdd: func(api.Object) { seen() }, OnUpdate: func(_, _ api.Object) { seen() }}
		a.services.AddHandlers(h)
		a.endpoints.AddHandlers(h)
		s.agents[i] = a
		s.wg.Go(func() { a.services.Run(actx) })
		s.wg.Go(func() { a.endpoints.Run(actx) })
	}
	sctx, scancel := context.WithTimeout(ctx, 3*time.Minute)
	defer scancel()
	for i, a := range s.agents {
		if !client.WaitForSync(sctx, a.services, a.endpoints) {
			s.stop()
			return nil, fmt.Errorf("simulated agent %d of %d: no first list within 3 minutes", i, n)
		}
	}
	return s, nil
}

func (s *simulated) stop() {
	s.cancel()
	s.wg.Wait()
}

func (s *simulated) variant() string          { return VariantSimulated }
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
		return ok && hasAddress(obj.(*corev1.Endpoints), want.addr.String())
	})
	return func(ctx context.Context, timeout time.Duration) ([]time.Time, error) {
		if err := wait(ctx, done, timeout); err != nil {
			return nil, err
		}
		return s.trk.result()
	}
}

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
