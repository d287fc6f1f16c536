// Package propagation measures how long a change written to the API takes
// to reach every node: `skep-bench propagation`.
//
// Two kinds of nodes are measured. On a lab, real agents watch the API
// server and program their eBPF maps; a node carries a change once its
// pinned maps balance the Service's ClusterIP to the new backend. Simulated
// agents are goroutines that join one `skep server` as agents do (their
// own credentials, HTTPS, an agent's four watches: Services, Endpoints,
// Nodes, their Pods; a Lease renewed every 10 s) and carry a change once
// their informer delivers it: the control plane's fan-out alone, at a
// hundred or a thousand nodes, without containerd. Their server stores in
// its embedded NATS or in a separate nats-server, one variant each.
//
// A trial writes the Endpoints of a selectorless Service, then the Service
// (the clock starts before the create), then moves the backend to another
// address (the clock starts before the update). Each step reports the p50
// and p99, across nodes, of the time until each node carried it.
package propagation

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/skep-io/skep/bench/report"
	"github.com/skep-io/skep/bench/setup"
	"github.com/skep-io/skep/controlplane/api"
	"github.com/skep-io/skep/controlplane/client"
)

// Bench is the name of this benchmark in reports.
const Bench = "propagation"

// VariantLab is real agents on a lab, eBPF dataplane. Simulated agents'
// variants are named by the NATS their server stores in: SimVariant.
const VariantLab = "lab"

// Where the simulated agents' server keeps its state.
const (
	// NATSEmbedded is the NATS inside skep server, as it runs by default.
	NATSEmbedded = "embedded"
	// NATSExternal is a nats-server process, given with --nats-url.
	NATSExternal = "external"
)

// SimVariant names the variant of simulated agents whose server stores in
// NATS of the given kind: sim-embedded-nats, sim-external-nats.
func SimVariant(kind string) string { return simVariant(kind) }

func simVariant(kind string) string { return "sim-" + kind + "-nats" }

// Metrics of one trial: the Service create and the Endpoints change, p50
// and p99 across nodes.
const (
	MetricServiceP50   = "service_p50_ms"
	MetricServiceP99   = "service_p99_ms"
	MetricEndpointsP50 = "endpoints_p50_ms"
	MetricEndpointsP99 = "endpoints_p99_ms"
)

var (
	servicesR  = api.MustLookup("services")
	endpointsR = api.MustLookup("endpoints")
)

// Config is what to measure.
type Config struct {
	// Binary is the skep binary the lab and the simulated agents' server
	// run. Required.
	Binary string
	// Agents are the numbers of simulated agents; default 3, 100, 200,
	// 1000 (the embedded NATS serves at most 1,000 watches, about 250
	// agents).
	// None: no simulated agents.
	Agents []int
	// NATS are the kinds of store the simulated agents are measured on,
	// each with a server of its own; default NATSEmbedded and NATSExternal.
	NATS []string
	// NATSServer is the nats-server binary of NATSExternal; default
	// nats-server from PATH.
	NATSServer string
	// LabNodes is the size of the lab; 0: no lab.
	LabNodes int
	// WorkDir holds the simulated agents' server data; default a
	// temporary directory, removed at the end.
	WorkDir string
	// Options: the lab, the rounds; Timeout bounds each step of a trial
	// (every node carrying the change), default 60s.
	setup.Options
}

func (c *Config) setDefaults() error {
	if c.Binary == "" {
		return errors.New("no skep binary given to run the server and the lab")
	}
	if c.Agents == nil {
		c.Agents = []int{3, 100, 200, 1000}
	}
	for _, n := range c.Agents {
		if n < 1 || n > 5000 {
			return fmt.Errorf("agents %d: 1 to 5,000 simulated agents", n)
		}
	}
	if c.NATS == nil {
		c.NATS = []string{NATSEmbedded, NATSExternal}
	}
	for _, k := range c.NATS {
		if k != NATSEmbedded && k != NATSExternal {
			return fmt.Errorf("NATS %q: allowed are %s, %s", k, NATSEmbedded, NATSExternal)
		}
	}
	if len(c.NATS) == 0 {
		c.Agents = nil
	}
	if len(c.Agents) == 0 && c.LabNodes == 0 {
		return errors.New("nothing to measure: no simulated agents and no lab")
	}
	c.SetDefaults(time.Minute)
	return nil
}

