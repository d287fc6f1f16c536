package propagation

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"sync"
	"time"

	ciliumebpf "github.com/cilium/ebpf"

	"github.com/skep-io/skep/agent/dataplane/ebpf"
	"github.com/skep-io/skep/bench/setup"
	"github.com/skep-io/skep/bpf"
	"github.com/skep-io/skep/controlplane/client"
	"github.com/skep-io/skep/lab"
)

// labTarget is a lab whose nodes are watched through their pinned eBPF
// maps.
type labTarget struct {
	l      *lab.Lab
	c      *client.HTTP
	probes []*ebpfProbe
	trk    *tracker
}

func startLab(ctx context.Context, cfg Config) (*labTarget, error) {
	l, err := cfg.UpLab(ctx, Bench, lab.Config{Nodes: cfg.LabNodes, Binary: cfg.Binary, Dataplane: "ebpf"})
	if err != nil {
		return nil, err
	}
	t := &labTarget{l: l, trk: newTracker(len(l.Nodes()))}
	if t.c, err = l.Client(); err != nil {
		return nil, errors.Join(err, t.close(context.WithoutCancel(ctx)))
	}
	// A Ready node's agent has made its maps; wait for them all the same.
	deadline := time.Now().Add(time.Minute)
	for _, node := range l.Nodes() {
		for {
			p, err := openEBPFProbe(node)
			if err == nil {
				t.probes = append(t.probes, p)
				break
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				return nil, errors.Join(fmt.Errorf("node %s: %w", node, err), t.close(context.WithoutCancel(ctx)))
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	return t, nil
}

func (t *labTarget) close(ctx context.Context) (err error) {
	for _, p := range t.probes {
		p.close()
	}
	t.probes = nil
	setup.DownLab(ctx, t.l, &err)
	return err
}

func (t *labTarget) variant() string          { return VariantLab }
func (t *labTarget) nodes() int               { return len(t.probes) }
func (t *labTarget) client() client.Interface { return t.c }

// pollInterval is how often each node's maps are read while a change is
// awaited: a few lookups, a few microseconds each.
const pollInterval = time.Millisecond

// expect polls every node's maps until ClusterIP want.vip balances to
// want.addr. The dataplane knows nothing of Endpoints without a Service:
// for those, it gives the agents a moment to receive them.
func (t *labTarget) expect(want expectation) func(context.Context, time.Duration) ([]time.Time, error) {
	if want.endpointsOnly {
		return func(ctx context.Context, _ time.Duration) ([]time.Time, error) {
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(500 * time.Millisecond):
			}
			return make([]time.Time, len(t.probes)), nil
		}
	}
	carried := make([]bool, len(t.probes))
	var mu sync.Mutex
	done := t.trk.expect(func(node int) bool {
		mu.Lock()
		defer mu.Unlock()
		return carried[node]
	})
	return func(ctx context.Context, timeout time.Duration) ([]time.Time, error) {
		pctx, cancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		errs := make([]error, len(t.probes))
		for i, p := range t.probes {
			wg.Go(func() {
				for pctx.Err() == nil {
					ok, err := p.carries(want.vip, 80, want.addr)
					now := time.Now()
					if err != nil {
						errs[i] = err
						return
					}
					if ok {
						mu.Lock()
						carried[i] = true
						mu.Unlock()
						t.trk.observe(i, now)
						return
					}
					time.Sleep(pollInterval)
				}
			})
		}
		werr := wait(ctx, done, timeout)
		cancel()
		wg.Wait()
		if werr != nil {
			return nil, werr
		}
		if err := errors.Join(errs...); err != nil {
			return nil, err
		}
		return t.trk.result()
	}
}

// ebpfProbe reads a node's pinned service and backend maps, without
// loading any program.
type ebpfProbe struct {
	services, backends *ciliumebpf.Map
}

func openEBPFProbe(node string) (*ebpfProbe, error) {
	dir := filepath.Join(ebpf.DefaultPinRoot, node)
	ro := &ciliumebpf.LoadPinOptions{ReadOnly: true}
	services, err := ciliumebpf.LoadPinnedMap(filepath.Join(dir, "lb4_services"), ro)
	if err != nil {
		return nil, fmt.Errorf("open the services map: %w", err)
	}
	backends, err := ciliumebpf.LoadPinnedMap(filepath.Join(dir, "lb4_backends"), ro)
	if err != nil {
		services.Close()
		return nil, fmt.Errorf("open the backends map: %w", err)
	}
	return &ebpfProbe{services: services, backends: backends}, nil
}

func (p *ebpfProbe) close() {
	p.services.Close()
	p.backends.Close()
}

// carries says whether a TCP connect to vip:port would be balanced to a
// serving backend at addr: the service's entry (slot 0) and one of its
// slots name such a backend, as the socket program looks them up.
func (p *ebpfProbe) carries(vip netip.Addr, port uint16, addr netip.Addr) (bool, error) {
	key := bpf.LB4Key{Address: bpf.NativeEndianAddr(vip.As4()), Dport: bpf.NativeEndianPort(port), Proto: 6}
	var svc bpf.LB4Service
	if err := p.services.Lookup(&key, &svc); err != nil {
		if errors.Is(err, ciliumebpf.ErrKeyNotExist) {
			return false, nil
		}
		return false, fmt.Errorf("look up service %s:%d: %w", vip, port, err)
	}
	for slot := uint16(1); slot <= svc.Count; slot++ {
		key.BackendSlot = slot
		var s bpf.LB4Service
		if err := p.services.Lookup(&key, &s); err != nil {
			continue // being rewritten
		}
		var be bpf.LB4Backend
		if err := p.backends.Lookup(s.BackendId, &be); err != nil {
			continue
		}
		if bpf.AddrFromNative(be.Address) == addr && be.Flags&bpf.BackendFlagServing != 0 {
			return true, nil
		}
	}
	return false, nil
}
