package node

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/skep-io/skep/agent/dns"
	"github.com/skep-io/skep/agent/network"

	"github.com/skep-io/skep/agent/dataplane/ebpf"
	"github.com/skep-io/skep/agent/dataplane/iptables"
	"github.com/skep-io/skep/agent/dataplane/nftables"

	"github.com/skep-io/skep/controlplane/client"
	"github.com/skep-io/skep/controlplane/client/events"
)

// Run runs the agent until ctx ends. The dataplane's programs and rules,
// and the pods, stay in place when it returns, so Services keep answering
// while the agent restarts.
func (a *Agent) Run(ctx context.Context) error {
	go a.keepCredential(ctx)
	ln, err := a.listenEndpoint()
	if err != nil {
		return err
	}
	defer ln.Close()
	if err := retry(ctx, "register node "+a.cfg.Name, a.log, func() error { _, err := a.register(ctx); return err }); err != nil {
		return err
	}
	a.log.Info("node registered", "ip", a.cfg.NodeIP, "dataplane", a.cfg.Dataplane)
	go a.keepLease(ctx)
	var tlsCfg *tls.Config
	if err := retry(ctx, "get the agent's serving certificate", a.log, func() (err error) { tlsCfg, err = a.servingTLS(ctx); return err }); err != nil {
		return err
	}

	dp, err := a.newDataplane(ctx)
	if err != nil {
		return fmt.Errorf("start the %s dataplane: %w", a.cfg.Dataplane, err)
	}
	defer dp.Close()

	svcs := client.NewInformer(a.c, servicesR, client.InformerOptions{Logger: a.log})
	slices := client.NewInformer(a.c, slicesR, client.InformerOptions{Logger: a.log})
	nodes := client.NewInformer(a.c, nodesR, client.InformerOptions{Logger: a.log})
	pods := client.NewInformer(a.c, podsR, client.InformerOptions{FieldSelector: "spec.nodeName=" + a.cfg.Name, Logger: a.log})
	var done sync.WaitGroup
	run := func(f func()) {
		done.Add(1)
		go func() { defer done.Done(); f() }()
	}
	defer done.Wait()
	for _, inf := range []*client.Informer{svcs, slices, nodes, pods} {
		run(func() { inf.Run(ctx) })
	}
	// The agent reports on its pods as a kubelet: component "kubelet",
	// host the node, through its own credential (which may write Events).
	broadcaster := events.NewBroadcaster(a.c, events.Options{Logger: a.log})
	a.events = broadcaster.Recorder(corev1.EventSource{Component: "kubelet", Host: a.cfg.Name})
	run(func() { broadcaster.Run(ctx) })
	ep := &endpoint{node: a.cfg.Name, pods: pods, log: a.log}
	run(func() { a.serveEndpoint(ctx, ln, tlsCfg, ep) })
	run(func() { a.syncServices(ctx, dp, svcs, slices) })
	run(func() { a.serveMetrics(ctx, dp) })
	run(func() { a.announceLoadBalancers(ctx, svcs, nodes) })

	podCIDR, err := a.waitPodCIDR(ctx)
	if err != nil {
		return nil // stopped before the control plane gave a pod CIDR
	}
	host, err := a.startPodHost(ctx, podCIDR)
	if err != nil {
		return err
	}
	defer host.Close()
	ep.rt.Store(host.rt)
	run(func() { a.watchRuntime(ctx, host.rt, nodes) })
	run(func() { a.syncRoutes(ctx, host.net, nodes) })
	resolver, err := dns.New(dns.Config{Listen: []string{netip.AddrPortFrom(host.dnsAddr, 53).String()}, Upstreams: a.cfg.DNSUpstreams, Logger: a.log},
		dnsSource{svcs: svcs, slices: slices, pods: pods})
	if err != nil {
		return fmt.Errorf("start cluster DNS: %w", err)
	}
	run(func() {
		if err := resolver.Run(ctx); err != nil && ctx.Err() == nil {
			a.log.Error("cluster DNS stopped", "err", err)
		}
	})
	a.log.Info("node ready for pods", "podCIDR", podCIDR, "dns", host.dnsAddr)
	a.runPods(ctx, host, pods, slices)
	return nil
}

