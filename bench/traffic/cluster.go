package traffic

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/skep-io/skep/agent/dataplane"
	"github.com/skep-io/skep/agent/dataplane/ebpf"
	"github.com/skep-io/skep/agent/dataplane/iptables"
	"github.com/skep-io/skep/agent/dataplane/nftables"
	"github.com/skep-io/skep/controlplane/api"
	"github.com/skep-io/skep/controlplane/api/conditions"
	"github.com/skep-io/skep/controlplane/client"
	"github.com/skep-io/skep/lab"
)

// The defaults of Config.
const (
	DefaultDuration    = 5 * time.Second
	DefaultConcurrency = 4
)

// Config is what both traffic benchmarks are run with.
type Config struct {
	// Binary is the skep binary the lab's server and agents run; required.
	Binary string
	// ImagesDir holds the test images (skep/pause, skep/echo,
	// skep/toolbox) as OCI tarballs; required.
	ImagesDir string
	// ClientCommand runs ClientMain (the load generator) when started
	// inside a client's network namespace, e.g. skep-bench client; required.
	ClientCommand []string
	// LabName names the benchmark's lab (default "bench"); LabDir holds its
	// state (default lab.DirFor(LabName)).
	LabName string
	LabDir  string
	// Sizes are the numbers of other Services installed, ascending
	// (default 1, 1000, 10000).
	Sizes []int
	// Rounds is how many times every variant runs at each size (default 3).
	Rounds int
	// Duration is each load's measured window (default 5s), after Warmup
	// (default a fifth of Duration, at most 1s).
	Duration, Warmup time.Duration
	// Concurrency is the number of connections (rr) or connect loops (crr)
	// at once (default 4).
	Concurrency int
	Logger      *slog.Logger
	Progress    io.Writer
}

func (c *Config) setDefaults() error {
	if c.Binary == "" {
		return errors.New("no skep binary given for the lab")
	}
	if c.ImagesDir == "" {
		return errors.New("no images directory given for the lab (skep/echo and skep/toolbox are needed)")
	}
	if len(c.ClientCommand) == 0 {
		return errors.New("no client command given to run the load generator in the lab (skep-bench client)")
	}
	if c.LabName == "" {
		c.LabName = "bench"
	}
	if len(c.Sizes) == 0 {
		c.Sizes = []int{1, 1000, 10000}
	}
	for i, n := range c.Sizes {
		if n < 0 || n > maxFillers {
			return fmt.Errorf("size %d: from 0 to %d other Services", n, maxFillers)
		}
		if i > 0 && n <= c.Sizes[i-1] {
			return fmt.Errorf("sizes %v: must ascend (Services are only ever added)", c.Sizes)
		}
	}
	if c.Rounds == 0 {
		c.Rounds = 3
	}
	if c.Rounds < 1 {
		return fmt.Errorf("rounds %d: at least 1", c.Rounds)
	}
	if c.Duration == 0 {
		c.Duration = DefaultDuration
	}
	if c.Warmup == 0 {
		c.Warmup = min(c.Duration/5, time.Second)
	}
	if c.Duration <= 0 || c.Warmup < 0 {
		return fmt.Errorf("duration %s, warmup %s: the duration must be positive", c.Duration, c.Warmup)
	}
	if c.Concurrency == 0 {
		c.Concurrency = DefaultConcurrency
	}
	if c.Concurrency < 1 || c.Concurrency > 256 {
		return fmt.Errorf("concurrency %d: from 1 to 256", c.Concurrency)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Progress == nil {
		c.Progress = io.Discard
	}
	return nil
}

var (
	podsR        = api.MustLookup("pods")
	servicesR    = api.MustLookup("services")
	endpointsR   = api.MustLookup("endpoints")
	deploymentsR = api.MustLookup("deployments")
	nodesR       = api.MustLookup("nodes")
)

const (
	// namespace holds everything the benchmarks make.
	namespace = "default"
	// echoPort is where the echo server listens; servicePort is the
	// Services' port in front of it.
	echoPort    = 8080
	servicePort = 80
	// leafCgroup is the cgroup the load generator runs in, below the
	// cgroup of the node (or of the lab's client) it stands for: its CPU
	// time counts as the node's, and the node's socket programs, attached
	// to the node's cgroup, apply to it as to the node's pods.
	leafCgroup = "skep-bench-client"
)

// cluster is a benchmark's lab, with an API client and what the benchmark
// made in it.
type cluster struct {
	cfg    Config
	lab    *lab.Lab
	c      *client.HTTP
	leaves []string // cgroups made for the load generator, removed by down
}

// up brings up a lab of two nodes in eBPF mode: one for the clients (or
// the first NodePort), one for the backends.
func up(ctx context.Context, cfg Config) (*cluster, error) {
	cl := &cluster{cfg: cfg}
	l, err := lab.Up(ctx, lab.Config{Name: cfg.LabName, Dir: cfg.LabDir, Nodes: 2, Dataplane: "ebpf",
		Binary: cfg.Binary, ImagesDir: cfg.ImagesDir, Logger: cfg.Logger, Progress: cfg.Progress})
	if err != nil {
		return nil, fmt.Errorf("bring the benchmark's lab up: %w", err)
	}
	cl.lab = l
	if cl.c, err = l.Client(); err != nil {
		cl.down()
		return nil, err
	}
	return cl, nil
}

// down takes the lab down, whatever state the benchmark left it in, with
// a context of its own: it runs after Ctrl-C too.
func (cl *cluster) down() error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for _, dir := range cl.leaves {
		os.Remove(dir)
	}
	cl.progress("taking the lab down")
	return cl.lab.Down(ctx)
}

