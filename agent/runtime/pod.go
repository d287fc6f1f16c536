package runtime

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"time"

	containerd "github.com/containerd/containerd"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Labels on everything the runtime creates in containerd. They are the
// runtime's memory across agent restarts.
const (
	labelNode         = "io.skep.node"
	labelPodUID       = "io.skep.pod.uid"
	labelPodName      = "io.skep.pod.name"
	labelPodNamespace = "io.skep.pod.namespace"
	labelKind         = "io.skep.container.kind" // kindSandbox, kindInit or kindApp
	labelName         = "io.skep.container.name"
	labelAttempt      = "io.skep.container.attempt" // the restart count
	labelPodIP        = "io.skep.pod.ip"
	// The termination of this attempt, once it exited, and of the one
	// before it.
	labelExitCode       = "io.skep.exit.code"
	labelExitReason     = "io.skep.exit.reason"
	labelExitStarted    = "io.skep.exit.started-at"
	labelExitFinished   = "io.skep.exit.finished-at"
	labelLastExitCode   = "io.skep.last.code"
	labelLastReason     = "io.skep.last.reason"
	labelLastStarted    = "io.skep.last.started-at"
	labelLastFinished   = "io.skep.last.finished-at"
	labelLastContainer  = "io.skep.last.container-id"
	groupAnnotation     = "io.containerd.runc.v2.group" // one shim per pod
	kindSandbox         = "sandbox"
	kindInit            = "init"
	kindApp             = "app"
	containerIDPrefix   = "containerd://"
	maxNameInID         = 56
	resyncPeriod        = 10 * time.Second
	initialBackoff      = 10 * time.Second
	maxBackoff          = 5 * time.Minute
	backoffResetRunTime = 10 * time.Minute
)

// Waiting reasons, as kubelet reports them.
const (
	reasonContainerCreating    = "ContainerCreating"
	reasonPodInitializing      = "PodInitializing"
	reasonCrashLoopBackOff     = "CrashLoopBackOff"
	reasonErrImagePull         = "ErrImagePull"
	reasonImagePullBackOff     = "ImagePullBackOff"
	reasonErrImageNeverPull    = "ErrImageNeverPull"
	reasonCreateContainerError = "CreateContainerError"
	reasonRunContainerError    = "RunContainerError"
)

// podWorker owns one pod: its goroutine reconciles the pod whenever kicked
// (a task exit, a probe result, SyncPod) and on back-off deadlines.
type podWorker struct {
	uid    types.UID
	kickC  chan struct{}
	syncC  chan chan corev1.PodStatus
	cancel context.CancelFunc
	done   chan struct{}

	mu         sync.Mutex // guards the fields below; held while reconciling
	pod        *corev1.Pod
	sandbox    sandboxState
	containers map[string]*containerState // by name, init and app
	reported   *corev1.PodStatus
	transition map[corev1.PodConditionType]conditionState
	podError   string // why the sandbox could not be made, for the status
	retryAt    time.Time
	backoff    time.Duration
}

type conditionState struct {
	status corev1.ConditionStatus
	since  metav1.Time
}

// sandboxState is the pause container of the pod.
type sandboxState struct {
	id      string
	attempt int
	task    containerd.Task
	pid     uint32
	ip      netip.Addr
	created time.Time
}

// containerState is one init or app container of the pod across its
// restarts. attempt is its restart count; id names the container of the
// current attempt in containerd.
type containerState struct {
	name    string
	init    bool
	attempt int
	id      string
	image   string // the normalized image name
	imageID string
	task    containerd.Task
	pid     uint32
	cgroup  string

	running   bool
	startedAt time.Time
	exited    *corev1.ContainerStateTerminated // this attempt's end
	last      *corev1.ContainerStateTerminated // the previous attempt's end

	waitReason, waitMessage string
	nextStart               time.Time     // no (re)start before
	backoff                 time.Duration // the next crash back-off
	backoffReason           string        // what waiting means while in back-off
	pullBackoff             time.Duration

	started     bool // startup probe passed (or none)
	ready       bool // readiness probe passed (or none)
	stopProbes  context.CancelFunc
	probeFailed string // why liveness or startup killed it
}

func (c *containerState) succeeded() bool {
	return !c.running && c.exited != nil && c.exited.ExitCode == 0
}

func (pw *podWorker) kick() {
	select {
	case pw.kickC <- struct{}{}:
	default:
	}
}

func (pw *podWorker) container(name string, init bool) *containerState {
	c, ok := pw.containers[name]
	if !ok {
		c = &containerState{name: name, init: init}
		pw.containers[name] = c
	}
	return c
}

