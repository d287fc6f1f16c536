// Package runtime runs a node's pods on containerd: it is the part of the
// agent that kubelet's pod lifecycle is in Kubernetes.
//
// A pod is a pause container that owns the pod's network, IPC and UTS
// namespaces, its init containers run in order to completion, then its app
// containers, which join the pause container's namespaces. SyncPod drives a
// pod towards its spec and returns its status; a goroutine per pod keeps
// doing so afterwards (restarts with Kubernetes' back-off, probes) and
// reports status changes on Changes. KillPod removes a pod and everything it
// left on the node. Everything the runtime creates in containerd carries
// labels naming the pod, so that a restarted agent adopts running pods
// instead of restarting them (ListPods, and SyncPod of a pod it has not seen).
//
// # What it leaves on the node
//
// Per pod: containers, tasks and overlay snapshots in containerd (namespace
// Config.Namespace, labels io.skep.*), a directory <DataDir>/pods/<uid> with
// the emptyDir volumes, /etc/hosts, /etc/resolv.conf and the container logs,
// and cgroups <CgroupParent>/pod<uid>/<container id> in every cgroup
// hierarchy. KillPod removes all of it and calls Network.Teardown.
package runtime

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	containerd "github.com/containerd/containerd"
	eventtypes "github.com/containerd/containerd/api/events"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/typeurl/v2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Network wires a pod's network namespace. agent/network implements it.
type Network interface {
	// Setup wires the pod's network namespace (netnsPath is /proc/<pausepid>/ns/net) and returns the pod IP.
	Setup(ctx context.Context, podID string, netnsPath string) (netip.Addr, error)
	Teardown(ctx context.Context, podID string) error
}

// Config configures a Runtime.
type Config struct {
	// NodeName names the node; it scopes the pods the runtime lists and
	// the default cgroup parent.
	NodeName string
	// DataDir holds the supervised containerd, the pods' volumes and logs.
	DataDir string
	// ContainerdAddress is the socket of an existing containerd. Empty:
	// the runtime starts and supervises its own under DataDir/containerd.
	ContainerdAddress string
	// Namespace is the containerd namespace (default "skep").
	Namespace string
	// CgroupParent is the cgroup every pod of the node lives under
	// (default "/skep/<NodeName>").
	CgroupParent string
	// PauseImage is the image of every pod's first container
	// (default "docker.io/skep/pause:latest").
	PauseImage string
	// Network wires the pods' network namespaces. Required.
	Network Network
	// Logger gets one line per event (default: discard).
	Logger *slog.Logger
	// ResolvConf returns a pod's /etc/resolv.conf; nil, or a nil result,
	// means a copy of the host's.
	ResolvConf func(pod *corev1.Pod) []byte
	// Events records the pods' events (nil: none).
	Events EventRecorder
	// LogDriver is the binary that runs agent/containerlog's driver when
	// started under containerlog.DriverName: its main calls
	// containerlog.RunIfDriver first thing (default: this executable).
	LogDriver string
}

// Defaults.
const (
	DefaultNamespace  = "skep"
	DefaultPauseImage = "docker.io/skep/pause:latest"
	snapshotter       = "overlayfs"
	runcRuntime       = "io.containerd.runc.v2"
)

// Runtime runs pods on containerd. Its methods may be called concurrently.
type Runtime struct {
	cfg      Config
	log      *slog.Logger
	client   *containerd.Client
	ctrd     *Containerd // nil when using an external containerd
	runcRoot string      // empty: the runtime's default
	cgroups  cgroupMounts
	changes  *notifier

	stop func()         // ends the background work and the supervised containerd
	wg   sync.WaitGroup // background goroutines, pod workers included

	mu          sync.Mutex
	closed      bool
	pods        map[types.UID]*podWorker
	byContainer map[string]types.UID // containerd container ID → pod
}

// New connects to containerd (starting its own under cfg.DataDir unless
// cfg.ContainerdAddress names one) and returns a Runtime. The supervised
// containerd is stopped when ctx ends or Close is called; running pods are
// left running for the next Runtime on the same DataDir to adopt.
func New(ctx context.Context, cfg Config) (*Runtime, error) {
	if cfg.NodeName == "" || cfg.DataDir == "" {
		return nil, errors.New("runtime config: NodeName and DataDir are required")
	}
	if cfg.Network == nil {
		return nil, errors.New("runtime config: Network is required")
	}
	if cfg.Namespace == "" {
		cfg.Namespace = DefaultNamespace
	}
	if cfg.CgroupParent == "" {
		cfg.CgroupParent = "/skep/" + cfg.NodeName
	}
	if !filepath.IsAbs(cfg.CgroupParent) {
		return nil, fmt.Errorf("runtime config: CgroupParent %q must be an absolute cgroup path", cfg.CgroupParent)
	}
	if cfg.PauseImage == "" {
		cfg.PauseImage = DefaultPauseImage
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	dataDir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("resolve data dir: %w", err)
	}
	cfg.DataDir = dataDir
	for _, dir := range []string{cfg.DataDir, filepath.Join(cfg.DataDir, "pods"), filepath.Join(cfg.DataDir, "fifo")} {
		if err := os.MkdirAll(dir, 0o711); err != nil {
			return nil, fmt.Errorf("create %s: %w", dir, err)
		}
	}
	cgroups, err := findCgroupMounts()
	if err != nil {
		return nil, err
	}

	bgCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	r := &Runtime{
		cfg:         cfg,
		log:         cfg.Logger.With("node", cfg.NodeName),
		cgroups:     cgroups,
		changes:     newNotifier(),
		pods:        map[types.UID]*podWorker{},
		byContainer: map[string]types.UID{},
	}
	address := cfg.ContainerdAddress
	if address == "" {
		ctrd, err := StartContainerd(bgCtx, filepath.Join(cfg.DataDir, "containerd"), r.log)
		if err != nil {
			cancel()
			return nil, err
		}
		r.ctrd, address, r.runcRoot = ctrd, ctrd.Address(), ctrd.RuncRoot()
	}
	client, err := containerd.New(address, containerd.WithDefaultNamespace(cfg.Namespace), containerd.WithTimeout(10*time.Second))
	if err != nil {
		cancel()
		r.waitContainerd()
		return nil, fmt.Errorf("connect to containerd at %s: %w", address, err)
	}
	r.client = client
	r.stop = cancel

	// ctx ending has the same effect as Close.
	go func() {
		select {
		case <-ctx.Done():
			r.Close()
		case <-bgCtx.Done():
		}
	}()
	r.wg.Add(2)
	go func() { defer r.wg.Done(); r.changes.run(bgCtx) }()
	go func() { defer r.wg.Done(); r.watchExits(bgCtx) }()
	if r.ctrd != nil {
		r.wg.Add(1)
		go func() { defer r.wg.Done(); r.reconnectOnRestart(bgCtx) }()
	}
	r.log.Info("container runtime ready", "containerd", address, "namespace", cfg.Namespace, "cgroup_parent", cfg.CgroupParent)
	return r, nil
}

