package traffic

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/skep-io/skep/bench/report"
)

// A variant of a traffic benchmark: the mode the nodes run in, and where
// the client connects.
type variant struct {
	name string
	mode string // one of dataplane.Modes
	// service is the Service connected to by its ClusterIP (or NodePort);
	// "" for the backends' pod IPs.
	service string
	// entry is, for a NodePort, the node (1-based) whose address is
	// connected to.
	entry int
	note  string
}

// The dataplane benchmark's variants. The reference, direct, is the limit:
// no service layer on the way. One lab runs one mode at a time, so the
// benchmark switches its agents between eBPF, iptables and nftables (a few
// seconds, a few tens at 10,000 Services) whenever the next variant needs
// another mode; Interleave's rotating order keeps that to three switches a
// round.
// One lab rather than two side by side: the machine has two cores, and a
// second lab's idle agents, containerds and 10,000-rule resyncs would
// weigh on the other's measurements.
var dataplaneVariants = []variant{
	{name: "direct", mode: "ebpf", note: "the echo pods' IPs, nodes in eBPF mode (the socket hook looks the address up and lets it pass)"},
	{name: "ebpf", mode: "ebpf", service: middleService, note: "the ClusterIP of " + middleService + ", translated at connect() by the socket LB"},
	{name: "iptables", mode: "iptables", service: middleService, note: "the ClusterIP of " + middleService + ", in the middle of KUBE-SERVICES, where kube-proxy's random order puts a Service on average"},
	{name: "iptables-first", mode: "iptables", service: firstService, note: "the ClusterIP of " + firstService + ", the first rule of KUBE-SERVICES"},
	{name: "iptables-last", mode: "iptables", service: lastService, note: "the ClusterIP of " + lastService + ", the last cluster-IP rule of KUBE-SERVICES"},
	{name: "direct-iptables", mode: "iptables", note: "the echo pods' IPs, nodes in iptables mode (a new connection still walks KUBE-SERVICES before it is known to match nothing)"},
	{name: "nftables", mode: "nftables", service: middleService, note: "the ClusterIP of " + middleService + ", one lookup in kube-proxy's @service-ips verdict map wherever the Service is"},
	{name: "direct-nftables", mode: "nftables", note: "the echo pods' IPs, nodes in nftables mode (a new connection misses @service-ips and the node-port lookup)"},
}

func variantNames(vs []variant) []string {
	var out []string
	for _, v := range vs {
		out = append(out, v.name)
	}
	return out
}

func findVariant(vs []variant, name string) variant {
	for _, v := range vs {
		if v.name == name {
			return v
		}
	}
	panic("no variant " + name)
}

// Reference is the variant both benchmarks take ratios against: the
// backends' pod IPs, no service layer on the way.
const Reference = "direct"

// RunDataplane is `skep-bench dataplane`: on a lab of two nodes, client
// pods on the first and two echo servers on the second, the same HTTP
// request through the paths of dataplaneVariants, with each of
// cfg.Sizes other Services installed. It adds its samples (bench
// "dataplane") and notes to rep, also those measured before a failure.
// It brings its lab up and always takes it down, also when ctx ends
// (Ctrl-C).
func RunDataplane(ctx context.Context, cfg Config, rep *report.Report) error {
	return onLab(ctx, cfg, func(cl *cluster) error { return cl.dataplane(ctx, rep) })
}

// onLab brings the benchmark's lab up, runs f on it and takes it down,
// whatever f returned.
func onLab(ctx context.Context, cfg Config, f func(*cluster) error) (err error) {
	if err := cfg.setDefaults(); err != nil {
		return err
	}
	cl, err := up(ctx, cfg)
	if err != nil {
		return err
	}
	defer func() {
		if derr := cl.down(); derr != nil {
			err = errors.Join(err, fmt.Errorf("take the benchmark's lab down: %w", derr))
		}
	}()
	return f(cl)
}

