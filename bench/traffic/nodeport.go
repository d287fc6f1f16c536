package traffic

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/skep-io/skep/bench/report"
	"github.com/skep-io/skep/lab"
)

// The NodePort benchmark's variants: the client outside the cluster (the
// lab's client namespace) connects to node 2's NodePort, where both
// backends run (local), or to node 1's, which forwards to node 2 (remote,
// with source NAT to node 1's address). The reference, direct, connects
// to the backends' pod IPs, routed through node 2.
var nodePortVariants = []variant{
	{name: "direct", mode: "ebpf", note: "the echo pods' IPs, routed from the client through node 2, nodes in eBPF mode"},
	{name: "ebpf-local", mode: "ebpf", service: middleService, entry: 2, note: "node 2's NodePort, backends on node 2, translated by tc on node 2's interface"},
	{name: "ebpf-remote", mode: "ebpf", service: middleService, entry: 1, note: "node 1's NodePort, backends on node 2: tc on node 1 translates, source-NATs to node 1 and forwards"},
	{name: "iptables-local", mode: "iptables", service: middleService, entry: 2, note: "node 2's NodePort through KUBE-NODEPORTS (after every cluster-IP rule of KUBE-SERVICES), masqueraded as kube-proxy does for externalTrafficPolicy Cluster"},
	{name: "iptables-remote", mode: "iptables", service: middleService, entry: 1, note: "node 1's NodePort, DNAT and masquerade on node 1, forwarded to node 2"},
	{name: "direct-iptables", mode: "iptables", note: "the echo pods' IPs through node 2, nodes in iptables mode (node 2's PREROUTING walks KUBE-SERVICES)"},
	{name: "nftables-local", mode: "nftables", service: middleService, entry: 2, note: "node 2's NodePort through kube-proxy's @service-nodeports verdict map, masqueraded as for externalTrafficPolicy Cluster"},
	{name: "nftables-remote", mode: "nftables", service: middleService, entry: 1, note: "node 1's NodePort, DNAT and masquerade on node 1 by the nftables table, forwarded to node 2"},
}

// firstSourceOctet is where the client's extra addresses start, one per
// variant, in the lab's node network: 198.18.k.240 and up, clear of the
// nodes (.11...), the LoadBalancer pool (.200-.207) and the client (.254).
const firstSourceOctet = 240

// RunNodePort is `skep-bench nodeport`: the same loads as RunDataplane
// from the lab's client namespace, outside the cluster, through a
// NodePort with the backend local and remote, in both modes, with each of
// cfg.Sizes other Services installed. It brings its lab up and always
// takes it down. It adds its samples (bench "nodeport") and notes to
// rep, also those measured before a failure.
func RunNodePort(ctx context.Context, cfg Config, rep *report.Report) error {
	return onLab(ctx, cfg, func(cl *cluster) error { return cl.nodePort(ctx, rep) })
}

func (cl *cluster) nodePort(ctx context.Context, rep *report.Report) error {
	cfg := cl.cfg
	backendNode := cl.node(2)
	if err := cl.checkFillerRange(ctx); err != nil {
		return err
	}
	if _, err := cl.create(ctx, deploymentsR, echoDeployment(backendNode)); err != nil {
		return err
	}
	obj, err := cl.create(ctx, servicesR, echoService(middleService, corev1.ServiceTypeNodePort))
	if err != nil {
		return err
	}
	nodePort := obj.(*corev1.Service).Spec.Ports[0].NodePort
	echoes, err := cl.waitPods(ctx, "app=echo", 2, 3*time.Minute)
	if err != nil {
		return err
	}
	var direct []string
	for _, p := range echoes {
		direct = append(direct, net.JoinHostPort(p.Status.PodIP, strconv.Itoa(echoPort)))
	}

	// The client reaches pod IPs only through a route of its own: node 2's
	// pod range via node 2, as a router in front of the cluster could have.
	nodeObj, err := cl.c.Get(ctx, nodesR, "", backendNode)
	if err != nil {
		return fmt.Errorf("get node %s: %w", backendNode, err)
	}
	podCIDR, err := netip.ParsePrefix(nodeObj.(*corev1.Node).Spec.PodCIDR)
	if err != nil {
		return fmt.Errorf("node %s pod range: %w", backendNode, err)
	}
	sources, undo, err := cl.prepareOutsideClient(podCIDR, cl.lab.NodeIP(backendNode), len(nodePortVariants))
	defer undo()
	if err != nil {
		return err
	}
	sourceOf := map[string]string{}
	for i, v := range nodePortVariants {
		sourceOf[v.name] = sources[i].String()
	}
	cl.progress("echo servers %v on %s behind NodePort %d; client %s outside", direct, backendNode, nodePort, cl.lab.ClientIP())

	rep.Notes = append(rep.Notes, nodePortNotes(cfg)...)

	want := func(n int) wantServices {
		return wantServices{atLeast: n + 1, measured: []string{namespace + "/" + middleService}, backends: 2}
	}
	clientNetns := "/run/netns/" + cl.lab.Netns(lab.ClientName)
	installed := 0
	for _, n := range cfg.Sizes {
		if err := cl.fill(ctx, installed, n); err != nil {
			return err
		}
		installed = n
		if err := cl.waitProgrammed(ctx, want(n)); err != nil {
			return err
		}
		err := report.Interleave(cfg.Rounds, variantNames(nodePortVariants), func(round int, name string) error {
			v := findVariant(nodePortVariants, name)
			if err := cl.switchMode(ctx, v.mode, want(n)); err != nil {
				return err
			}
			targets := direct
			if v.service != "" {
				entry := cl.lab.NodeIP(cl.node(v.entry))
				targets = []string{net.JoinHostPort(entry.String(), strconv.Itoa(int(nodePort)))}
			}
			var bpfNodes []string
			if v.mode == "ebpf" {
				bpfNodes = []string{cl.node(1), cl.node(2)}
			}
			return cl.measure(ctx, rep, "nodeport", v.name, n, round, targets, sourceOf[v.name], clientNetns,
				cl.lab.Cgroup(lab.ClientName), lab.ClientName, bpfNodes)
		})
		if err != nil {
			return fmt.Errorf("with N=%d: %w", n, err)
		}
	}
	return nil
}