// podHash is the short, fixed-length stand-in for a pod UID in container IDs,
// which containerd limits to 76 characters.
func podHash(uid types.UID) string {
	sum := sha256.Sum256([]byte(uid))
	return hex.EncodeToString(sum[:6])
}

func sandboxContainerID(uid types.UID, attempt int) string {
	return fmt.Sprintf("%s_sandbox.%d", podHash(uid), attempt)
}

func appContainerID(uid types.UID, name string, attempt int) string {
	if len(name) > maxNameInID {
		name = name[:maxNameInID]
	}
	return fmt.Sprintf("%s.%s.%d", podHash(uid), name, attempt)
}

func (r *Runtime) podDir(uid types.UID) string {
	return filepath.Join(r.cfg.DataDir, "pods", string(uid))
}

func (r *Runtime) podCgroup(uid types.UID) string {
	return fmt.Sprintf("%s/pod%s", r.cfg.CgroupParent, uid)
}

// ErrClosed is returned by SyncPod after Close.
var ErrClosed = errors.New("runtime closed")

// SyncPod drives the pod towards its spec and returns its status. It is
// idempotent: it creates the pause container and network when missing, runs
// the init containers in order, then starts the app containers, and returns
// without waiting for anything to finish. Afterwards the pod's own goroutine
// keeps restarting containers (restartPolicy, with back-off), running probes
// and reporting changes on Changes, until KillPod or Close. A pod the
// runtime has not seen but containerd holds (an agent restart) is adopted:
// its running containers are kept.
func (r *Runtime) SyncPod(ctx context.Context, pod *corev1.Pod) (corev1.PodStatus, error) {
	if pod.UID == "" {
		return corev1.PodStatus{}, fmt.Errorf("sync pod %s/%s: no uid", pod.Namespace, pod.Name)
	}
	pw, err := r.worker(pod)
	if err != nil {
		return corev1.PodStatus{}, err
	}
	reply := make(chan corev1.PodStatus, 1)
	select {
	case pw.syncC <- reply:
	case <-pw.done:
		return corev1.PodStatus{}, fmt.Errorf("sync pod %s/%s: pod is being removed", pod.Namespace, pod.Name)
	case <-ctx.Done():
		return corev1.PodStatus{}, ctx.Err()
	}
	select {
	case st := <-reply:
		return st, nil
	case <-pw.done:
		return corev1.PodStatus{}, fmt.Errorf("sync pod %s/%s: pod is being removed", pod.Namespace, pod.Name)
	case <-ctx.Done():
		return corev1.PodStatus{}, ctx.Err()
	}
}

// worker returns the pod's worker, starting one (which first adopts what
// containerd holds of the pod) when there is none. It records pod as the
// desired state.
func (r *Runtime) worker(pod *corev1.Pod) (*podWorker, error) {
	// Lock order: a pod's mu before r.mu (the worker tracks containers
	// while reconciling), so r.mu is released before taking pw.mu.
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil, ErrClosed
	}
	if pw, ok := r.pods[pod.UID]; ok {
		r.mu.Unlock()
		pw.mu.Lock()
		pw.pod = pod.DeepCopy()
		pw.mu.Unlock()
		return pw, nil
	}
	defer r.mu.Unlock()
	ctx, cancel := context.WithCancel(r.nsCtx(context.Background()))
	pw := &podWorker{
		uid:        pod.UID,
		kickC:      make(chan struct{}, 1),
		syncC:      make(chan chan corev1.PodStatus),
		cancel:     cancel,
		done:       make(chan struct{}),
		pod:        pod.DeepCopy(),
		containers: map[string]*containerState{},
		transition: map[corev1.PodConditionType]conditionState{},
	}
	r.pods[pod.UID] = pw
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer close(pw.done)
		r.runPod(ctx, pw)
	}()
	return pw, nil
}

// runPod is the pod's goroutine.
func (r *Runtime) runPod(ctx context.Context, pw *podWorker) {
	pw.mu.Lock()
	if err := r.adopt(ctx, pw); err != nil {
		r.podLog(pw.pod).Warn("adopt pod from containerd", "err", err)
	}
	pw.mu.Unlock()

	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		var reply chan corev1.PodStatus
		select {
		case <-ctx.Done():
			pw.mu.Lock()
			for _, c := range pw.containers {
				if c.stopProbes != nil {
					c.stopProbes()
				}
			}
			pw.mu.Unlock()
			return
		case reply = <-pw.syncC:
		case <-pw.kickC:
		case <-timer.C:
		}
		pw.mu.Lock()
		next := r.reconcile(ctx, pw)
		st := r.status(pw)
		changed := pw.reported == nil || !statusEqual(*pw.reported, st)
		pw.reported = &st
		pw.mu.Unlock()
		if reply != nil {
			reply <- st
		} else if changed {
			r.changes.notify(pw.uid)
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(next)
	}
}