func (cl *cluster) dataplane(ctx context.Context, rep *report.Report) error {
	cfg := cl.cfg
	clientNode, backendNode := cl.node(1), cl.node(2)
	if err := cl.checkFillerRange(ctx); err != nil {
		return err
	}
	if _, err := cl.create(ctx, deploymentsR, echoDeployment(backendNode)); err != nil {
		return err
	}
	measured := []string{firstService, middleService, lastService}
	clusterIPs := map[string]string{}
	for _, name := range measured {
		obj, err := cl.create(ctx, servicesR, echoService(name, corev1.ServiceTypeClusterIP))
		if err != nil {
			return err
		}
		clusterIPs[name] = obj.(*corev1.Service).Spec.ClusterIP
	}
	// Each variant has a client pod of its own, and so a source address
	// of its own: no 4-tuple is ever reused between paths or modes, where
	// TIME_WAIT state and timestamps of one could meet the other's SYN.
	for _, v := range dataplaneVariants {
		if _, err := cl.create(ctx, podsR, clientPod("client-"+v.name, clientNode)); err != nil {
			return err
		}
	}
	echoes, err := cl.waitPods(ctx, "app=echo", 2, 3*time.Minute)
	if err != nil {
		return err
	}
	clientPods, err := cl.waitPods(ctx, "app=bench-client", len(dataplaneVariants), 3*time.Minute)
	if err != nil {
		return err
	}
	clientOf := map[string]*corev1.Pod{}
	for _, p := range clientPods {
		clientOf[strings.TrimPrefix(p.Name, "client-")] = p
	}
	var direct []string
	for _, p := range echoes {
		direct = append(direct, net.JoinHostPort(p.Status.PodIP, strconv.Itoa(echoPort)))
	}
	cl.progress("echo servers %v on %s; client pods on %s", direct, backendNode, clientNode)

	rep.Notes = append(rep.Notes, dataplaneNotes(cfg)...)
	// The positions are known once iptables mode has run at each size.
	var positions []string
	defer func() {
		if len(positions) > 0 {
			rep.Notes = append(rep.Notes, "Where the measured Services sat in the client node's KUBE-SERVICES (cluster-IP rules, 1-based): "+strings.Join(positions, "; ")+".")
		}
	}()

	var wantM []string
	for _, m := range measured {
		wantM = append(wantM, namespace+"/"+m)
	}
	installed := 0
	placed := map[int]bool{} // the sizes whose positions are known
	for _, n := range cfg.Sizes {
		if err := cl.fill(ctx, installed, n); err != nil {
			return err
		}
		installed = n
		want := wantServices{atLeast: n + len(measured), measured: wantM, backends: 2}
		if err := cl.waitProgrammed(ctx, want); err != nil {
			return err
		}
		err := report.Interleave(cfg.Rounds, variantNames(dataplaneVariants), func(round int, name string) error {
			v := findVariant(dataplaneVariants, name)
			if err := cl.switchMode(ctx, v.mode, want); err != nil {
				return err
			}
			if v.mode == "iptables" && !placed[n] {
				pos, rules, err := cl.kubeServicesPositions(ctx, clientNode, wantM)
				if err != nil {
					return err
				}
				positions = append(positions, fmt.Sprintf("N=%d: %s #%d, %s #%d, %s #%d of %d rules",
					n, firstService, pos[wantM[0]], middleService, pos[wantM[1]], lastService, pos[wantM[2]], rules))
				placed[n] = true
				cl.progress("KUBE-SERVICES of %s: %s", clientNode, positions[len(positions)-1])
			}
			targets := direct
			if v.service != "" {
				targets = []string{net.JoinHostPort(clusterIPs[v.service], strconv.Itoa(servicePort))}
			}
			netns, err := cl.podNetns(clientOf[v.name])
			if err != nil {
				return err
			}
			var bpfNodes []string
			if v.mode == "ebpf" {
				bpfNodes = []string{clientNode, backendNode}
			}
			return cl.measure(ctx, rep, "dataplane", v.name, n, round, targets, "", netns, cl.lab.Cgroup(clientNode), clientNode, bpfNodes)
		})
		if err != nil {
			return fmt.Errorf("with N=%d: %w", n, err)
		}
	}
	return nil
}