// Run brings up what cfg asks for (a lab, a server for simulated agents),
// runs the trials and adds their samples to rep, and removes everything it
// made, also when it fails.
func Run(ctx context.Context, cfg Config, rep *report.Report) (err error) {
	if err := cfg.setDefaults(); err != nil {
		return err
	}
	var labNodes *labTarget
	if cfg.LabNodes > 0 {
		if labNodes, err = startLab(ctx, cfg); err != nil {
			return err
		}
		defer func() { err = errors.Join(err, labNodes.close(context.WithoutCancel(ctx))) }()
	}
	servers := map[string]*serverProcess{}
	if len(cfg.Agents) > 0 {
		for _, kind := range cfg.NATS {
			fmt.Fprintf(cfg.Progress, "propagation: starting a skep server on %s NATS for up to %d simulated agents\n", kind, slices.Max(cfg.Agents))
			srv, serr := startServer(ctx, cfg, kind)
			if serr != nil {
				return serr
			}
			defer func() { err = errors.Join(err, srv.stop()) }()
			servers[kind] = srv
		}
	}

	seq := 0
	trial := func(round int, t target) error {
		seq++
		res, err := runTrial(ctx, cfg, t, seq)
		if err != nil {
			return fmt.Errorf("%s, %d nodes: %w", t.variant(), t.nodes(), err)
		}
		for _, s := range []struct {
			metric string
			lat    []time.Duration
			q      float64
		}{
			{MetricServiceP50, res.service, 0.5}, {MetricServiceP99, res.service, 0.99},
			{MetricEndpointsP50, res.endpoints, 0.5}, {MetricEndpointsP99, res.endpoints, 0.99},
		} {
			rep.Add(report.Sample{Bench: Bench, Variant: t.variant(), N: t.nodes(), Metric: s.metric, Unit: "ms",
				Round: round, Value: quantileMillis(s.lat, s.q)})
		}
		fmt.Fprintf(cfg.Progress, "propagation: round %d %-17s %5d nodes: service p50 %s p99 %s, endpoints p50 %s p99 %s\n",
			round, t.variant(), t.nodes(),
			ms(res.service, 0.5), ms(res.service, 0.99), ms(res.endpoints, 0.5), ms(res.endpoints, 0.99))
		return nil
	}

	if len(cfg.Agents) == 0 {
		return report.Interleave(cfg.Rounds, []string{VariantLab}, func(round int, _ string) error { return trial(round, labNodes) })
	}
	// Simulated agents are started once per size and kind of NATS; the
	// lab, when there is one, is measured between them in every round, so
	// its samples share the machine's state with theirs. A size the
	// server cannot serve is not measured, and the report says why.
	for _, n := range cfg.Agents {
		targets := map[string]target{}
		var variants []string
		if labNodes != nil {
			targets[VariantLab] = labNodes
			variants = append(variants, VariantLab)
		}
		var started []*simulated
		for _, kind := range cfg.NATS {
			fmt.Fprintf(cfg.Progress, "propagation: starting %d simulated agents on %s NATS\n", n, kind)
			sim, err := startSimulated(ctx, cfg, servers[kind], n)
			if err != nil {
				if ctx.Err() != nil {
					return err
				}
				note := fmt.Sprintf("%s at %d agents: not measured: %v", simVariant(kind), n, err)
				rep.Notes = append(rep.Notes, note)
				fmt.Fprintf(cfg.Progress, "propagation: %s\n", note)
				continue
			}
			started = append(started, sim)
			targets[sim.variant()] = sim
			variants = append(variants, sim.variant())
		}
		if len(started) == 0 {
			continue
		}
		err = report.Interleave(cfg.Rounds, variants, func(round int, v string) error { return trial(round, targets[v]) })
		for _, sim := range started {
			sim.stop()
			if e := sim.leaseErrors.Load(); e > 0 {
				note := fmt.Sprintf("%s at %d agents: %d Lease renewals failed", sim.variant(), n, e)
				rep.Notes = append(rep.Notes, note)
				fmt.Fprintf(cfg.Progress, "propagation: %s\n", note)
			}
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func quantileMillis(lat []time.Duration, q float64) float64 {
	vs := make([]float64, len(lat))
	for i, d := range lat {
		vs[i] = float64(d) / float64(time.Millisecond)
	}
	return report.Quantile(vs, q)
}

func ms(lat []time.Duration, q float64) string {
	return report.FormatValue(quantileMillis(lat, q)) + "ms"
}

// target is a set of nodes a trial writes to and watches.
type target interface {
	variant() string
	nodes() int
	client() client.Interface
	// expect starts watching for want on every node, before the write that
	// makes it true; the returned wait gives, per node, the time it was
	// first seen to carry want, or an error naming the nodes that did not
	// within the timeout.
	expect(want expectation) (wait func(ctx context.Context, timeout time.Duration) ([]time.Time, error))
}

// expectation is what a node must carry: the Service name, at ClusterIP
// vip (dataplanes know no names), with the one backend addr. With
// endpointsOnly, only the Endpoints object is awaited.
type expectation struct {
	name          string
	vip           netip.Addr
	addr          netip.Addr
	endpointsOnly bool
}

// trialResult holds one latency per node for each step.
type trialResult struct {
	service, endpoints []time.Duration
}

const namespace = "default"

func runTrial(ctx context.Context, cfg Config, t target, seq int) (res trialResult, err error) {
	c := t.client()
	name := fmt.Sprintf("prop-%s-%d", t.variant(), seq)
	// The ClusterIP is asked for, near the top of the default service
	// range where the allocator's picks are unlikely; backends are in the
	// pod range and never connected to, only programmed.
	vip := netip.AddrFrom4([4]byte{10, 111, 254, byte(seq%250 + 1)})
	first := netip.AddrFrom4([4]byte{10, 244, 254, byte(seq%250 + 1)})
	second := netip.AddrFrom4([4]byte{10, 244, 255, byte(seq%250 + 1)})

	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		for _, r := range []*api.Resource{servicesR, endpointsR} {
			if derr := c.Delete(dctx, r, namespace, name, client.DeleteOptions{}); derr != nil && !apierrors.IsNotFound(derr) {
				err = errors.Join(err, fmt.Errorf("delete %s %s: %w", r.Name, name, derr))
			}
		}
	}()

	// Every node holds the Endpoints before the Service is written, so the
	// Service's clock measures the Service alone.
	wait := t.expect(expectation{name: name, addr: first, endpointsOnly: true})
	ep, err := c.Create(ctx, endpointsR, endpoints(name, first))
	if err != nil {
		return res, fmt.Errorf("create endpoints %s: %w", name, err)
	}
	if _, err := wait(ctx, cfg.Timeout); err != nil {
		return res, fmt.Errorf("endpoints %s before the service: %w", name, err)
	}

	wait = t.expect(expectation{name: name, vip: vip, addr: first})
	start := time.Now()
	if _, err := c.Create(ctx, servicesR, service(name, vip)); err != nil {
		return res, fmt.Errorf("create service %s: %w", name, err)
	}
	seen, err := wait(ctx, cfg.Timeout)
	if err != nil {
		return res, fmt.Errorf("service %s: %w", name, err)
	}
	res.service = since(start, seen)

	//lint:ignore SA1019 a selectorless Service's Endpoints, which users still write and skep mirrors into EndpointSlices
	moved := ep.(*corev1.Endpoints).DeepCopy()
	moved.Subsets[0].Addresses[0].IP = second.String()
	wait = t.expect(expectation{name: name, vip: vip, addr: second})
	start = time.Now()
	if _, err := c.Update(ctx, endpointsR, moved); err != nil {
		return res, fmt.Errorf("update endpoints %s: %w", name, err)
	}
	if seen, err = wait(ctx, cfg.Timeout); err != nil {
		return res, fmt.Errorf("endpoints change of %s: %w", name, err)
	}
	res.endpoints = since(start, seen)
	return res, nil
}

func since(start time.Time, seen []time.Time) []time.Duration {
	out := make([]time.Duration, len(seen))
	for i, t := range seen {
		out[i] = max(t.Sub(start), 0)
	}
	return out
}

func service(name string, vip netip.Addr) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
		Spec: corev1.ServiceSpec{ClusterIP: vip.String(), Ports: []corev1.ServicePort{
			{Protocol: corev1.ProtocolTCP, Port: 80, TargetPort: intstr.FromInt32(8080)},
		}},
	}
}