func (r *Runtime) podLog(pod *corev1.Pod) *slog.Logger {
	return r.log.With("pod", pod.Namespace+"/"+pod.Name, "uid", pod.UID)
}

// reconcile does, now, whatever the pod needs and can be done without
// waiting, and returns when it wants to be called again at the latest.
func (r *Runtime) reconcile(ctx context.Context, pw *podWorker) time.Duration {
	now := time.Now()
	next := resyncPeriod
	due := func(t time.Time) {
		if d := t.Sub(now); d < next {
			next = max(d, 10*time.Millisecond)
		}
	}
	log := r.podLog(pw.pod)

	if err := r.ensureSandbox(ctx, pw, now); err != nil {
		if !errors.Is(err, errSandboxBackoff) {
			if ctx.Err() == nil {
				log.Warn("pod sandbox", "err", err)
			}
			pw.podError = err.Error()
		}
		due(pw.retryAt)
		return next
	}
	pw.podError = ""
	r.refreshContainers(ctx, pw)

	spec := &pw.pod.Spec
	for _, cs := range spec.InitContainers {
		c := pw.container(cs.Name, true)
		if c.succeeded() {
			continue
		}
		if c.running {
			return next
		}
		if c.exited != nil && spec.RestartPolicy == corev1.RestartPolicyNever {
			return next // the pod failed
		}
		if c.nextStart.After(now) {
			c.waitReason = c.backoffReason
			r.backOffEvent(pw.pod, c, cs.Image)
			due(c.nextStart)
			return next
		}
		r.startContainer(ctx, pw, c, &cs)
		if !c.running {
			due(c.nextStart)
		}
		return next
	}

	var wg sync.WaitGroup
	for i := range spec.Containers {
		cs := &spec.Containers[i]
		c := pw.container(cs.Name, false)
		if c.running || (c.exited != nil && !shouldRestart(spec.RestartPolicy, c.exited.ExitCode)) {
			continue
		}
		if c.nextStart.After(now) {
			c.waitReason = c.backoffReason
			r.backOffEvent(pw.pod, c, cs.Image)
			due(c.nextStart)
			continue
		}
		// The containers of a pod start side by side.
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.startContainer(ctx, pw, c, cs)
		}()
	}
	wg.Wait()
	for _, c := range pw.containers {
		if !c.running && c.nextStart.After(now) {
			due(c.nextStart)
		}
	}
	return next
}

// backOffEvent records that c waits in back-off, as the kubelet records
// it on every sync in back-off (the recorder counts the repeats).
func (r *Runtime) backOffEvent(pod *corev1.Pod, c *containerState, image string) {
	switch c.backoffReason {
	case reasonCrashLoopBackOff:
		r.event(pod, c, corev1.EventTypeWarning, "BackOff", "Back-off restarting failed container %s in pod %s_%s(%s)", c.name, pod.Name, pod.Namespace, pod.UID)
	case reasonImagePullBackOff:
		r.event(pod, c, corev1.EventTypeWarning, "BackOff", "Back-off pulling image %q", image)
	}
}

// willRestart says whether a container that exited with exitCode runs
// again: an init container until it succeeds (unless the policy is Never),
// an app container as restartPolicy says.
func willRestart(policy corev1.RestartPolicy, init bool, exitCode int32) bool {
	if init {
		return exitCode != 0 && policy != corev1.RestartPolicyNever
	}
	return shouldRestart(policy, exitCode)
}

func shouldRestart(policy corev1.RestartPolicy, exitCode int32) bool {
	switch policy {
	case corev1.RestartPolicyNever:
		return false
	case corev1.RestartPolicyOnFailure:
		return exitCode != 0
	default:
		return true
	}
}

// nextBackoff applies Kubernetes' crash back-off to c after an exit at
// finished: the first restart is immediate, the next waits 10s, then 20s...
// up to 5 minutes; a container that ran for 10 minutes starts over.
func (c *containerState) scheduleRestart(started, finished time.Time) {
	if finished.Sub(started) >= backoffResetRunTime {
		c.backoff = 0
	}
	if c.backoff == 0 {
		c.nextStart = finished
		c.backoff = initialBackoff
	} else {
		c.nextStart = finished.Add(c.backoff)
		c.backoff = min(2*c.backoff, maxBackoff)
	}
	c.backoffReason = reasonCrashLoopBackOff
}

// schedulePullRetry applies the same back-off to a failed image pull.
func (c *containerState) schedulePullRetry(now time.Time) {
	if c.pullBackoff == 0 {
		c.pullBackoff = initialBackoff
	}
	c.nextStart = now.Add(c.pullBackoff)
	c.pullBackoff = min(2*c.pullBackoff, maxBackoff)
	c.backoffReason = reasonImagePullBackOff
}