// prepareOutsideClient gives the lab's client namespace one extra address
// per variant (so that no 4-tuple is reused across paths and modes) and a
// route to podCIDR via gateway (for the direct path). undo removes both;
// Down would remove them with the namespace anyway.
func (cl *cluster) prepareOutsideClient(podCIDR netip.Prefix, gateway netip.Addr, count int) (sources []netip.Addr, undo func(), err error) {
	undo = func() {}
	ns, err := netns.GetFromPath("/run/netns/" + cl.lab.Netns(lab.ClientName))
	if err != nil {
		return nil, undo, fmt.Errorf("open the client's netns: %w", err)
	}
	h, err := netlink.NewHandleAt(ns)
	ns.Close()
	if err != nil {
		return nil, undo, fmt.Errorf("netlink in the client's netns: %w", err)
	}
	eth0, err := h.LinkByName("eth0")
	if err != nil {
		h.Close()
		return nil, undo, fmt.Errorf("find eth0 in the client's netns: %w", err)
	}
	var addrs []*netlink.Addr
	var route *netlink.Route
	undo = func() {
		for _, a := range addrs {
			h.AddrDel(eth0, a)
		}
		if route != nil {
			h.RouteDel(route)
		}
		h.Close()
	}
	client := cl.lab.ClientIP().As4()
	for i := range count {
		a := client
		a[3] = byte(firstSourceOctet + i)
		addr := netip.AddrFrom4(a)
		nla := &netlink.Addr{IPNet: &net.IPNet{IP: addr.AsSlice(), Mask: net.CIDRMask(32, 32)}}
		if err := h.AddrAdd(eth0, nla); err != nil {
			return nil, undo, fmt.Errorf("add %s to the client: %w", addr, err)
		}
		addrs = append(addrs, nla)
		sources = append(sources, addr)
	}
	r := &netlink.Route{LinkIndex: eth0.Attrs().Index, Dst: &net.IPNet{IP: podCIDR.Addr().AsSlice(), Mask: net.CIDRMask(podCIDR.Bits(), 32)},
		Gw: gateway.AsSlice()}
	if err := h.RouteAdd(r); err != nil {
		return nil, undo, fmt.Errorf("route %s via %s in the client: %w", podCIDR, gateway, err)
	}
	route = r
	return sources, undo, nil
}

func nodePortNotes(cfg Config) []string {
	var vs []string
	for _, v := range nodePortVariants {
		vs = append(vs, "**"+v.name+"**: "+v.note)
	}
	return []string{
		"A lab of two nodes on one machine: two echo servers on node 2 behind a NodePort Service (externalTrafficPolicy Cluster), " +
			"the load generator in the lab's client namespace, outside the cluster, on the same bridge as the nodes. N is the number " +
			"of other ClusterIP Services installed, each with two backends on a node that does not exist.",
		"Paths: " + strings.Join(vs, "; ") + ".",
		fmt.Sprintf("Loads, %d at once, %s measured after %s of warm-up, the variants interleaved in rotating order, %d rounds: "+
			"**crr** a connection per request (TCP_CRR), **rr** requests on connections kept alive (TCP_RR). CPU is cgroup2 "+
			"usage_usec per connection or request: *client* of the client namespace's processes (the packets' way through the "+
			"nodes mostly runs as softirq in the sender's context, so much of the entry node's work lands here), *lab* of the "+
			"whole lab. Each path has a source address of its own on the client, and the client closes first.",
			cfg.Concurrency, cfg.Duration, cfg.Warmup, cfg.Rounds),
		"**bpf_<program>_ns** is what the kernel counted for an eBPF program of the nodes over the same window (bpf_stats: " +
			"run_time_ns / run_cnt, eBPF-mode variants only), **bpf_<program>_runs** how often it ran per connection or request, " +
			"both nodes summed: tc4_ingress and tc4_egress translate NodePort traffic on the nodes' external interfaces, per packet.",
	}
}