func (cl *cluster) progress(format string, args ...any) {
	fmt.Fprintf(cl.cfg.Progress, "bench: %s\n", fmt.Sprintf(format, args...))
}

// node is the registered name of the lab's i-th node (1-based).
func (cl *cluster) node(i int) string { return cl.lab.Nodes()[i-1] }

// labCgroup is the cgroup of the whole lab: server, nodes and client.
func (cl *cluster) labCgroup() string { return filepath.Dir(cl.lab.Cgroup(lab.ClientName)) }

// echoDeployment runs two echo servers on one node, ready once they answer.
func echoDeployment(node string) *appsv1.Deployment {
	replicas := int32(2)
	labels := map[string]string{"app": "echo"}
	return &appsv1.Deployment{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: metav1.ObjectMeta{Name: "echo", Namespace: namespace},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					NodeSelector: map[string]string{"kubernetes.io/hostname": node},
					Containers: []corev1.Container{{
						Name: "echo", Image: "skep/echo:latest",
						Ports: []corev1.ContainerPort{{ContainerPort: echoPort, Protocol: corev1.ProtocolTCP}},
						Env: []corev1.EnvVar{
							{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
							{Name: "NODE_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.nodeName"}}},
						},
						ReadinessProbe: &corev1.Probe{
							ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/", Port: intstr.FromInt32(echoPort)}},
							PeriodSeconds: 1,
						},
					}},
				},
			},
		},
	}
}

// echoService is a Service in front of the echo servers.
func echoService(name string, typ corev1.ServiceType) *corev1.Service {
	return &corev1.Service{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		Spec: corev1.ServiceSpec{
			Type:     typ,
			Selector: map[string]string{"app": "echo"},
			Ports: []corev1.ServicePort{{Name: "http", Port: servicePort, TargetPort: intstr.FromInt32(echoPort),
				Protocol: corev1.ProtocolTCP}},
		},
	}
}

// clientPod is a pod that only sleeps: it lends its network namespace,
// and so its own address, to the load generator.
func clientPod(name, node string) *corev1.Pod {
	grace := int64(0)
	return &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, Labels: map[string]string{"app": "bench-client"}},
		Spec: corev1.PodSpec{
			NodeSelector:                  map[string]string{"kubernetes.io/hostname": node},
			TerminationGracePeriodSeconds: &grace,
			Containers: []corev1.Container{{Name: "sleep", Image: "skep/toolbox:latest",
				Command: []string{"sleep", "1000000000"}}},
		},
	}
}

func (cl *cluster) create(ctx context.Context, r *api.Resource, obj api.Object) (api.Object, error) {
	out, err := cl.c.Create(ctx, r, obj)
	if err != nil {
		return nil, fmt.Errorf("create %s %s: %w", r.Name, obj.GetName(), err)
	}
	return out, nil
}

