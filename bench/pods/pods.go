// Package pods measures how fast pods start and get scheduled:
// `skep-bench pods`.
//
// Pod start latency is measured end to end on a lab: from the API create
// of a pod until a watch of the API sees it Running, through the
// scheduler, the node's agent, containerd and the agent's status write.
// Scheduler throughput is measured in-process, as the scheduler's own Go
// benchmark does, against the real API server and store: simulated nodes
// and pending pods are written first, then the clock runs from the
// scheduler's start until every pod is bound.
package pods

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skep-io/skep/bench/report"
	"github.com/skep-io/skep/bench/setup"
	"github.com/skep-io/skep/controlplane/api"
	"github.com/skep-io/skep/controlplane/client"
	"github.com/skep-io/skep/lab"
)

// Bench is the name of this benchmark in reports.
const Bench = "pods"

// Variants.
const (
	VariantLab       = "lab"       // pods started by real agents on a lab
	VariantScheduler = "scheduler" // bindings by the scheduler, in-process
)

// Metrics.
const (
	MetricStartP50   = "start_p50_ms"
	MetricStartP99   = "start_p99_ms"
	MetricThroughput = "scheduled_per_s"
)

var podsR = api.MustLookup("pods")

// Config is what to measure.
type Config struct {
	// Binary is the skep binary the lab runs; required with LabNodes.
	Binary string
	// ImagesDir holds the OCI image tarballs the lab's nodes import; it
	// must have skep/echo, which the pods run.
	ImagesDir string
	// LabNodes is the size of the lab; 0: no pod start latency.
	LabNodes int
	// Pods is how many pods one round starts on the lab; default 50.
	Pods int
	// Rate is how many pods are created per second; default 5.
	Rate float64
	// SchedulerNodes and SchedulerPods size the scheduler's trial; default
	// 1,000 and 10,000. SchedulerPods 0 with SchedulerNodes -1: none.
	SchedulerNodes, SchedulerPods int
	// NoFsync acknowledges store writes before they reach the disk, as
	// `skep server --no-fsync`; by default every write is synced, as
	// `skep server` does.
	NoFsync bool
	// Options: the lab, the rounds; Timeout bounds one round of either
	// trial, default 5 minutes.
	setup.Options
}

func (c *Config) setDefaults() error {
	if c.LabNodes > 0 {
		if c.Binary == "" {
			return errors.New("no skep binary given to run the lab")
		}
		if c.ImagesDir == "" {
			return errors.New("no images directory for the lab's nodes (it must hold skep/echo; make images writes _out/images)")
		}
	}
	c.SetDefaults(5 * time.Minute)
	if c.Pods == 0 {
		c.Pods = 50
	}
	if c.Rate == 0 {
		c.Rate = 5
	}
	if c.SchedulerNodes == 0 {
		c.SchedulerNodes = 1000
	}
	if c.SchedulerPods == 0 && c.SchedulerNodes > 0 {
		c.SchedulerPods = 10000
	}
	if c.LabNodes == 0 && c.SchedulerNodes <= 0 {
		return errors.New("nothing to measure: no lab and no scheduler trial")
	}
	return nil
}

// Run measures pod start latency on a lab and scheduler throughput,
// interleaved round by round, and adds the samples to rep. The lab is
// brought up first and taken down at the end, also when Run fails.
func Run(ctx context.Context, cfg Config, rep *report.Report) (err error) {
	if err := cfg.setDefaults(); err != nil {
		return err
	}
	var variants []string
	var l *lab.Lab
	var c *client.HTTP
	if cfg.LabNodes > 0 {
		if l, err = cfg.UpLab(ctx, Bench, lab.Config{Nodes: cfg.LabNodes, Binary: cfg.Binary, ImagesDir: cfg.ImagesDir}); err != nil {
			return err
		}
		defer setup.DownLab(ctx, l, &err)
		if c, err = l.Client(); err != nil {
			return err
		}
		variants = append(variants, VariantLab)
	}
	if cfg.SchedulerNodes > 0 {
		variants = append(variants, VariantScheduler)
	}

	return report.Interleave(cfg.Rounds, variants, func(round int, variant string) error {
		rctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
		defer cancel()
		add := func(n int, metric, unit string, v float64) {
			rep.Add(report.Sample{Bench: Bench, Variant: variant, N: n, Metric: metric, Unit: unit, Round: round, Value: v})
		}
		switch variant {
		case VariantLab:
			lat, err := startPods(rctx, cfg, c, round)
			if err != nil {
				return err
			}
			add(cfg.Pods, MetricStartP50, "ms", millis(lat, 0.5))
			add(cfg.Pods, MetricStartP99, "ms", millis(lat, 0.99))
			fmt.Fprintf(cfg.Progress, "pods: round %d lab: %d pods, create → Running p50 %sms p99 %sms\n",
				round, cfg.Pods, report.FormatValue(millis(lat, 0.5)), report.FormatValue(millis(lat, 0.99)))
		case VariantScheduler:
			took, err := schedule(rctx, cfg)
			if err != nil {
				return err
			}
			rate := float64(cfg.SchedulerPods) / took.Seconds()
			add(cfg.SchedulerPods, MetricThroughput, "pods/s", rate)
			fmt.Fprintf(cfg.Progress, "pods: round %d scheduler: %d pods on %d nodes bound in %s: %.0f pods/s\n",
				round, cfg.SchedulerPods, cfg.SchedulerNodes, took.Round(time.Millisecond), rate)
		}
		return nil
	})
}

