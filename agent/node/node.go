// Package node is the agent's main loop, kubelet and kube-proxy in one: it
// joins the cluster, keeps the node's Node object and Lease fresh, and
// drives the dataplane towards the Services and EndpointSlices the control
// plane holds, and the container runtime towards the pods bound here.
package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clientretry "k8s.io/client-go/util/retry"

	"github.com/skep-io/skep/controlplane/api"
	"github.com/skep-io/skep/controlplane/api/conditions"
	"github.com/skep-io/skep/controlplane/client"
	"github.com/skep-io/skep/controlplane/client/events"
)

// Config is what `skep agent` runs with.
type Config struct {
	Name      string
	Server    string // https://HOST:6443
	JoinToken string
	CAFile    string
	DataDir   string
	NodeIP    netip.Addr
	// Interface carries NodeIP: the tc program for traffic from outside
	// attaches here.
	Interface string
	Dataplane string // one of dataplane.Modes: "ebpf", "iptables" or "nftables"
	// CgroupRoot is the cgroup2 directory of this node's processes; the
	// socket programs attach there.
	CgroupRoot  string
	ClusterCIDR netip.Prefix
	// ServiceCIDR is the ClusterIP range. Either dataplane makes a connect
	// to an address in it that no service has fail at once (eBPF: an
	// unreachable route; iptables: a REJECT after nat). Unset: neither.
	ServiceCIDR netip.Prefix
	// LeaseDuration is how long the Lease says the node lives without a
	// renewal; it is renewed at a quarter of it.
	LeaseDuration time.Duration
	// ContainerdAddress is an existing containerd's socket; "" starts one
	// of the agent's own under DataDir.
	ContainerdAddress string
	// ImagesDir holds OCI tarballs imported at start (no registry here).
	ImagesDir string
	// DNSUpstreams answer names outside the cluster; "" reads
	// /etc/resolv.conf.
	DNSUpstreams []string
	// AgentPort is where the agent's HTTPS endpoint (logs, exec, image
	// import, for the API server) listens on NodeIP; 0 picks a free port,
	// which the Node status publishes.
	AgentPort int
	// MetricsAddr is where Prometheus metrics are served (plain HTTP,
	// host:port); empty: not served.
	MetricsAddr string
	// FullSyncInterval is how often the dataplane is given every Service
	// (a full reconcile) rather than only the changed ones, and how often
	// the iptables and nftables modes rewrite all their rules; 0:
	// DefaultFullSyncInterval.
	FullSyncInterval time.Duration
	Logger           *slog.Logger
}

// DefaultFullSyncInterval is how often a full reconcile runs unless
// Config.FullSyncInterval says otherwise: every few minutes, as kube-proxy
// does its full syncs, so that anything an incremental write missed is
// corrected soon, while each change costs only its Service in between.
const DefaultFullSyncInterval = 5 * time.Minute

var (
	nodesR    = api.MustLookup("nodes")
	leasesR   = api.MustLookup("leases")
	servicesR = api.MustLookup("services")
	slicesR   = api.MustLookup("endpointslices")
	podsR     = api.MustLookup("pods")
)

// Agent is one running node agent.
type Agent struct {
	cfg Config
	c   client.Interface
	hc  *client.HTTP // the same client, for the agent's own API paths
	log *slog.Logger
	// agentPort is the port the endpoint listens on, once it does.
	agentPort int
	metrics   *agentMetrics
	// creds keeps cred, the credential hc carries, renewed; a refused
	// request says on credentialLost that it stopped working.
	creds          *credentials
	cred           client.Credential
	credentialLost chan struct{}
	// events records what happens to the node's pods, as the kubelet
	// does; nil (before Run) records nothing.
	events *events.Recorder
}

// New joins the cluster (or reuses the credential of an earlier join).
func New(ctx context.Context, cfg Config) (*Agent, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.LeaseDuration == 0 {
		cfg.LeaseDuration = 40 * time.Second
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create --data-dir: %w", err)
	}
	creds := &credentials{server: cfg.Server, joinToken: cfg.JoinToken, caFile: cfg.CAFile, dataDir: cfg.DataDir, node: cfg.Name, log: cfg.Logger.With("node", cfg.Name)}
	if cfg.NodeIP.IsValid() {
		creds.addresses = []string{cfg.NodeIP.String()}
	}
	var conf client.Config
	var cred client.Credential
	err := retry(ctx, "join "+cfg.Server, cfg.Logger, func() (err error) {
		conf, cred, err = creds.obtain(ctx)
		return err
	})
	if err != nil {
		return nil, err
	}
	c, err := client.New(conf)
	if err != nil {
		return nil, err
	}
	return &Agent{cfg: cfg, c: c, hc: c, log: cfg.Logger.With("node", cfg.Name), metrics: newAgentMetrics(cfg.Dataplane),
		creds: creds, cred: cred, credentialLost: make(chan struct{}, 1)}, nil
}

// keepCredential renews the agent's credential until ctx ends.
func (a *Agent) keepCredential(ctx context.Context) {
	a.creds.keep(ctx, a.hc, a.cred, a.credentialLost)
}

// Client is the agent's own API client.
func (a *Agent) Client() client.Interface { return a.c }