// waitPods waits until the pods that match selector are count, all
// Ready, and returns them.
func (cl *cluster) waitPods(ctx context.Context, selector string, count int, timeout time.Duration) ([]*corev1.Pod, error) {
	deadline := time.Now().Add(timeout)
	var last string
	for {
		objs, _, err := cl.c.List(ctx, podsR, namespace, client.ListOptions{LabelSelector: selector})
		if err == nil {
			var ready []*corev1.Pod
			var states []string
			for _, o := range objs {
				p := o.(*corev1.Pod)
				states = append(states, fmt.Sprintf("%s %s on %s", p.Name, p.Status.Phase, p.Spec.NodeName))
				if conditions.PodReady(p) && p.Status.PodIP != "" {
					ready = append(ready, p)
				}
			}
			if len(ready) == count && len(objs) == count {
				return ready, nil
			}
			last = strings.Join(states, "; ")
		} else {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("pods %s: not %d Ready after %s (%s)", selector, count, timeout, last)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// podNetns is the network namespace of a pod on a node, as
// /proc/<pid>/ns/net of a process of the pod: runc puts each container in
// <node cgroup>/skep-pods/pod<uid>/<container>.
func (cl *cluster) podNetns(p *corev1.Pod) (string, error) {
	pattern := filepath.Join(cl.lab.Cgroup(p.Spec.NodeName), "skep-pods", "pod"+string(p.UID), "*", "cgroup.procs")
	files, _ := filepath.Glob(pattern)
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, field := range strings.Fields(string(data)) {
			if pid, err := strconv.Atoi(field); err == nil {
				return fmt.Sprintf("/proc/%d/ns/net", pid), nil
			}
		}
	}
	return "", fmt.Errorf("pod %s: no process in %s", p.Name, pattern)
}

// runLoad runs the load generator in the network namespace netns (a path)
// and in a cgroup below parent, and returns what it measured.
func (cl *cluster) runLoad(ctx context.Context, netns, parent string, spec LoadSpec) (LoadResult, error) {
	leaf := filepath.Join(parent, leafCgroup)
	if err := os.Mkdir(leaf, 0o755); err == nil {
		cl.leaves = append(cl.leaves, leaf)
	} else if !errors.Is(err, os.ErrExist) {
		return LoadResult{}, fmt.Errorf("create cgroup %s: %w", leaf, err)
	}
	fd, err := os.Open(leaf)
	if err != nil {
		return LoadResult{}, fmt.Errorf("open cgroup %s: %w", leaf, err)
	}
	defer fd.Close()
	in, err := json.Marshal(spec)
	if err != nil {
		return LoadResult{}, err
	}
	rctx, cancel := context.WithTimeout(ctx, spec.Warmup+spec.Duration+spec.Timeout+30*time.Second)
	defer cancel()
	argv := append([]string{"nsenter", "--net=" + netns, "--"}, cl.cfg.ClientCommand...)
	cmd := exec.CommandContext(rctx, argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(fd.Fd())}
	var stdout, stderr bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = bytes.NewReader(in), &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return LoadResult{}, fmt.Errorf("load generator stopped: %w", ctx.Err())
		}
		return LoadResult{}, fmt.Errorf("load generator in %s: %w: %s", netns, err, strings.TrimSpace(stderr.String()))
	}
	var res LoadResult
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		return LoadResult{}, fmt.Errorf("load generator's answer %q: %w", stdout.String(), err)
	}
	if res.Completed == 0 {
		return res, fmt.Errorf("load %s to %v: nothing completed (%d errors, first: %s)", spec.Kind, spec.Targets, res.Errors, res.FirstError)
	}
	return res, nil
}

// switchMode puts the lab's agents in mode, if they are not, and waits
// until every node's dataplane carries the services again.
func (cl *cluster) switchMode(ctx context.Context, mode string, want wantServices) error {
	if cl.lab.Dataplane() == mode {
		return nil
	}
	start := time.Now()
	if err := cl.lab.SwitchDataplane(ctx, mode); err != nil {
		return fmt.Errorf("switch the lab to %s: %w", mode, err)
	}
	if err := cl.waitProgrammed(ctx, want); err != nil {
		return err
	}
	cl.progress("agents in %s mode, %d services programmed on every node, in %s", mode, want.atLeast, time.Since(start).Round(100*time.Millisecond))
	return nil
}

