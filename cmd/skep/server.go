package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/urfave/cli/v2"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skep-io/skep/controlplane/api"
	"github.com/skep-io/skep/controlplane/apiserver"
	"github.com/skep-io/skep/controlplane/client"
	"github.com/skep-io/skep/controlplane/pki"
	"github.com/skep-io/skep/controlplane/store"
)

// serverConfig is what `skep server` runs with, made from its flags.
type serverConfig struct {
	Listen        string
	DataDir       string
	Advertise     string
	TLSSANs       []string
	NATSURL       string
	NATSCreds     string
	NATSListen    string
	NATSReplicas  int
	ServiceCIDR   netip.Prefix
	NodePortRange string
	LBPool        []netip.Prefix
	NoFsync       bool

	ClusterCIDR            string
	NodeMonitorGracePeriod time.Duration
	PodEvictionTimeout     time.Duration
	LeaderLeaseDuration    time.Duration
	NodeCredentialTTL      time.Duration
	NodeJoinRate           float64
	AllowLoopbackNodes     bool
}

func serverCommand() *cli.Command {
	return &cli.Command{
		Name:  "server",
		Usage: "run the control plane: API server, scheduler, controllers and (by default) an embedded NATS",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "listen", Value: "0.0.0.0:6443", Usage: "(listener) address of the HTTPS API"},
			&cli.StringFlag{Name: "advertise-address", Usage: "(listener) address clients use in admin.conf (default: 127.0.0.1 when --listen is on all addresses)"},
			&cli.StringSliceFlag{Name: "tls-san", Usage: "(listener) extra host names or addresses for the serving certificate"},
			&cli.StringFlag{Name: "data-dir", Value: "/var/lib/skep/server", Usage: "(data) certificates, tokens, admin.conf and the embedded NATS's files"},
			&cli.StringFlag{Name: "nats-url", EnvVars: []string{"SKEP_NATS_URL"}, Usage: "(datastore) an external NATS with JetStream; default: embedded"},
			&cli.StringFlag{Name: "nats-creds", EnvVars: []string{"SKEP_NATS_CREDS"}, Usage: "(datastore) credentials for --nats-url: a .creds file, or user:password"},
			&cli.IntFlag{Name: "nats-replicas", Value: 1, Usage: "(datastore) JetStream replicas of the state bucket on an external NATS cluster"},
			&cli.StringFlag{Name: "nats-listen", Value: "127.0.0.1:4222", Usage: "(datastore) where the embedded NATS listens (credentials in <data-dir>/nats-credentials)"},
			&cli.BoolFlag{Name: "no-fsync", Usage: "(datastore) acknowledge writes before they reach the disk: faster, but a machine crash may lose the last writes (a process crash never does)"},
			&cli.StringFlag{Name: "service-cidr", Value: "10.96.0.0/12", Usage: "(networking) range of ClusterIPs"},
			&cli.StringFlag{Name: "node-port-range", Value: "30000-32767", Usage: "(networking) range of NodePorts"},
			&cli.StringSliceFlag{Name: "lb-pool", Usage: "(networking) CIDRs LoadBalancer addresses come from; none: LoadBalancer Services stay pending"},
			&cli.StringFlag{Name: "cluster-cidr", Value: "10.244.0.0/16", Usage: "(networking) pod addresses; each node gets a /24 of it"},
			&cli.DurationFlag{Name: "node-monitor-grace-period", Value: 40 * time.Second, Usage: "(nodes) a node whose lease is older is marked NotReady"},
			&cli.DurationFlag{Name: "pod-eviction-timeout", Value: 60 * time.Second, Usage: "(nodes) pods of a node NotReady this long are deleted and replaced elsewhere"},
			&cli.DurationFlag{Name: "node-credential-ttl", Value: apiserver.DefaultNodeCredentialTTL, Usage: "(nodes) how long an agent's credential lives; agents renew theirs at two thirds of it, and one stopped longer joins again with the join token and its node password"},
			&cli.Float64Flag{Name: "node-join-rate", Value: apiserver.DefaultNodeJoinRate, Usage: "(nodes) joins and credential renewals a second the server takes (in bursts of 4 times as many, and a fifth of it from one client address); more are answered 429"},
			&cli.BoolFlag{Name: "allow-loopback-node-addresses", Usage: "(nodes) let agents declare a loopback --node-ip, for an agent on the server's own machine (development and tests only): the server then signs that node a serving certificate for a loopback address"},
			&cli.DurationFlag{Name: "leader-elect-lease-duration", Value: 12 * time.Second, Usage: "(high availability) with several servers on one NATS, how long the others wait after the leader's last renewal before one of them takes over the scheduler and controllers"},
		},
		Action: func(c *cli.Context) error {
			cfg, err := serverConfigFrom(c)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			return runServer(ctx, cfg, newLogger())
		},
	}
}

