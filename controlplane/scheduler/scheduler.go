// Package scheduler binds pods that name no node to a Ready, schedulable
// node where they fit, as kube-scheduler does: filters (resources,
// nodeSelector, pod count), then scores (least allocated, replicas of one
// owner spread), then a compare-and-set update of the pod's spec.nodeName,
// so two schedulers can never bind one pod twice.
package scheduler

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skep-io/skep/controlplane/api"
	"github.com/skep-io/skep/controlplane/api/conditions"
	"github.com/skep-io/skep/controlplane/client"
	"github.com/skep-io/skep/controlplane/client/events"
	"github.com/skep-io/skep/controlplane/queue"
)

// Options tune a Scheduler; the zero value is fine.
type Options struct {
	Logger *slog.Logger
	// Binders is how many bindings may be in flight at once. Default 16.
	Binders int
	// RetryUnschedulable is how often pods that fit nowhere are tried
	// again even if nothing seemed to change. Default 60s.
	RetryUnschedulable time.Duration
	// OnBound, when set, is called after each binding the API accepted.
	OnBound func(namespace, name, node string)
	// Events records Scheduled and FailedScheduling on pods, as
	// Kubernetes' default-scheduler does; nil records none.
	Events *events.Recorder
}

// Scheduler binds pending pods.
type Scheduler struct {
	c      client.Interface
	pods   *client.Informer
	nodes  *client.Informer
	opts   Options
	logger *slog.Logger
	rng    *rand.Rand // used by the one scheduling goroutine only

	cache *cache
	queue *queue.Queue

	mu            sync.Mutex
	unschedulable map[string]bool // pod keys parked until the cluster changes
	// moves counts cluster changes that may make parked pods fit; a pod
	// that failed while one happened is retried rather than parked.
	moves atomic.Uint64

	binders  chan struct{}
	inFlight sync.WaitGroup
}

var podsResource = api.MustLookup("pods")

// New returns a scheduler fed by pod and node informers, which the caller
// runs (they may be shared with controllers); New registers its handlers,
// so it must be called before the informers start.
func New(c client.Interface, pods, nodes *client.Informer, opts Options) *Scheduler {
	if opts.Binders <= 0 {
		opts.Binders = 16
	}
	if opts.RetryUnschedulable <= 0 {
		opts.RetryUnschedulable = 60 * time.Second
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &Scheduler{
		c:             c,
		pods:          pods,
		nodes:         nodes,
		opts:          opts,
		logger:        logger.With("controller", "scheduler"),
		rng:           rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())),
		cache:         newCache(),
		queue:         queue.New(),
		unschedulable: map[string]bool{},
		binders:       make(chan struct{}, opts.Binders),
	}
	pods.AddHandlers(client.Handlers{OnAdd: s.podAdded, OnUpdate: s.podUpdated, OnDelete: s.podDeleted})
	nodes.AddHandlers(client.Handlers{OnAdd: s.nodeAdded, OnUpdate: s.nodeUpdated, OnDelete: s.nodeDeleted})
	return s
}

// Run schedules until ctx ends, once the informers have synced.
func (s *Scheduler) Run(ctx context.Context) {
	if !client.WaitForSync(ctx, s.pods, s.nodes) {
		return
	}
	s.logger.Info("scheduler started")
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(s.opts.RetryUnschedulable)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				s.retryUnschedulable()
			}
		}
	})
	wg.Go(func() {
		for {
			key, ok := s.queue.Get()
			if !ok {
				return
			}
			s.scheduleOne(ctx, key)
			s.queue.Done(key)
		}
	})
	<-ctx.Done()
	s.queue.ShutDown()
	wg.Wait()
	s.inFlight.Wait()
}

// needsScheduling says whether the pod is this scheduler's to place.
func needsScheduling(pod *corev1.Pod) bool {
	return pod.Spec.NodeName == "" && pod.DeletionTimestamp == nil &&
		(pod.Spec.SchedulerName == "" || pod.Spec.SchedulerName == corev1.DefaultSchedulerName) &&
		pod.Status.Phase != corev1.PodSucceeded && pod.Status.Phase != corev1.PodFailed
}