// wantServices is what every node's dataplane must carry before a
// measurement: at least atLeast service ports, among them each of
// measured (namespace/name) with backends serving backends.
type wantServices struct {
	atLeast  int
	measured []string
	backends int
}

// settle is how long a node is left alone after its dataplane is
// programmed, so that the agent's sync has finished burning CPU.
const settle = 2 * time.Second

// waitProgrammed waits until every node's dataplane, in the lab's current
// mode, carries want.
func (cl *cluster) waitProgrammed(ctx context.Context, want wantServices) error {
	mode := cl.lab.Dataplane()
	deadline := time.Now().Add(10 * time.Minute)
	for _, node := range cl.lab.Nodes() {
		for {
			got, err := cl.programmed(ctx, node, mode)
			missing := want.check(got)
			if err == nil && missing == "" {
				break
			}
			if err != nil {
				missing = err.Error()
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("the %s dataplane of %s does not carry the services after 10 minutes: %s", mode, node, missing)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Second):
			}
		}
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(settle):
	}
	return nil
}

func (w wantServices) check(got map[string]int) string {
	if len(got) < w.atLeast {
		return fmt.Sprintf("%d of %d services", len(got), w.atLeast)
	}
	for _, m := range w.measured {
		if got[m] != w.backends {
			return fmt.Sprintf("%s has %d serving backends, want %d", m, got[m], w.backends)
		}
	}
	return ""
}

// programmed reads back what a node's dataplane carries: the serving
// backends of each service, by namespace/name.
func (cl *cluster) programmed(ctx context.Context, node, mode string) (map[string]int, error) {
	out := map[string]int{}
	add := func(ns, name string, serving int) { out[ns+"/"+name] += serving }
	switch mode {
	case "ebpf":
		stats, err := ebpf.ReadServices(ebpf.Config{NodeName: node})
		if err != nil {
			return nil, err
		}
		for _, s := range stats {
			add(s.Key.Namespace, s.Key.Name, servingCount(s.Backends))
		}
	case "iptables", "nftables":
		dp, err := cl.readOnlyDataplane(ctx, node, mode)
		if err != nil {
			return nil, err
		}
		defer dp.Close()
		svcs, err := dp.Services(ctx)
		if err != nil {
			return nil, err
		}
		for _, s := range svcs {
			add(s.Key.Namespace, s.Key.Name, servingCount(s.Backends))
		}
	default:
		return nil, dataplane.CheckMode(mode)
	}
	return out, nil
}

// readOnlyDataplane is a proxier of the node's namespace that is only read
// from: never given a Sync, it writes nothing.
func (cl *cluster) readOnlyDataplane(ctx context.Context, node, mode string) (dataplane.Dataplane, error) {
	ns := "/run/netns/" + cl.lab.Netns(node)
	if mode == "nftables" {
		return nftables.New(ctx, nftables.Config{NodeName: node, NetNS: ns})
	}
	return iptables.New(ctx, iptables.Config{NodeName: node, NetNS: ns})
}

// kubeServicesPositions finds, in a node's nat KUBE-SERVICES chain, the
// place (1-based) of the cluster-IP rule of each named service
// (namespace/name), and the number of rules in the chain.
func (cl *cluster) kubeServicesPositions(ctx context.Context, node string, names []string) (map[string]int, int, error) {
	var out, errb bytes.Buffer
	code, err := cl.lab.Exec(ctx, node, []string{"iptables-save", "-t", "nat"}, nil, &out, &errb)
	if err != nil || code != 0 {
		return nil, 0, fmt.Errorf("iptables-save on %s: exit %d, %v: %s", node, code, err, errb.String())
	}
	pos := map[string]int{}
	rules := 0
	for _, line := range strings.Split(out.String(), "\n") {
		if !strings.HasPrefix(line, "-A KUBE-SERVICES ") {
			continue
		}
		rules++
		for _, n := range names {
			// kube-proxy's comment: "namespace/name:port cluster IP".
			if strings.Contains(line, `"`+n+`:`) && strings.Contains(line, ` cluster IP"`) {
				pos[n] = rules
			}
		}
	}
	return pos, rules, nil
}