//lint:ignore SA1019 a selectorless Service's Endpoints, which users still write and skep mirrors into EndpointSlices
func endpoints(name string, addr netip.Addr) *corev1.Endpoints {
	//lint:ignore SA1019 a selectorless Service's Endpoints, which users still write and skep mirrors into EndpointSlices
	return &corev1.Endpoints{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
		//lint:ignore SA1019 a selectorless Service's Endpoints, which users still write and skep mirrors into EndpointSlices
		Subsets: []corev1.EndpointSubset{{
			Addresses: []corev1.EndpointAddress{{IP: addr.String()}},
			Ports:     []corev1.EndpointPort{{Port: 8080, Protocol: corev1.ProtocolTCP}},
		}},
	}
}

// tracker collects, per node, the first time an observation matched.
type tracker struct {
	mu    sync.Mutex
	match func(node int) bool
	seen  []time.Time
	left  int
	done  chan struct{}
}

func newTracker(nodes int) *tracker { return &tracker{seen: make([]time.Time, nodes)} }

// expect starts a new wait for match on every node and returns a channel
// closed when every node matched.
func (t *tracker) expect(match func(node int) bool) <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.match = match
	clear(t.seen)
	t.left = len(t.seen)
	t.done = make(chan struct{})
	return t.done
}

// observe records that node changed at time at: if it now matches, at is
// when it carried what is awaited.
func (t *tracker) observe(node int, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.match == nil || !t.seen[node].IsZero() || !t.match(node) {
		return
	}
	t.seen[node] = at
	t.left--
	if t.left == 0 {
		close(t.done)
	}
}

// result stops the wait and returns what was seen, or an error saying how
// many nodes never matched.
func (t *tracker) result() ([]time.Time, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.match = nil
	if t.left > 0 {
		var missing []int
		for i, s := range t.seen {
			if s.IsZero() {
				missing = append(missing, i)
			}
		}
		return nil, fmt.Errorf("%d of %d nodes never carried it (e.g. node %d)", t.left, len(t.seen), missing[0])
	}
	return slices.Clone(t.seen), nil
}

// wait blocks until done closes, the timeout passes or ctx ends.
func wait(ctx context.Context, done <-chan struct{}, timeout time.Duration) error {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-done:
		return nil
	case <-timer.C:
		return nil // result() says who is missing
	case <-ctx.Done():
		return ctx.Err()
	}
}