func (s *Scheduler) podAdded(obj api.Object) {
	pod := obj.(*corev1.Pod)
	key := client.KeyOf(pod)
	s.cache.setPod(key, pod)
	if needsScheduling(pod) && !s.cache.isAssumed(key) {
		s.queue.Add(key)
	}
}

func (s *Scheduler) podUpdated(oldObj, obj api.Object) {
	old, pod := oldObj.(*corev1.Pod), obj.(*corev1.Pod)
	key := client.KeyOf(pod)
	s.cache.setPod(key, pod)
	if occupies(old) && !occupies(pod) {
		s.retryUnschedulable() // a pod finished: room on its node
	}
	if !needsScheduling(pod) || s.cache.isAssumed(key) {
		return
	}
	s.mu.Lock()
	parked := s.unschedulable[key]
	s.mu.Unlock()
	// A parked pod whose status alone changed (our own Unschedulable
	// condition, say) fits no better than before.
	if parked && apiequality.Semantic.DeepEqual(old.Spec, pod.Spec) && apiequality.Semantic.DeepEqual(old.Labels, pod.Labels) {
		return
	}
	s.queue.Add(key)
}

func (s *Scheduler) podDeleted(obj api.Object) {
	pod := obj.(*corev1.Pod)
	key := client.KeyOf(pod)
	s.cache.removePod(key)
	s.mu.Lock()
	delete(s.unschedulable, key)
	s.mu.Unlock()
	if occupies(pod) {
		s.retryUnschedulable()
	}
}

func (s *Scheduler) nodeAdded(obj api.Object) {
	s.cache.setNode(obj.(*corev1.Node))
	s.retryUnschedulable()
}

func (s *Scheduler) nodeUpdated(oldObj, obj api.Object) {
	old, node := oldObj.(*corev1.Node), obj.(*corev1.Node)
	s.cache.setNode(node)
	// Heartbeats change nodes all the time; only what the filters read
	// brings parked pods back.
	if conditions.NodeReady(old) != conditions.NodeReady(node) || old.Spec.Unschedulable != node.Spec.Unschedulable ||
		!apiequality.Semantic.DeepEqual(old.Labels, node.Labels) ||
		!apiequality.Semantic.DeepEqual(old.Status.Allocatable, node.Status.Allocatable) {
		s.retryUnschedulable()
	}
}

func (s *Scheduler) nodeDeleted(obj api.Object) {
	s.cache.removeNode(obj.GetName())
}

// retryUnschedulable queues every parked pod again.
func (s *Scheduler) retryUnschedulable() {
	s.moves.Add(1)
	s.mu.Lock()
	parked := s.unschedulable
	s.unschedulable = map[string]bool{}
	s.mu.Unlock()
	for key := range parked {
		s.queue.Add(key)
	}
}

// scheduleOne decides for one pod, and hands the binding (or the
// Unschedulable condition) to a binder goroutine so that the next
// decision need not wait for the write.
func (s *Scheduler) scheduleOne(ctx context.Context, key string) {
	obj, ok := s.pods.Get(splitKey(key))
	if !ok {
		return
	}
	pod := obj.(*corev1.Pod)
	if !needsScheduling(pod) {
		return
	}
	moves := s.moves.Load()
	s.cache.mu.Lock()
	if s.cache.assumed[key] {
		s.cache.mu.Unlock()
		return
	}
	node, req, err := schedule(s.cache.sorted, pod, s.rng)
	if err == nil {
		s.cache.assumeLocked(key, placement{node: node.name, req: req, owner: ownerOf(pod)})
	}
	s.cache.mu.Unlock()

	if err != nil {
		s.mu.Lock()
		parked := s.moves.Load() == moves
		if parked {
			s.unschedulable[key] = true
		}
		s.mu.Unlock()
		if !parked {
			s.queue.AddRateLimited(key) // the cluster changed meanwhile
		}
		// Every attempt, as Kubernetes records it: the recorder counts
		// repeats into one Event.
		s.opts.Events.Event(pod, corev1.EventTypeWarning, "FailedScheduling", err.Error())
		s.async(func() { s.markUnschedulable(ctx, pod, err.Error()) })
		return
	}
	s.async(func() { s.bind(ctx, key, pod, node.name) })
}

