package pods

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/skep-io/skep/controlplane/api"
	"github.com/skep-io/skep/controlplane/apiserver"
	"github.com/skep-io/skep/controlplane/client"
	"github.com/skep-io/skep/controlplane/scheduler"
	"github.com/skep-io/skep/controlplane/store"
)

var nodesR = api.MustLookup("nodes")

// schedule writes cfg.SchedulerNodes Ready nodes and cfg.SchedulerPods
// pending pods into a fresh store behind a real API server, then starts
// the scheduler and returns the time from its start until every pod was
// bound. Everything runs in this process; the store's files are removed.
func schedule(ctx context.Context, cfg Config) (took time.Duration, err error) {
	dir, err := os.MkdirTemp("", "skep-bench-sched-")
	if err != nil {
		return 0, fmt.Errorf("create store directory: %w", err)
	}
	defer func() { err = errors.Join(err, os.RemoveAll(dir)) }()
	password := make([]byte, 12)
	rand.Read(password)
	e, err := store.StartEmbedded(store.EmbeddedConfig{StoreDir: dir, Listen: "127.0.0.1:-1",
		User: "skep", Password: hex.EncodeToString(password), SyncAlways: !cfg.NoFsync})
	if err != nil {
		return 0, fmt.Errorf("start NATS: %w", err)
	}
	defer e.Shutdown()
	nc, err := e.Connect()
	if err != nil {
		return 0, fmt.Errorf("connect to NATS: %w", err)
	}
	defer nc.Close()
	st, err := store.Open(ctx, nc, store.Config{})
	if err != nil {
		return 0, err
	}
	srv, err := apiserver.New(st, apiserver.Config{AdminToken: hex.EncodeToString(password) + "a",
		JoinToken: hex.EncodeToString(password) + "j", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return 0, err
	}
	if err := srv.Bootstrap(ctx); err != nil {
		return 0, err
	}
	c := srv.Client()

	fmt.Fprintf(cfg.Progress, "pods: writing %d nodes and %d pending pods\n", cfg.SchedulerNodes, cfg.SchedulerPods)
	if err := createMany(ctx, c, cfg.SchedulerNodes, func(i int) (*api.Resource, api.Object) {
		return nodesR, simulatedNode(fmt.Sprintf("node-%05d", i))
	}); err != nil {
		return 0, err
	}
	if err := createMany(ctx, c, cfg.SchedulerPods, func(i int) (*api.Resource, api.Object) {
		return podsR, pendingPod(fmt.Sprintf("p-%05d", i), fmt.Sprintf("rs-%d", i%100))
	}); err != nil {
		return 0, err
	}

	var bound atomic.Int64
	done := make(chan struct{})
	sctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	start := time.Now()
	pods := client.NewInformer(c, podsR, client.InformerOptions{})
	nodes := client.NewInformer(c, nodesR, client.InformerOptions{})
	s := scheduler.New(c, pods, nodes, scheduler.Options{Logger: cfg.Logger, OnBound: func(_, _, _ string) {
		if bound.Add(1) == int64(cfg.SchedulerPods) {
			close(done)
		}
	}})
	wg.Go(func() { pods.Run(sctx) })
	wg.Go(func() { nodes.Run(sctx) })
	wg.Go(func() { s.Run(sctx) })
	select {
	case <-done:
		return time.Since(start), nil
	case <-ctx.Done():
		return 0, fmt.Errorf("only %d of %d pods bound before the round's time ran out", bound.Load(), cfg.SchedulerPods)
	}
}

// simulatedNode is a Ready node with room for 110 pods, as a kubelet's
// default, and more CPU and memory than they ask.
func simulatedNode(name string) *corev1.Node {
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"kubernetes.io/hostname": name}},
		Status: corev1.NodeStatus{
			Allocatable: corev1.ResourceList{
				corev1.ResourceCPU:    resource.MustParse("32"),
				corev1.ResourceMemory: resource.MustParse("128Gi"),
				corev1.ResourcePods:   resource.MustParse("110"),
			},
			Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}},
		},
	}
}

// pendingPod asks for 100m CPU and 128Mi and belongs to a ReplicaSet, so
// that spreading its siblings is part of the scheduler's work.
func pendingPod(name, owner string) *corev1.Pod {
	yes := true
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name,
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: owner, UID: types.UID(owner), Controller: &yes}}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app",
			Resources: corev1.ResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("128Mi")},
				Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("128Mi")},
			},
		}}},
	}
}

// createMany creates n objects, 16 at a time.
func createMany(ctx context.Context, c client.Interface, n int, obj func(i int) (*api.Resource, api.Object)) error {
	var next atomic.Int64
	errs := make(chan error, 16)
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				r, o := obj(i)
				if _, err := c.Create(ctx, r, o); err != nil {
					select {
					case errs <- fmt.Errorf("create %s %s: %w", r.Kind, o.GetName(), err):
					default:
					}
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	return ctx.Err()
}