func serverConfigFrom(c *cli.Context) (serverConfig, error) {
	cfg := serverConfig{
		Listen: c.String("listen"), DataDir: c.String("data-dir"), Advertise: c.String("advertise-address"),
		TLSSANs: c.StringSlice("tls-san"), NATSURL: c.String("nats-url"), NATSCreds: c.String("nats-creds"),
		NATSListen: c.String("nats-listen"), NATSReplicas: c.Int("nats-replicas"), NodePortRange: c.String("node-port-range"),
		NoFsync: c.Bool("no-fsync"), ClusterCIDR: c.String("cluster-cidr"),
		NodeMonitorGracePeriod: c.Duration("node-monitor-grace-period"), PodEvictionTimeout: c.Duration("pod-eviction-timeout"),
		LeaderLeaseDuration: c.Duration("leader-elect-lease-duration"),
		NodeCredentialTTL:   c.Duration("node-credential-ttl"), NodeJoinRate: c.Float64("node-join-rate"),
		AllowLoopbackNodes: c.Bool("allow-loopback-node-addresses"),
	}
	var err error
	if cfg.ServiceCIDR, err = netip.ParsePrefix(c.String("service-cidr")); err != nil {
		return cfg, fmt.Errorf("--service-cidr %q: %w", c.String("service-cidr"), err)
	}
	for _, s := range c.StringSlice("lb-pool") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return cfg, fmt.Errorf("--lb-pool %q: %w", s, err)
		}
		cfg.LBPool = append(cfg.LBPool, p)
	}
	if _, err := apiserver.ParsePortRange(cfg.NodePortRange); err != nil {
		return cfg, fmt.Errorf("--node-port-range: %w", err)
	}
	if _, _, err := net.SplitHostPort(cfg.Listen); err != nil {
		return cfg, fmt.Errorf("--listen %q: %w", cfg.Listen, err)
	}
	if cfg.LeaderLeaseDuration < 3*time.Second {
		return cfg, fmt.Errorf("--leader-elect-lease-duration %s: must be 3s or more", cfg.LeaderLeaseDuration)
	}
	if cfg.NodeCredentialTTL < 30*time.Second {
		return cfg, fmt.Errorf("--node-credential-ttl %s: must be 30s or more (agents renew at two thirds of it)", cfg.NodeCredentialTTL)
	}
	if cfg.NodeJoinRate <= 0 {
		return cfg, fmt.Errorf("--node-join-rate %g: must be more than 0", cfg.NodeJoinRate)
	}
	if cfg.NATSURL == "" && cfg.NATSCreds != "" {
		return cfg, errors.New("invalid flag use; --nats-creds needs --nats-url")
	}
	return cfg, nil
}

func newLogger() *slog.Logger {
	l := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	slog.SetDefault(l)
	return l
}

func runServer(ctx context.Context, cfg serverConfig, log *slog.Logger) error {
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("create --data-dir: %w", err)
	}
	host, port, _ := net.SplitHostPort(cfg.Listen)
	advertise := cfg.Advertise
	if advertise == "" {
		advertise = host
		if host == "" || host == "0.0.0.0" || host == "::" {
			advertise = "127.0.0.1"
		}
	}
	sans := append([]string{"localhost", "127.0.0.1", advertise}, cfg.TLSSANs...)
	if hn, err := os.Hostname(); err == nil {
		sans = append(sans, hn)
	}
	sans = append(sans, localAddresses()...)
	bundle, err := pki.Ensure(cfg.DataDir, sans)
	if err != nil {
		return err
	}

	nc, shutdownNATS, err := connectNATS(cfg)
	if err != nil {
		return err
	}
	defer shutdownNATS()
	defer nc.Close()
	st, err := store.Open(ctx, nc, store.Config{Replicas: cfg.NATSReplicas})
	if err != nil {
		return err
	}

	srv, err := apiserver.New(st, apiserver.Config{
		ServiceCIDR: cfg.ServiceCIDR, NodePortRange: cfg.NodePortRange, LBPool: cfg.LBPool,
		AdminToken: bundle.AdminToken, JoinToken: bundle.NodeToken, CAPEM: bundle.CAPEM, Logger: log,
		NodeCredentialTTL: cfg.NodeCredentialTTL, NodeJoinRate: cfg.NodeJoinRate, AllowLoopbackNodeAddresses: cfg.AllowLoopbackNodes,
		ExternalAddress: net.JoinHostPort(advertise, port),
	})
	if err != nil {
		return err
	}
	if err := srv.Bootstrap(ctx); err != nil {
		return err
	}
	if err := claimCluster(ctx, srv.Client(), bundle.CAPEM, cfg.DataDir); err != nil {
		return err
	}
	go srv.Run(ctx)
	startControllers(ctx, srv, cfg, log)

	adminURL := "https://" + net.JoinHostPort(advertise, port)
	if err := writeAdminConfigs(cfg.DataDir, client.Config{Server: adminURL, CAPEM: bundle.CAPEM, Token: bundle.AdminToken}, log); err != nil {
		return err
	}

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("--listen %s: %w", cfg.Listen, err)
	}
	handler, err := srv.Handler(ctx)
	if err != nil {
		return err
	}
	hs := &http.Server{
		Handler:           handler,
		TLSConfig:         apiserver.TLSConfig(bundle.ServerCert),
		ReadHeaderTimeout: 10 * time.Second,
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.ServeTLS(ln, "", "") }()
	log.Info("skep server ready", "api", adminURL, "adminConfig", filepath.Join(cfg.DataDir, "admin.conf"), "nodeToken", filepath.Join(cfg.DataDir, "node-token"))
	select {
	case <-ctx.Done():
	case err := <-errc:
		return fmt.Errorf("serve API: %w", err)
	}
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = hs.Shutdown(sctx)
	return nil
}

