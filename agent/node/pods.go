package node

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"

	"github.com/skep-io/skep/agent/dns"
	"github.com/skep-io/skep/agent/network"
	"github.com/skep-io/skep/agent/runtime"
	"github.com/skep-io/skep/controlplane/api"
	"github.com/skep-io/skep/controlplane/client"
	"github.com/skep-io/skep/controlplane/client/events"
)

// cgroupParent is the cgroup path of the node's pods: below the cgroup
// root the socket programs attach to, so every pod is balanced.
func cgroupParent(cgroupRoot string) string {
	rel := strings.TrimPrefix(cgroupRoot, "/sys/fs/cgroup/unified")
	rel = strings.TrimPrefix(rel, "/sys/fs/cgroup")
	return filepath.Join("/", rel, "skep-pods")
}

// waitPodCIDR waits until the control plane has given the node its pod
// CIDR (the nodeipam controller sets it once).
func (a *Agent) waitPodCIDR(ctx context.Context) (netip.Prefix, error) {
	for {
		obj, err := a.c.Get(ctx, nodesR, "", a.cfg.Name)
		if err == nil {
			if cidr := obj.(*corev1.Node).Spec.PodCIDR; cidr != "" {
				return netip.ParsePrefix(cidr)
			}
		}
		select {
		case <-ctx.Done():
			return netip.Prefix{}, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// podHost is what runs pods on this node: the pod network, the container
// runtime and the node-local DNS.
type podHost struct {
	net     *network.Network
	rt      *runtime.Runtime
	dnsAddr netip.Addr
}

func (a *Agent) startPodHost(ctx context.Context, podCIDR netip.Prefix) (*podHost, error) {
	if err := os.WriteFile(filepath.Join(a.cfg.DataDir, "pod-cidr"), []byte(podCIDR.String()), 0o600); err != nil {
		return nil, fmt.Errorf("remember the pod CIDR: %w", err)
	}
	nw, err := network.New(ctx, network.Config{NodeName: a.cfg.Name, PodCIDR: podCIDR, ClusterCIDR: a.cfg.ClusterCIDR,
		DataDir: filepath.Join(a.cfg.DataDir, "network"), Logger: a.log})
	if err != nil {
		return nil, fmt.Errorf("set up the pod network: %w", err)
	}
	dnsAddr := podCIDR.Addr().Next() // the bridge: every pod of the node reaches it
	rt, err := runtime.New(ctx, runtime.Config{
		NodeName: a.cfg.Name, DataDir: filepath.Join(a.cfg.DataDir, "runtime"), ContainerdAddress: a.cfg.ContainerdAddress,
		CgroupParent: cgroupParent(a.cfg.CgroupRoot), Network: nw, Logger: a.log, Events: a.events,
		ResolvConf: func(pod *corev1.Pod) []byte {
			return dns.ResolvConf(dnsAddr.String(), pod.Namespace, dns.DefaultDomain)
		},
	})
	if err != nil {
		nw.Close()
		return nil, fmt.Errorf("start the container runtime: %w", err)
	}
	if err := a.importImages(ctx, rt); err != nil {
		rt.Close()
		nw.Close()
		return nil, err
	}
	return &podHost{net: nw, rt: rt, dnsAddr: dnsAddr}, nil
}

// startPodHostForCleanup opens the network and runtime of an earlier run
// without importing images, to take them down.
func (a *Agent) startPodHostForCleanup(ctx context.Context, podCIDR netip.Prefix) (*podHost, error) {
	saved := a.cfg.ImagesDir
	a.cfg.ImagesDir = ""
	defer func() { a.cfg.ImagesDir = saved }()
	return a.startPodHost(ctx, podCIDR)
}

func (h *podHost) Close() {
	h.rt.Close()
	h.net.Close()
}

// importImages loads every OCI tarball of --images onto the node, for
// machines with no registry.
func (a *Agent) importImages(ctx context.Context, rt *runtime.Runtime) error {
	if a.cfg.ImagesDir == "" {
		return nil
	}
	tars, err := filepath.Glob(filepath.Join(a.cfg.ImagesDir, "*.tar"))
	if err != nil || len(tars) == 0 {
		return fmt.Errorf("--images %s: no *.tar images there", a.cfg.ImagesDir)
	}
	for _, t := range tars {
		f, err := os.Open(t)
		if err != nil {
			return err
		}
		refs, err := rt.ImportImage(ctx, f)
		f.Close()
		if err != nil {
			return fmt.Errorf("import %s: %w", t, err)
		}
		a.log.Info("image imported", "file", t, "refs", refs)
	}
	return nil
}

// podSyncer runs the pods bound to this node, as the kubelet does: each
// pod in the cache is synced through the runtime and its status written
// back; pods marked for deletion are stopped and then removed; containers
// of pods the control plane no longer has are killed.
type podSyncer struct {
	a      *Agent
	host   *podHost
	pods   *client.Informer
	slices *client.Informer // EndpointSlices, for servedBy

	mu          sync.Mutex
	pending     map[string]bool // ns/name
	terminating map[types.UID]bool
	kick        chan struct{}
}

func (a *Agent) runPods(ctx context.Context, host *podHost, pods, slices *client.Informer) {
	s := &podSyncer{a: a, host: host, pods: pods, slices: slices, pending: map[string]bool{}, terminating: map[types.UID]bool{}, kick: make(chan struct{}, 1)}
	pods.AddHandlers(client.Handlers{
		OnAdd:    func(o api.Object) { s.enqueue(client.KeyOf(o)) },
		OnUpdate: func(_, o api.Object) { s.enqueue(client.KeyOf(o)) },
		OnDelete: func(o api.Object) { s.enqueue(client.KeyOf(o)) },
	})
	if !client.WaitForSync(ctx, pods) {
		return
	}
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case uid := <-host.rt.Changes():
				for _, o := range pods.List() {
					if o.GetUID() == uid {
						s.enqueue(client.KeyOf(o))
					}
				}
			}
		}
	}()
	resync := time.NewTicker(10 * time.Second)
	defer resync.Stop()
	s.resyncAll(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-resync.C:
			s.resyncAll(ctx)
		case <-s.kick:
		}
		s.mu.Lock()
		keys := s.pending
		s.pending = map[string]bool{}
		s.mu.Unlock()
		for k := range keys {
			s.sync(ctx, k)
		}
	}
}