// adopt loads what containerd holds of the pod: the newest attempt of each
// container is kept (running ones keep running), older ones are removed.
func (r *Runtime) adopt(ctx context.Context, pw *podWorker) error {
	found, err := r.podContainers(ctx, pw.uid)
	if err != nil {
		return err
	}
	if len(found) == 0 {
		return nil
	}
	log := r.podLog(pw.pod)
	newest := map[string]foundContainer{}
	var stale []foundContainer
	for _, fc := range found {
		key := fc.kind + "/" + fc.name
		if cur, ok := newest[key]; ok {
			if cur.attempt > fc.attempt {
				stale = append(stale, fc)
				continue
			}
			stale = append(stale, cur)
		}
		newest[key] = fc
	}
	for _, fc := range stale {
		r.removeContainer(ctx, fc.container)
	}
	keys := make([]string, 0, len(newest))
	for k := range newest {
		keys = append(keys, k)
	}
	// The sandbox first: the containers' probes need its namespace.
	sort.Slice(keys, func(i, j int) bool {
		si, sj := newest[keys[i]].kind == kindSandbox, newest[keys[j]].kind == kindSandbox
		if si != sj {
			return si
		}
		return keys[i] < keys[j]
	})
	for _, key := range keys {
		fc := newest[key]
		task, status := r.loadTask(ctx, fc.container)
		if fc.kind == kindSandbox {
			if status != containerd.Running {
				// A dead sandbox is replaced by the next reconcile.
				r.removeSandboxContainer(ctx, pw, fc.container, task)
				pw.sandbox.attempt = fc.attempt + 1
				continue
			}
			ip, _ := netip.ParseAddr(fc.labels[labelPodIP])
			pw.sandbox = sandboxState{id: fc.container.ID(), attempt: fc.attempt, task: task, pid: task.Pid(), ip: ip, created: fc.created}
			r.trackContainer(pw.uid, fc.container.ID())
			continue
		}
		c := pw.container(fc.name, fc.kind == kindInit)
		c.attempt = fc.attempt
		c.id = fc.container.ID()
		c.image = fc.image
		c.cgroup = r.podCgroup(pw.uid) + "/" + c.id
		c.last = terminationFromLabels(fc.labels, labelLastExitCode, labelLastReason, labelLastStarted, labelLastFinished, fc.labels[labelLastContainer])
		c.startedAt = fc.created
		r.trackContainer(pw.uid, c.id)
		switch {
		case task != nil && (status == containerd.Running || status == containerd.Stopped || status == containerd.Paused):
			// A stopped one is finished by the next reconcile.
			c.task, c.pid, c.running = task, task.Pid(), true
			if status == containerd.Running {
				r.startProbes(ctx, pw, c)
			}
		case task == nil && fc.labels[labelExitCode] != "":
			c.exited = terminationFromLabels(fc.labels, labelExitCode, labelExitReason, labelExitStarted, labelExitFinished, containerIDPrefix+c.id)
			if willRestart(pw.pod.Spec.RestartPolicy, c.init, c.exited.ExitCode) {
				c.scheduleRestart(c.exited.StartedAt.Time, c.exited.FinishedAt.Time)
			}
		default:
			// Created but never started: start this attempt afresh.
			if task != nil {
				task.Delete(ctx, containerd.WithProcessKill)
			}
			r.removeContainer(ctx, fc.container)
			r.untrackContainer(c.id)
			c.id = ""
		}
	}
	log.Info("adopted pod from containerd", "sandbox", pw.sandbox.id, "containers", len(newest))
	return nil
}

func terminationFromLabels(labels map[string]string, code, reason, started, finished, containerID string) *corev1.ContainerStateTerminated {
	v, ok := labels[code]
	if !ok {
		return nil
	}
	n, _ := strconv.Atoi(v)
	t := &corev1.ContainerStateTerminated{ExitCode: int32(n), Reason: labels[reason], ContainerID: containerID}
	if ts, err := time.Parse(time.RFC3339Nano, labels[started]); err == nil {
		t.StartedAt = metav1.NewTime(ts)
	}
	if ts, err := time.Parse(time.RFC3339Nano, labels[finished]); err == nil {
		t.FinishedAt = metav1.NewTime(ts)
	}
	return t
}

func (r *Runtime) trackContainer(uid types.UID, id string) {
	r.mu.Lock()
	r.byContainer[id] = uid
	r.mu.Unlock()
}

func (r *Runtime) untrackContainer(id string) {
	r.mu.Lock()
	delete(r.byContainer, id)
	r.mu.Unlock()
}