// measure runs the crr and then the rr load for one variant and records
// what they measured. parent is the cgroup the load generator runs below
// (its CPU time is the "client" CPU); source, when set, is its address.
// bpfNodes are the nodes (in eBPF mode) whose programs' costs per run are
// read over the same window.
func (cl *cluster) measure(ctx context.Context, rep *report.Report, bench, variant string, n, round int,
	targets []string, source, netns, parent, where string, bpfNodes []string) error {
	for _, kind := range []string{LoadCRR, LoadRR} {
		spec := LoadSpec{Kind: kind, Targets: targets, Source: source, Concurrency: cl.cfg.Concurrency,
			Warmup: cl.cfg.Warmup, Duration: cl.cfg.Duration, Timeout: 3 * time.Second,
			Cgroups:       map[string]string{"client": parent, "lab": cl.labCgroup()},
			ReuseTimeWait: kind == LoadCRR, BPFNodes: bpfNodes}
		res, err := cl.runLoad(ctx, netns, parent, spec)
		if err != nil {
			return err
		}
		per := "conn"
		rate := kind + "_conn_per_s"
		if kind == LoadRR {
			per, rate = "req", kind+"_req_per_s"
		}
		add := func(metric, unit string, v float64) {
			rep.Add(report.Sample{Bench: bench, Variant: variant, N: n, Metric: kind + "_" + metric, Unit: unit, Round: round, Value: v})
		}
		rep.Add(report.Sample{Bench: bench, Variant: variant, N: n, Metric: rate, Unit: "1/s", Round: round, Value: res.Rate()})
		add("p50_us", "µs", res.P50)
		add("p99_us", "µs", res.P99)
		if kind == LoadCRR {
			// The first packet's latency: where kube-proxy's modes and
			// eBPF differ most, and what the Kubernetes blog compares.
			add("connect_p50_us", "µs", res.ConnectP50)
			add("connect_p99_us", "µs", res.ConnectP99)
		}
		add("client_cpu_us", "µs/"+per, res.CPUPer("client"))
		add("lab_cpu_us", "µs/"+per, res.CPUPer("lab"))
		add("errors", "count", float64(res.Errors))
		var costs []string
		for _, prog := range bpfPrograms {
			c, ok := res.BPF[prog]
			if !ok || c.Runs == 0 {
				continue
			}
			add("bpf_"+prog+"_ns", "ns/run", c.NsPerRun())
			if res.Completed > 0 {
				add("bpf_"+prog+"_runs", "runs/"+per, float64(c.Runs)/float64(res.Completed))
			}
			costs = append(costs, fmt.Sprintf("%s %.0fns×%.1f", prog, c.NsPerRun(), float64(c.Runs)/float64(max(res.Completed, 1))))
		}
		if len(costs) > 0 {
			cl.progress("N=%d round %d %-16s %s bpf per run × runs per %s: %s", n, round, variant, kind, per, strings.Join(costs, ", "))
		}
		cl.progress("N=%d round %d %-16s %s %8.0f/s p50 %6.0fµs p99 %6.0fµs cpu %s %5.1fµs lab %5.1fµs/%s errors %d%s",
			n, round, variant, kind, res.Rate(), res.P50, res.P99, where, res.CPUPer("client"), res.CPUPer("lab"), per, res.Errors,
			firstErrorNote(res))
	}
	return nil
}

// bpfPrograms are the programs whose costs the benchmarks report, in the
// order they meet a connection.
var bpfPrograms = []string{"sock4_connect", "sock4_sendmsg", "sock4_recvmsg", "sock4_getpeername", "tc4_ingress", "tc4_egress"}

func firstErrorNote(res LoadResult) string {
	if res.FirstError == "" {
		return ""
	}
	return " (first: " + res.FirstError + ")"
}

func dataplaneNotes(cfg Config) []string {
	var vs []string
	for _, v := range dataplaneVariants {
		vs = append(vs, "**"+v.name+"**: "+v.note)
	}
	return []string{
		"A lab of two nodes on one machine (network namespaces on a bridge, a containerd and an agent each): two echo servers " +
			"(Go net/http, a small JSON answer) on node 2, the load generator in a client pod on node 1. N is the number of other " +
			"ClusterIP Services installed, each with two backends on a node that does not exist.",
		"Paths: " + strings.Join(vs, "; ") + ".",
		fmt.Sprintf("Loads, %d at once, %s measured after %s of warm-up, the variants interleaved in rotating order, %d rounds: "+
			"**crr** opens a connection per request (connect, GET, answer, close; netperf's TCP_CRR), **rr** sends requests on "+
			"connections kept alive (TCP_RR). Latency is per transaction. CPU is cgroup2 usage_usec per connection (crr) or request (rr): "+
			"*client* of the client's node (its agent, containerd and pods, the load generator; softirq work runs in their "+
			"context, this kernel has no IRQ time accounting), *lab* of the whole lab (server, both nodes). Each path has its own "+
			"client pod (source address), and the client closes first, so no 4-tuple is reused across paths and modes (TIME_WAIT, PAWS).",
			cfg.Concurrency, cfg.Duration, cfg.Warmup, cfg.Rounds),
		"**bpf_<program>_ns** is what the kernel counted for an eBPF program over the same window (bpf_stats: run_time_ns / run_cnt, " +
			"statistics enabled for the whole run, eBPF-mode variants only), and **bpf_<program>_runs** how often it ran per connection " +
			"or request; both nodes' programs summed. sock4_connect runs once per connect on the client's node; tc4_ingress and tc4_egress " +
			"run for every packet crossing either node's external interface.",
		"In iptables mode a new connection meets KUBE-SERVICES twice: on the client's node (OUTPUT or PREROUTING), where the " +
			"measured Service's rule ends the walk, and on the backend's node (PREROUTING), where the destination is already a pod " +
			"IP that matches no rule, so the walk goes to the end whatever the Service's place. kube-proxy's chains hook there too. " +
			"In nftables mode the same two places cost one map lookup each, whatever N.",
	}
}