// register creates or refreshes the Node object and returns it.
func (a *Agent) register(ctx context.Context) (*corev1.Node, error) {
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:    *resource.NewQuantity(int64(runtime.NumCPU()), resource.DecimalSI),
		corev1.ResourceMemory: *resource.NewQuantity(memTotal(), resource.BinarySI),
		corev1.ResourcePods:   *resource.NewQuantity(110, resource.DecimalSI),
	}
	hostname, _ := os.Hostname()
	status := corev1.NodeStatus{
		Capacity:    capacity,
		Allocatable: capacity,
		Addresses:   []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: a.cfg.NodeIP.String()}, {Type: corev1.NodeHostName, Address: hostname}},
		NodeInfo:    corev1.NodeSystemInfo{KubeletVersion: "skep", OperatingSystem: "linux", Architecture: runtime.GOARCH, ContainerRuntimeVersion: "containerd"},
	}
	var posted *corev1.Node
	err := clientretry.RetryOnConflict(clientretry.DefaultRetry, func() error {
		cur, err := a.c.Get(ctx, nodesR, "", a.cfg.Name)
		if apierrors.IsNotFound(err) {
			n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: a.cfg.Name, Labels: map[string]string{"kubernetes.io/hostname": a.cfg.Name}}}
			if _, err := a.c.Create(ctx, nodesR, n); err != nil && !apierrors.IsAlreadyExists(err) {
				return fmt.Errorf("register node %s: %w", a.cfg.Name, err)
			}
			// The status is a subresource: post it on the node just made.
			cur, err = a.c.Get(ctx, nodesR, "", a.cfg.Name)
		}
		if err != nil {
			return fmt.Errorf("read node %s: %w", a.cfg.Name, err)
		}
		n := cur.(*corev1.Node)
		n.Status.Capacity, n.Status.Allocatable, n.Status.Addresses, n.Status.NodeInfo = status.Capacity, status.Allocatable, status.Addresses, status.NodeInfo
		n.Status.DaemonEndpoints.KubeletEndpoint.Port = int32(a.agentPort)
		// A node stays Ready through an agent restart (its pods must not
		// leave their Services); otherwise it is Ready only once its
		// container runtime answers (watchRuntime), as a kubelet's is.
		if conditions.NodeReady(n) {
			setReady(n, runtimeReadyCondition(nil))
		} else {
			setReady(n, runtimeReadyCondition(errRuntimeNotStarted))
		}
		obj, err := a.c.UpdateStatus(ctx, nodesR, n)
		if err != nil {
			return fmt.Errorf("post status of node %s: %w", a.cfg.Name, err)
		}
		posted = obj.(*corev1.Node)
		return nil
	})
	return posted, err
}

// keepLease renews the node's Lease in kube-node-lease until ctx ends; the
// node lifecycle controller marks the node NotReady when it goes stale.
func (a *Agent) keepLease(ctx context.Context) {
	every := a.cfg.LeaseDuration / 4
	for {
		if err := a.renewLease(ctx); err != nil && ctx.Err() == nil {
			a.log.Warn("renew lease", "err", err)
			if apierrors.IsUnauthorized(err) {
				select {
				case a.credentialLost <- struct{}{}:
				default:
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(every):
		}
	}
}

func (a *Agent) renewLease(ctx context.Context) error {
	now := metav1.NewMicroTime(time.Now())
	secs := int32(a.cfg.LeaseDuration.Seconds())
	cur, err := a.c.Get(ctx, leasesR, "kube-node-lease", a.cfg.Name)
	if apierrors.IsNotFound(err) {
		l := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: a.cfg.Name, Namespace: "kube-node-lease"},
			Spec: coordinationv1.LeaseSpec{HolderIdentity: &a.cfg.Name, LeaseDurationSeconds: &secs, RenewTime: &now, AcquireTime: &now}}
		_, err = a.c.Create(ctx, leasesR, l)
		return err
	}
	if err != nil {
		return err
	}
	l := cur.(*coordinationv1.Lease)
	l.Spec.RenewTime, l.Spec.LeaseDurationSeconds, l.Spec.HolderIdentity = &now, &secs, &a.cfg.Name
	_, err = a.c.Update(ctx, leasesR, l)
	return err
}

func memTotal() int64 {
	data, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	var kb int64
	fmt.Sscanf(string(data), "MemTotal: %d kB", &kb)
	return kb * 1024
}

// DefaultNodeIP is the address of the interface holding the default route.
func DefaultNodeIP() (netip.Addr, string, error) {
	// A UDP "connect" sends nothing; it only asks the kernel for a route.
	conn, err := net.Dial("udp4", "192.0.2.1:9")
	if err != nil {
		return netip.Addr{}, "", fmt.Errorf("find the node address (pass --node-ip): %w", err)
	}
	defer conn.Close()
	ip, _ := netip.AddrFromSlice(conn.LocalAddr().(*net.UDPAddr).IP.To4())
	ifaces, _ := net.Interfaces()
	for _, ifc := range ifaces {
		addrs, _ := ifc.Addrs()
		for _, ad := range addrs {
			if ipn, ok := ad.(*net.IPNet); ok && ipn.IP.Equal(ip.AsSlice()) {
				return ip, ifc.Name, nil
			}
		}
	}
	return ip, "", errors.New("no interface holds the node address")
}