func (s *Scheduler) async(f func()) {
	s.binders <- struct{}{}
	s.inFlight.Go(func() {
		defer func() { <-s.binders }()
		f()
	})
}

// bind writes the decision: an update of spec.nodeName carrying the
// resourceVersion the decision was made on, which the API server refuses
// if anyone (another scheduler, say) changed the pod since.
func (s *Scheduler) bind(ctx context.Context, key string, pod *corev1.Pod, node string) {
	bound := pod.DeepCopy()
	bound.Spec.NodeName = node
	_, err := s.c.Update(ctx, podsResource, bound)
	if err != nil {
		s.cache.forget(key)
		switch {
		case apierrors.IsNotFound(err) || ctx.Err() != nil:
		case apierrors.IsConflict(err):
			s.queue.AddRateLimited(key) // decide again on the newer pod
		default:
			s.logger.Warn("bind failed", "pod", key, "node", node, "err", err)
			s.queue.AddRateLimited(key)
		}
		return
	}
	s.queue.Forget(key)
	s.logger.Debug("bound", "pod", key, "node", node)
	s.opts.Events.Eventf(pod, corev1.EventTypeNormal, "Scheduled", "Successfully assigned %s/%s to %s", pod.Namespace, pod.Name, node)
	if s.opts.OnBound != nil {
		s.opts.OnBound(pod.Namespace, pod.Name, node)
	}
}

// markUnschedulable sets PodScheduled=False/Unschedulable with the reason,
// unless the pod says so already.
func (s *Scheduler) markUnschedulable(ctx context.Context, pod *corev1.Pod, msg string) {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable && c.Message == msg {
			return
		}
	}
	s.logger.Info("pod unschedulable", "pod", client.KeyOf(pod), "reason", msg)
	p := pod.DeepCopy()
	cond := corev1.PodCondition{Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: corev1.PodReasonUnschedulable,
		Message: msg, LastTransitionTime: metav1.Now()}
	setCondition(&p.Status, cond)
	if _, err := s.c.UpdateStatus(ctx, podsResource, p); err != nil {
		if apierrors.IsConflict(err) {
			s.queue.AddRateLimited(client.KeyOf(pod))
		} else if !apierrors.IsNotFound(err) && ctx.Err() == nil {
			s.logger.Warn("record unschedulable pod", "pod", client.KeyOf(pod), "err", err)
		}
	}
}

func setCondition(st *corev1.PodStatus, cond corev1.PodCondition) {
	for i, c := range st.Conditions {
		if c.Type == cond.Type {
			if c.Status == cond.Status {
				cond.LastTransitionTime = c.LastTransitionTime
			}
			st.Conditions[i] = cond
			return
		}
	}
	st.Conditions = append(st.Conditions, cond)
}

func splitKey(key string) (namespace, name string) {
	for i := 0; i < len(key); i++ {
		if key[i] == '/' {
			return key[:i], key[i+1:]
		}
	}
	return "", key
}

// Explain reports where the pod would go among nodes and pods (all of
// them, bound or not), or why it fits nowhere. It is the scheduling core
// without the API: `skep describe` and tests can use it.
func Explain(nodes []*corev1.Node, pods []*corev1.Pod, pod *corev1.Pod) (string, error) {
	c := newCache()
	for _, n := range nodes {
		c.setNode(n)
	}
	for _, p := range pods {
		c.setPod(client.KeyOf(p), p)
	}
	node, _, err := schedule(c.sorted, pod, rand.New(rand.NewPCG(1, 2)))
	if err != nil {
		return "", err // a *FitError
	}
	return node.name, nil
}