// Close stops the pod workers and probes, and the supervised containerd.
// Pods keep running: their shims outlive containerd, and the next Runtime
// on the same DataDir adopts them.
func (r *Runtime) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		r.wg.Wait()
		r.waitContainerd()
		return nil
	}
	r.closed = true
	workers := make([]*podWorker, 0, len(r.pods))
	for _, pw := range r.pods {
		workers = append(workers, pw)
	}
	r.mu.Unlock()
	for _, pw := range workers {
		pw.cancel()
	}
	r.stop()
	r.wg.Wait()
	err := r.client.Close()
	r.waitContainerd()
	return err
}

func (r *Runtime) waitContainerd() {
	if r.ctrd != nil {
		<-r.ctrd.Done()
	}
}

// Ping checks that containerd answers; the agent reports the node not
// Ready while it does not.
func (r *Runtime) Ping(ctx context.Context) error {
	if _, err := r.client.Version(ctx); err != nil {
		return fmt.Errorf("containerd: %w", err)
	}
	return nil
}

// Changes delivers the UID of a pod whose status changed (a container
// exited or started, a probe result changed). Bursts for one pod coalesce;
// the receiver calls SyncPod, or reads the status otherwise, to learn what
// changed. It is never closed.
func (r *Runtime) Changes() <-chan types.UID { return r.changes.out }

// nsCtx puts the runtime's containerd namespace on ctx.
func (r *Runtime) nsCtx(ctx context.Context) context.Context {
	return namespaces.WithNamespace(ctx, r.cfg.Namespace)
}

// watchExits kicks the pod worker of every task that exits. The
// subscription breaks when containerd restarts; it is renewed, and every pod
// is kicked since exits may have been missed meanwhile.
func (r *Runtime) watchExits(ctx context.Context) {
	for ctx.Err() == nil {
		subCtx, cancel := context.WithCancel(ctx)
		events, errs := r.client.Subscribe(subCtx, `topic=="/tasks/exit"`)
		r.kickAll()
	receive:
		for {
			select {
			case <-ctx.Done():
				cancel()
				return
			case err := <-errs:
				if err != nil && ctx.Err() == nil {
					r.log.Warn("containerd event stream broke; resubscribing", "err", err)
				}
				break receive
			case env := <-events:
				if env.Namespace != r.cfg.Namespace {
					continue
				}
				ev, err := typeurl.UnmarshalAny(env.Event)
				if err != nil {
					continue
				}
				exit, ok := ev.(*eventtypes.TaskExit)
				if !ok || exit.ID != exit.ContainerID {
					continue // an exec'd process, not a container's
				}
				r.mu.Lock()
				uid, ok := r.byContainer[exit.ContainerID]
				pw := r.pods[uid]
				r.mu.Unlock()
				if ok && pw != nil {
					pw.kick()
				}
			}
		}
		cancel()
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// reconnectOnRestart re-dials the supervised containerd each time it was
// restarted, and has every pod looked at again.
func (r *Runtime) reconnectOnRestart(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.ctrd.Restarted():
		}
		if err := r.client.Reconnect(); err != nil {
			r.log.Warn("reconnect to containerd", "err", err)
		}
		r.kickAll()
	}
}

func (r *Runtime) kickAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, pw := range r.pods {
		pw.kick()
	}
}

// notifier coalesces change notifications per pod and hands them to one
// reader without ever blocking the sender.
type notifier struct {
	mu      sync.Mutex
	pending map[types.UID]struct{}
	wake    chan struct{}
	out     chan types.UID
}

func newNotifier() *notifier {
	return &notifier{pending: map[types.UID]struct{}{}, wake: make(chan struct{}, 1), out: make(chan types.UID)}
}

func (n *notifier) notify(uid types.UID) {
	n.mu.Lock()
	n.pending[uid] = struct{}{}
	n.mu.Unlock()
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

func (n *notifier) run(ctx context.Context) {
	for {
		n.mu.Lock()
		var uid types.UID
		found := false
		for u := range n.pending {
			uid, found = u, true
			delete(n.pending, u)
			break
		}
		n.mu.Unlock()
		if !found {
			select {
			case <-ctx.Done():
				return
			case <-n.wake:
				continue
			}
		}
		select {
		case <-ctx.Done():
			return
		case n.out <- uid:
		}
	}
}
