// Package apiserver serves the cluster's objects over HTTPS with
// Kubernetes' paths, verbs, JSON and Status errors, on the store of package
// store. It authenticates every request by bearer token, authorizes agents
// as Kubernetes' Node authorizer does, allocates Service addresses and
// ports, and enforces ResourceQuotas.
package apiserver

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/skep-io/skep/controlplane/api"
	"github.com/skep-io/skep/controlplane/client"
	"github.com/skep-io/skep/controlplane/store"
)

// Config is what the API server needs beyond its store.
type Config struct {
	ServiceCIDR   netip.Prefix   // default 10.96.0.0/12
	NodePortRange string         // default 30000-32767
	LBPool        []netip.Prefix // LoadBalancer addresses; none: LoadBalancers stay pending
	AdminToken    string
	JoinToken     string
	// NodeCredentialTTL is how long a node credential lives (default
	// DefaultNodeCredentialTTL); agents renew theirs before then.
	NodeCredentialTTL time.Duration
	// NodeJoinRate is how many joins and renewals a second the server
	// takes (default DefaultNodeJoinRate).
	NodeJoinRate float64
	// AllowLoopbackNodeAddresses lets a node declare a loopback address at
	// its join (and get a serving certificate for it): for an agent on
	// the server's own machine, in development and tests only.
	AllowLoopbackNodeAddresses bool
	// CAPEM is served at /cacerts for agents to pin.
	CAPEM  []byte
	Logger *slog.Logger
	// Limits bound requests in flight, watches and request times.
	Limits Limits
	// ExternalAddress is the host:port clients reach the API at, for
	// discovery (default 127.0.0.1:6443).
	ExternalAddress string
}

// Server is one API server.
type Server struct {
	reg     *registry
	auth    *authenticator
	log     *slog.Logger
	metrics *metrics
	caPEM   []byte
	nodes   *nodeAccess
	admit   *admission
	joins   *joinLimiter
	// externalAddress is Config.ExternalAddress.
	externalAddress string
}

// New makes an API server on st.
func New(st *store.Store, cfg Config) (*Server, error) {
	if !cfg.ServiceCIDR.IsValid() {
		cfg.ServiceCIDR = netip.MustParsePrefix("10.96.0.0/12")
	}
	if cfg.NodePortRange == "" {
		cfg.NodePortRange = "30000-32767"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if !cfg.ServiceCIDR.Addr().Is4() || cfg.ServiceCIDR.Bits() > 30 {
		return nil, fmt.Errorf("--service-cidr %s: must be an IPv4 prefix of /30 or larger", cfg.ServiceCIDR)
	}
	ports, err := ParsePortRange(cfg.NodePortRange)
	if err != nil {
		return nil, fmt.Errorf("--node-port-range: %w", err)
	}
	if cfg.AdminToken == "" || cfg.JoinToken == "" {
		return nil, fmt.Errorf("the admin and node-join tokens must be set")
	}
	if cfg.NodeCredentialTTL == 0 {
		cfg.NodeCredentialTTL = DefaultNodeCredentialTTL
	}
	if cfg.NodeCredentialTTL < 30*time.Second {
		return nil, fmt.Errorf("--node-credential-ttl %s: must be 30s or more (agents renew at two thirds of it)", cfg.NodeCredentialTTL)
	}
	if cfg.ExternalAddress == "" {
		cfg.ExternalAddress = "127.0.0.1:6443"
	}
	if cfg.NodeJoinRate == 0 {
		cfg.NodeJoinRate = DefaultNodeJoinRate
	}
	if cfg.NodeJoinRate < 0 {
		return nil, fmt.Errorf("--node-join-rate %g: must be more than 0", cfg.NodeJoinRate)
	}
	m := newMetrics()
	reg := &registry{store: st, now: time.Now, timing: m.observeStore}
	reg.alloc = &allocator{store: st, serviceCIDR: cfg.ServiceCIDR.Masked(), nodePorts: ports, lbPool: cfg.LBPool, log: cfg.Logger}
	reg.quota = &quotaAdmission{g: reg}
	return &Server{
		reg: reg,
		auth: &authenticator{adminToken: cfg.AdminToken, joinToken: cfg.JoinToken, store: st, getNode: getNodeFunc(reg), log: cfg.Logger,
			now: time.Now, ttl: cfg.NodeCredentialTTL, recheck: 30 * time.Second, cache: map[string]cachedToken{},
			allowLoopback: cfg.AllowLoopbackNodeAddresses},
		log:     cfg.Logger,
		metrics: m,
		caPEM:   cfg.CAPEM,
		nodes:   &nodeAccess{store: st},
		admit:   newAdmission(cfg.Limits),
		joins:   newJoinLimiter(cfg.NodeJoinRate, time.Now),

		externalAddress: cfg.ExternalAddress,
	}, nil
}

// Registry is where the server's Prometheus metrics are.
func (s *Server) Registry() *prometheus.Registry { return s.metrics.reg }

// Bootstrap creates what a new cluster has from the start: the default,
// kube-system and kube-node-lease namespaces.
func (s *Server) Bootstrap(ctx context.Context) error {
	ns := api.MustLookup("namespaces")
	for _, name := range []string{"default", "kube-system", "kube-node-lease"} {
		obj := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
		if _, err := s.reg.create(ctx, ns, obj, false); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create namespace %s: %w", name, err)
		}
	}
	return nil
}

// Run does the server's background work until ctx ends: it frees
// allocations leaked by a server that died mid-create, and keeps node
// credentials in step with Node deletions.
func (s *Server) Run(ctx context.Context) {
	go s.auth.run(ctx)
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		if err := s.reg.alloc.repair(ctx, s.reg); err != nil && ctx.Err() == nil {
			s.log.Warn("repair allocations", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Client is an in-process client with the admin's rights, for the
// scheduler and controllers running beside the server.
func (s *Server) Client() client.Interface { return local{s.reg} }

var clientListAll = client.ListOptions{}

func schemaGK(kind string) schema.GroupKind { return schema.GroupKind{Kind: kind} }

// local is client.Interface without HTTP.
type local struct{ g *registry }

func (l local) Get(ctx context.Context, r *api.Resource, ns, name string) (api.Object, error) {
	return l.g.get(ctx, r, ns, name)
}

func (l local) List(ctx context.Context, r *api.Resource, ns string, opts client.ListOptions) ([]api.Object, string, error) {
	objs, rev, err := l.g.list(ctx, r, ns, opts)
	return objs, fmt.Sprint(rev), err
}

func (l local) Create(ctx context.Context, r *api.Resource, obj api.Object) (api.Object, error) {
	return l.g.create(ctx, r, obj.DeepCopyObject().(api.Object), false)
}

func (l local) Update(ctx context.Context, r *api.Resource, obj api.Object) (api.Object, error) {
	return l.g.update(ctx, r, obj.DeepCopyObject().(api.Object), false, false)
}

func (l local) UpdateStatus(ctx context.Context, r *api.Resource, obj api.Object) (api.Object, error) {
	return l.g.update(ctx, r, obj.DeepCopyObject().(api.Object), true, false)
}

func (l local) Delete(ctx context.Context, r *api.Resource, ns, name string, opts client.DeleteOptions) error {
	_, err := l.g.delete(ctx, r, ns, name, opts)
	return err
}

func (l local) Watch(ctx context.Context, r *api.Resource, ns string, opts client.ListOptions) (<-chan client.Event, error) {
	return l.g.watch(ctx, r, ns, opts)
}