// dnsSource answers the DNS server's questions from the agent's caches.
type dnsSource struct{ svcs, slices, pods *client.Informer }

func (s dnsSource) Services() []*corev1.Service { return typed[*corev1.Service](s.svcs.List()) }
func (s dnsSource) EndpointSlices() []*discoveryv1.EndpointSlice {
	return typed[*discoveryv1.EndpointSlice](s.slices.List())
}
func (s dnsSource) Pods() []*corev1.Pod { return typed[*corev1.Pod](s.pods.List()) }

// Cleanup removes everything the agent made on this node: its pods (and
// with them their veths, mounts and cgroups), the runtime's containerd,
// the pod network and routes, and both dataplanes' programs, pins, links
// and chains: `skep agent --cleanup`.
func Cleanup(ctx context.Context, cfg Config) error {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	var errs []error
	if data, err := os.ReadFile(filepath.Join(cfg.DataDir, "pod-cidr")); err == nil {
		podCIDR, err := netip.ParsePrefix(strings.TrimSpace(string(data)))
		if err == nil {
			errs = append(errs, cleanupPods(ctx, cfg, podCIDR))
		}
	}
	if cfg.Interface != "" {
		errs = append(errs, network.AnnounceAddresses(cfg.Interface, nil))
	}
	errs = append(errs, CleanupDataplanes(ctx, cfg), removePodCgroups(cgroupParent(cfg.CgroupRoot)))
	return errors.Join(errs...)
}

// removePodCgroups removes the empty cgroups runc left for the node's pods
// in every hierarchy (cgroup v1 controllers and the unified one), deepest
// first.
func removePodCgroups(parent string) error {
	roots, _ := filepath.Glob("/sys/fs/cgroup/*")
	var errs []error
	for _, root := range append(roots, "/sys/fs/cgroup") {
		dir := filepath.Join(root, parent)
		if _, err := os.Stat(dir); err != nil {
			continue
		}
		var dirs []string
		filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			if err := os.Remove(dirs[i]); err != nil && !os.IsNotExist(err) {
				errs = append(errs, fmt.Errorf("remove cgroup %s: %w", dirs[i], err))
			}
		}
		// In the v1 hierarchies runc also made the parents; they hold
		// nothing of anyone else's when empty. The unified parent is the
		// node's own cgroup, which whoever made it removes.
		if root == "/sys/fs/cgroup/unified" || root == "/sys/fs/cgroup" {
			continue
		}
		for d := filepath.Dir(dir); d != root && strings.HasPrefix(d, root+"/"); d = filepath.Dir(d) {
			if os.Remove(d) != nil {
				break
			}
		}
	}
	return errors.Join(errs...)
}

func cleanupPods(ctx context.Context, cfg Config, podCIDR netip.Prefix) error {
	a := &Agent{cfg: cfg, log: cfg.Logger}
	host, err := a.startPodHostForCleanup(ctx, podCIDR)
	if err != nil {
		return err
	}
	var errs []error
	pods, err := host.rt.ListPods(ctx)
	errs = append(errs, err)
	for _, p := range pods {
		errs = append(errs, host.rt.KillPod(ctx, p.UID, 0))
	}
	errs = append(errs, host.rt.Close(), host.net.Cleanup(ctx))
	host.net.Close()
	return errors.Join(errs...)
}

// CleanupDataplanes removes every program, pin, link, chain and table any
// dataplane made on this node: `skep agent --cleanup`.
func CleanupDataplanes(ctx context.Context, cfg Config) error {
	return errors.Join(
		ebpf.Cleanup(ebpfConfig(cfg, cfg.Logger)),
		iptables.Cleanup(ctx, iptables.DefaultChainPrefix),
		nftables.Cleanup(ctx, nftables.DefaultTable),
	)
}