// rootCAConfigMap publishes the cluster's CA as Kubernetes does in
// kube-root-ca.crt. Servers sharing one NATS must share one CA: the first
// publishes it, and a later one started with a different CA refuses to
// serve, rather than splitting the cluster into two that cannot trust each
// other's agents.
const rootCAConfigMap = "kube-root-ca.crt"

func claimCluster(ctx context.Context, c client.Interface, caPEM []byte, dataDir string) error {
	configMaps := api.MustLookup("configmaps")
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: rootCAConfigMap},
		Data:       map[string]string{"ca.crt": string(caPEM)},
	}
	_, err := c.Create(ctx, configMaps, cm)
	if err == nil {
		return nil
	}
	if !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("publish the cluster CA: %w", err)
	}
	obj, err := c.Get(ctx, configMaps, "kube-system", rootCAConfigMap)
	if err != nil {
		return fmt.Errorf("read the cluster CA: %w", err)
	}
	if obj.(*corev1.ConfigMap).Data["ca.crt"] != string(caPEM) {
		return fmt.Errorf("this datastore belongs to a cluster with another CA (kube-system/%s): "+
			"to add a server to it, copy tls/ and node-token from a running server's --data-dir into %s first", rootCAConfigMap, dataDir)
	}
	return nil
}

// connectNATS starts the embedded NATS, or connects to --nats-url.
func connectNATS(cfg serverConfig) (*nats.Conn, func(), error) {
	if cfg.NATSURL != "" {
		opts := []nats.Option{nats.Name("skep-server"), nats.MaxReconnects(-1)}
		if user, pass, ok := strings.Cut(cfg.NATSCreds, ":"); ok && !strings.HasSuffix(cfg.NATSCreds, ".creds") {
			opts = append(opts, nats.UserInfo(user, pass))
		} else if cfg.NATSCreds != "" {
			opts = append(opts, nats.UserCredentials(cfg.NATSCreds))
		}
		nc, err := nats.Connect(cfg.NATSURL, opts...)
		if err != nil {
			return nil, nil, fmt.Errorf("connect --nats-url %s: %w", cfg.NATSURL, err)
		}
		return nc, func() {}, nil
	}
	password, err := readOrCreateSecret(filepath.Join(cfg.DataDir, "nats-credentials"))
	if err != nil {
		return nil, nil, err
	}
	e, err := store.StartEmbedded(store.EmbeddedConfig{
		StoreDir: filepath.Join(cfg.DataDir, "nats"), Listen: cfg.NATSListen,
		User: "skep", Password: password, SyncAlways: !cfg.NoFsync,
	})
	if err != nil {
		return nil, nil, err
	}
	nc, err := e.Connect()
	if err != nil {
		e.Shutdown()
		return nil, nil, fmt.Errorf("connect to embedded NATS: %w", err)
	}
	return nc, e.Shutdown, nil
}

func readOrCreateSecret(path string) (string, error) {
	if b, err := os.ReadFile(path); err == nil {
		_, pass, _ := strings.Cut(strings.TrimSpace(string(b)), ":")
		return pass, nil
	}
	pass, err := pki.RandomToken()
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(path, []byte("skep:"+pass+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	return pass, nil
}

// writeAdminConfigs writes <data-dir>/admin.conf always and ~/.skep/config
// when the user has none yet.
func writeAdminConfigs(dataDir string, cfg client.Config, log *slog.Logger) error {
	if err := client.WriteConfig(filepath.Join(dataDir, "admin.conf"), cfg); err != nil {
		return err
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return nil
	}
	user := filepath.Join(home, ".skep", "config")
	if _, err := os.Stat(user); errors.Is(err, os.ErrNotExist) {
		if err := client.WriteConfig(user, cfg); err != nil {
			log.Warn("write user config", "path", user, "err", err)
		}
	}
	return nil
}

func localAddresses() []string {
	var out []string
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok {
			out = append(out, ipn.IP.String())
		}
	}
	return out
}