func millis(lat []time.Duration, q float64) float64 {
	vs := make([]float64, len(lat))
	for i, d := range lat {
		vs[i] = float64(d) / float64(time.Millisecond)
	}
	return report.Quantile(vs, q)
}

// startPods creates cfg.Pods pods at cfg.Rate and returns, per pod, the
// time from just before its create until a watch saw it Running. It
// deletes them and waits until they are gone before returning.
func startPods(ctx context.Context, cfg Config, c *client.HTTP, round int) (lat []time.Duration, err error) {
	names := make([]string, cfg.Pods)
	for i := range names {
		names[i] = fmt.Sprintf("bench-start-%d-%03d", round, i)
	}
	var mu sync.Mutex
	created := map[string]time.Time{}
	running := map[string]time.Time{}
	allRunning := make(chan struct{})
	seen := func(obj api.Object) {
		p := obj.(*corev1.Pod)
		if p.Status.Phase != corev1.PodRunning {
			return
		}
		now := time.Now()
		mu.Lock()
		defer mu.Unlock()
		if _, ok := created[p.Name]; !ok {
			return
		}
		if _, ok := running[p.Name]; ok {
			return
		}
		running[p.Name] = now
		if len(running) == len(names) {
			close(allRunning)
		}
	}
	inf := client.NewInformer(c, podsR, client.InformerOptions{Namespace: "default", Logger: cfg.Logger})
	inf.AddHandlers(client.Handlers{OnAdd: seen, OnUpdate: func(_, obj api.Object) { seen(obj) }})
	ictx, stopInformer := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { inf.Run(ictx) })
	defer func() { stopInformer(); wg.Wait() }()
	if !client.WaitForSync(ctx, inf) {
		return nil, fmt.Errorf("list pods: %w", ctx.Err())
	}
	defer func() { err = errors.Join(err, deletePods(context.WithoutCancel(ctx), c, inf, names)) }()

	tick := time.NewTicker(time.Duration(float64(time.Second) / cfg.Rate))
	defer tick.Stop()
	for i, name := range names {
		if i > 0 {
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-tick.C:
			}
		}
		mu.Lock()
		created[name] = time.Now()
		mu.Unlock()
		if _, err := c.Create(ctx, podsR, pod(name)); err != nil {
			return nil, fmt.Errorf("create pod %s: %w", name, err)
		}
	}
	select {
	case <-allRunning:
	case <-ctx.Done():
		mu.Lock()
		defer mu.Unlock()
		return nil, fmt.Errorf("%d of %d pods Running before the round's time ran out", len(running), len(names))
	}
	mu.Lock()
	defer mu.Unlock()
	for _, name := range names {
		lat = append(lat, running[name].Sub(created[name]))
	}
	return lat, nil
}

// pod runs the echo server, which the lab's nodes import.
func pod(name string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, Labels: map[string]string{"app": "bench-start"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name: "echo", Image: "skep/echo:latest", ImagePullPolicy: corev1.PullIfNotPresent,
		}}},
	}
}

// deletePods deletes the pods and waits up to two minutes until the API
// no longer has them, so that the next round starts on quiet nodes.
func deletePods(ctx context.Context, c *client.HTTP, inf *client.Informer, names []string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	var errs []error
	for _, name := range names {
		if err := c.Delete(ctx, podsR, "default", name, client.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete pod %s: %w", name, err))
		}
	}
	for {
		left := 0
		for _, name := range names {
			if _, ok := inf.Get("default", name); ok {
				left++
			}
		}
		if left == 0 {
			return errors.Join(errs...)
		}
		select {
		case <-ctx.Done():
			return errors.Join(append(errs, fmt.Errorf("%d pods still there 2 minutes after their delete", left))...)
		case <-time.After(200 * time.Millisecond):
		}
	}
}