func (s *podSyncer) enqueue(key string) {
	s.mu.Lock()
	s.pending[key] = true
	s.mu.Unlock()
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// resyncAll syncs every cached pod and kills what runs without one: a pod
// deleted while the agent was away.
func (s *podSyncer) resyncAll(ctx context.Context) {
	want := map[types.UID]bool{}
	for _, o := range s.pods.List() {
		want[o.GetUID()] = true
		s.enqueue(client.KeyOf(o))
	}
	running, err := s.host.rt.ListPods(ctx)
	if err != nil {
		s.a.log.Warn("list pods in the runtime", "err", err)
		return
	}
	for _, rp := range running {
		if !want[rp.UID] {
			s.a.log.Info("removing pod the control plane no longer has", "pod", rp.Namespace+"/"+rp.Name)
			if err := s.host.rt.KillPod(ctx, rp.UID, 0); err != nil {
				s.a.log.Warn("remove pod", "pod", rp.Namespace+"/"+rp.Name, "err", err)
			}
		}
	}
}

func (s *podSyncer) sync(ctx context.Context, key string) {
	obj, ok := s.pods.Get(splitKey(key))
	if !ok {
		return // gone: resyncAll kills what is left of it
	}
	pod := obj.(*corev1.Pod)
	log := s.a.log.With("pod", key)
	if pod.DeletionTimestamp != nil {
		s.mu.Lock()
		started := s.terminating[pod.UID]
		s.terminating[pod.UID] = true
		s.mu.Unlock()
		if !started {
			go s.terminate(ctx, pod)
		}
		return
	}
	status, err := s.host.rt.SyncPod(ctx, pod)
	if err != nil {
		log.Warn("sync pod", "err", err)
	}
	status.HostIP = s.a.cfg.NodeIP.String()
	status.HostIPs = []corev1.HostIP{{IP: status.HostIP}}
	if equality.Semantic.DeepEqual(status, pod.Status) {
		return
	}
	next := pod.DeepCopy()
	next.Status = status
	keepScheduled(pod, next)
	if _, err := s.a.c.UpdateStatus(ctx, podsR, next); err != nil {
		if apierrors.IsConflict(err) {
			s.enqueue(key) // the informer will bring the newer pod
		} else if !apierrors.IsNotFound(err) {
			log.Warn("write pod status", "err", err)
		}
	}
}

// drainDelay is how long a terminating pod keeps serving after its address
// left the EndpointSlices this agent sees, for every node's dataplane to catch
// up: no new connection is sent to a pod that already stopped. The iptables
// mode syncs at most once a second and its restore takes time of its own,
// so this is longer than eBPF alone would need.
const drainDelay = 3 * time.Second

// terminate stops a pod marked for deletion, as the kubelet does, but only
// once no Service sends it new connections: it waits (within the grace
// period) until no EndpointSlice has the pod's address ready, then
// drainDelay, then sends SIGTERM, and finally removes the pod object.
func (s *podSyncer) terminate(ctx context.Context, pod *corev1.Pod) {
	log := s.a.log.With("pod", pod.Namespace+"/"+pod.Name)
	defer func() {
		s.mu.Lock()
		delete(s.terminating, pod.UID)
		s.mu.Unlock()
	}()
	grace := 30 * time.Second
	if pod.DeletionGracePeriodSeconds != nil {
		grace = time.Duration(*pod.DeletionGracePeriodSeconds) * time.Second
	}
	deadline := time.Now().Add(grace)
	if grace > 0 && pod.Status.PodIP != "" {
		drainBy := time.Now().Add(min(grace/2, 10*time.Second))
		for s.servedBy(pod.Status.PodIP) && time.Now().Before(drainBy) {
			select {
			case <-ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(min(drainDelay, time.Until(deadline))):
		}
	}
	s.a.recordKilling(pod)
	if err := s.host.rt.KillPod(ctx, pod.UID, max(time.Until(deadline), 0)); err != nil {
		log.Warn("stop pod", "err", err)
		s.enqueue(client.KeyOf(pod)) // try again
		return
	}
	zero := int64(0)
	err := s.a.c.Delete(ctx, podsR, pod.Namespace, pod.Name, client.DeleteOptions{GracePeriodSeconds: &zero})
	if err != nil && !apierrors.IsNotFound(err) {
		log.Warn("remove terminated pod", "err", err)
		return
	}
	log.Info("pod stopped and removed")
}

// recordKilling records, as the kubelet does when a pod is deleted,
// "Stopping container X" for each of its containers that runs.
func (a *Agent) recordKilling(pod *corev1.Pod) {
	for _, st := range pod.Status.ContainerStatuses {
		if st.State.Running == nil {
			continue
		}
		ref := events.Ref(pod)
		ref.FieldPath = "spec.containers{" + st.Name + "}"
		a.events.Record(ref, corev1.EventTypeNormal, "Killing", "Stopping container "+st.Name)
	}
}

// servedBy reports whether an EndpointSlice still lists ip as ready (an
// unset condition meaning ready), as the Endpoints listed it under
// addresses: while it does, dataplanes may send it new connections.
func (s *podSyncer) servedBy(ip string) bool {
	for _, o := range s.slices.List() {
		for _, e := range o.(*discoveryv1.EndpointSlice).Endpoints {
			if (e.Conditions.Ready == nil || *e.Conditions.Ready) && slices.Contains(e.Addresses, ip) {
				return true
			}
		}
	}
	return false
}

// keepScheduled carries the PodScheduled condition the scheduler set into
// the status the runtime reports.
func keepScheduled(old, next *corev1.Pod) {
	for _, c := range old.Status.Conditions {
		if c.Type != corev1.PodScheduled {
			continue
		}
		for _, n := range next.Status.Conditions {
			if n.Type == corev1.PodScheduled {
				return
			}
		}
		next.Status.Conditions = append(next.Status.Conditions, c)
	}
}

func splitKey(key string) (string, string) {
	ns, name, _ := strings.Cut(key, "/")
	return ns, name
}

// syncRoutes keeps a route to every other node's pod CIDR via its
// InternalIP.
func (a *Agent) syncRoutes(ctx context.Context, nw *network.Network, nodes *client.Informer) {
	kick := make(chan struct{}, 1)
	poke := func() {
		select {
		case kick <- struct{}{}:
		default:
		}
	}
	nodes.AddHandlers(client.Handlers{OnAdd: func(api.Object) { poke() }, OnUpdate: func(_, _ api.Object) { poke() }, OnDelete: func(api.Object) { poke() }})
	if !client.WaitForSync(ctx, nodes) {
		return
	}
	for {
		peers := map[string]network.Peer{}
		for _, o := range nodes.List() {
			n := o.(*corev1.Node)
			if n.Name == a.cfg.Name || n.Spec.PodCIDR == "" {
				continue
			}
			cidr, err := netip.ParsePrefix(n.Spec.PodCIDR)
			if err != nil {
				continue
			}
			for _, ad := range n.Status.Addresses {
				if ad.Type == corev1.NodeInternalIP {
					if ip, err := netip.ParseAddr(ad.Address); err == nil {
						peers[n.Name] = network.Peer{PodCIDR: cidr, NodeIP: ip}
					}
				}
			}
		}
		if err := nw.SyncRoutes(ctx, peers); err != nil {
			a.log.Warn("sync routes to other nodes", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-kick:
		case <-time.After(time.Minute):
		}
	}
}
