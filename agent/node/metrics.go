package node

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/skep-io/skep/agent/dataplane"
	"github.com/skep-io/skep/agent/metrics"
)

// agentMetrics are the agent's own series, beside those its dataplane
// exports; both modes report the whole Sync under one name, so the two
// can be compared from the same dashboard.
type agentMetrics struct {
	reg          *prometheus.Registry
	syncDuration prometheus.Histogram
	services     prometheus.Gauge
}

func newAgentMetrics(mode string) *agentMetrics {
	m := &agentMetrics{
		reg: prometheus.NewRegistry(),
		syncDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:        "skep_agent_services_sync_duration_seconds",
			Help:        "Time the dataplane took to take in the cluster's Services and Endpoints, per sync.",
			ConstLabels: prometheus.Labels{"dataplane": mode},
			Buckets:     prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
		services: prometheus.NewGauge(prometheus.GaugeOpts{
			Name:        "skep_agent_services",
			Help:        "Service ports the dataplane carries after the last sync.",
			ConstLabels: prometheus.Labels{"dataplane": mode},
		}),
	}
	m.reg.MustRegister(m.syncDuration, m.services, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *agentMetrics) observeSync(services int, took time.Duration) {
	m.syncDuration.Observe(took.Seconds())
	m.services.Set(float64(services))
}

// observeApply records an incremental sync, which knows only the changed
// services, not how many there are.
func (m *agentMetrics) observeApply(took time.Duration) {
	m.syncDuration.Observe(took.Seconds())
}

// serveMetrics serves the agent's and the dataplane's metrics on
// cfg.MetricsAddr until ctx ends. Metrics are not worth stopping the node
// for: a failure to listen is logged.
func (a *Agent) serveMetrics(ctx context.Context, dp dataplane.Dataplane) {
	if c, ok := dp.(interface{ Collectors() []prometheus.Collector }); ok {
		if err := registerAll(a.metrics.reg, c.Collectors()); err != nil {
			a.log.Warn("register dataplane metrics", "err", err)
		}
	}
	if a.cfg.MetricsAddr == "" {
		return
	}
	if err := metrics.Serve(ctx, a.cfg.MetricsAddr, a.metrics.reg, a.log); err != nil {
		a.log.Warn("metrics not served", "address", a.cfg.MetricsAddr, "err", err)
	}
}

func registerAll(reg prometheus.Registerer, cs []prometheus.Collector) error {
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}
