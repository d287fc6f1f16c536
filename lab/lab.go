package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/skep-io/skep/agent/dataplane"
	"github.com/skep-io/skep/controlplane/api"
	"github.com/skep-io/skep/controlplane/api/conditions"
	"github.com/skep-io/skep/controlplane/client"
)

// Config is what a lab is made of.
type Config struct {
	Name      string // default DefaultName; part of every name the lab gives
	Nodes     int    // default 3
	Dataplane string // one of dataplane.Modes: "ebpf" (default), "iptables" or "nftables"
	Binary    string // the skep binary the server and agents run; required
	// ImagesDir holds the OCI image tarballs every agent imports at start
	// (`skep agent --images`); empty: the agents import none.
	ImagesDir string
	// Dir holds the lab's state, data and logs; default DirFor(Name).
	Dir string
	// ServerArgs and AgentArgs are appended to the command lines of the
	// server and of every agent, e.g. a shorter --pod-eviction-timeout.
	ServerArgs []string
	AgentArgs  []string
	// ReadyTimeout bounds the wait for every node to be Ready; default 3m.
	ReadyTimeout time.Duration
	Logger       *slog.Logger
	// Progress receives one line per step of Up and Down; nil: none.
	Progress io.Writer
}

// Lab is a lab cluster, brought up by Up or found by Open.
type Lab struct {
	cfg Config
	st  *state
	log *slog.Logger

	mu sync.Mutex
	// reaped holds, for processes this process started, a channel closed
	// once the process has been waited for.
	reaped map[int]<-chan struct{}
}

var nodesR = api.MustLookup("nodes")

func (c *Config) setDefaults() error {
	if c.Name == "" {
		c.Name = DefaultName
	}
	if err := checkName(c.Name); err != nil {
		return err
	}
	if c.Nodes == 0 {
		c.Nodes = 3
	}
	if c.Nodes < 1 || c.Nodes > 100 {
		return fmt.Errorf("nodes %d: a lab has 1 to 100 nodes", c.Nodes)
	}
	if c.Dataplane == "" {
		c.Dataplane = "ebpf"
	}
	if err := dataplane.CheckMode(c.Dataplane); err != nil {
		return err
	}
	if c.Binary == "" {
		return errors.New("no skep binary given to run the server and agents")
	}
	bin, err := filepath.Abs(c.Binary)
	if err != nil {
		return fmt.Errorf("binary %s: %w", c.Binary, err)
	}
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("binary: %w", err)
	}
	c.Binary = bin
	if c.ImagesDir != "" {
		if c.ImagesDir, err = filepath.Abs(c.ImagesDir); err != nil {
			return fmt.Errorf("images dir: %w", err)
		}
		if fi, err := os.Stat(c.ImagesDir); err != nil || !fi.IsDir() {
			return fmt.Errorf("images dir %s: not a directory", c.ImagesDir)
		}
	}
	if c.Dir == "" {
		c.Dir = DirFor(c.Name)
	}
	if c.Dir, err = filepath.Abs(c.Dir); err != nil {
		return fmt.Errorf("lab dir: %w", err)
	}
	if c.ReadyTimeout == 0 {
		c.ReadyTimeout = 3 * time.Minute
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if c.Progress == nil {
		c.Progress = io.Discard
	}
	return nil
}

func checkHost() error {
	if _, err := os.Stat(filepath.Join(cgroup2Root, "cgroup.procs")); err != nil {
		return fmt.Errorf("no cgroup2 hierarchy at %s: %w", cgroup2Root, err)
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs("/sys/fs/bpf", &st); err != nil || st.Type != bpfFSMagic {
		return errors.New("bpffs is not mounted at /sys/fs/bpf (mount -t bpf bpf /sys/fs/bpf, or make deps)")
	}
	for _, tool := range []string{"ip", "nsenter"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not found (Debian packages iproute2, util-linux): %w", tool, err)
		}
	}
	return nil
}

// Up builds a lab and waits until every node is Ready. When it fails, it
// removes what it made; the error then carries the end of the log that
// says why.
func Up(ctx context.Context, cfg Config) (*Lab, error) {
	return create(ctx, cfg, "up", func(l *Lab) error { return l.up(ctx) })
}

// create makes a lab with make, and removes what make made when it fails.
func create(ctx context.Context, cfg Config, what string, make func(*Lab) error) (*Lab, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	if err := checkHost(); err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(cfg.Dir, stateFile)); err == nil {
		return nil, fmt.Errorf("lab %s exists already (state in %s): skep lab down --name %s first", cfg.Name, cfg.Dir, cfg.Name)
	}
	l := &Lab{cfg: cfg, log: cfg.Logger.With("lab", cfg.Name), reaped: map[int]<-chan struct{}{}}
	if err := make(l); err != nil {
		l.progress("%s failed, removing what was made", what)
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
		defer cancel()
		if derr := l.Down(dctx); derr != nil {
			err = errors.Join(err, fmt.Errorf("and removing the half-made lab: %w", derr))
		}
		return nil, err
	}
	return l, nil
}

func (l *Lab) progress(format string, args ...any) {
	fmt.Fprintf(l.cfg.Progress, "lab %s: %s\n", l.cfg.Name, fmt.Sprintf(format, args...))
}

// up builds the lab's machines, then runs the server and an agent on
// every node with the lab's own command lines, and waits for the nodes.
func (l *Lab) up(ctx context.Context) error {
	if err := l.build(); err != nil {
		return err
	}
	if err := l.startServer(ctx); err != nil {
		return err
	}
	for i := range l.st.Nodes {
		n := &l.st.Nodes[i]
		if err := l.startAgent(n); err != nil {
			return err
		}
		l.progress("%s: agent pid %d", n.Name, n.Agent.PID)
	}
	return l.WaitReady(ctx, l.cfg.ReadyTimeout)
}

func (l *Lab) startServer(ctx context.Context) error {
	k := l.st.Subnet
	// A restarted server keeps its address: the agents' credentials and
	// admin.conf name it.
	listen := strings.TrimPrefix(l.st.ServerURL, "https://")
	if listen == "" {
		port, err := freePort(bridgeIP(k))
		if err != nil {
			return err
		}
		listen = netip.AddrPortFrom(bridgeIP(k), uint16(port)).String()
	}
	dataDir := filepath.Join(l.st.Dir, "server")
	argv := []string{l.st.Binary, "server", "--listen", listen, "--advertise-address", bridgeIP(k).String(),
		"--tls-san", bridgeIP(k).String(), "--data-dir", dataDir, "--nats-listen", "127.0.0.1:-1",
		"--lb-pool", lbPool(k).String(), "--cluster-cidr", ClusterCIDR, "--no-fsync",
		// Short-lived node credentials: the agents renew theirs several
		// times in an e2e run, so that rotation is tested with the rest.
		"--node-credential-ttl", "90s"}
	argv = append(argv, l.cfg.ServerArgs...)
	// The server writes ~/.skep/config when there is none; a lab's config
	// lives in its directory only, so that it goes with the lab.
	env := append(os.Environ(), "HOME="+filepath.Join(dataDir, "home"))
	logPath := filepath.Join(l.st.Dir, "logs", "server.log")
	p, done, err := daemon("", filepath.Join(l.st.Cgroup, "server"), argv, env, logPath)
	if err != nil {
		return fmt.Errorf("start the server: %w", err)
	}
	l.track(p, done)
	l.st.Server = p
	l.st.ServerURL = "https://" + listen
	if err := l.st.save(); err != nil {
		return err
	}
	l.progress("server %s (pid %d, log %s)", l.st.ServerURL, p.PID, logPath)

	// Ready when the API answers with the admin config.
	deadline := time.Now().Add(60 * time.Second)
	for {
		c, err := l.Client()
		if err == nil {
			lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, _, err = c.List(lctx, nodesR, "", client.ListOptions{})
			cancel()
			if err == nil {
				return nil
			}
		}
		if !p.running() {
			return fmt.Errorf("the server exited; the end of %s:\n%s", logPath, tail(logPath, 20))
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("the server at %s did not answer (%v); the end of %s:\n%s", l.st.ServerURL, err, logPath, tail(logPath, 20))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// agentArgs are the agent's flags, the same a real node's agent gets.
func (l *Lab) agentArgs(n *member) []string {
	argv := []string{l.st.Binary, "agent", "--server", l.st.ServerURL, "--node-name", n.Name,
		"--node-ip", n.IP, "--interface", "eth0", "--data-dir", n.DataDir, "--dataplane", l.st.Dataplane,
		"--cgroup-root", n.Cgroup, "--cluster-cidr", ClusterCIDR}
	if l.st.ImagesDir != "" {
		argv = append(argv, "--images", l.st.ImagesDir)
	}
	return append(argv, l.st.AgentArgs...)
}

func (l *Lab) startAgent(n *member) error {
	token, err := os.ReadFile(filepath.Join(l.st.Dir, "server", "node-token"))
	if err != nil {
		return fmt.Errorf("read the node token: %w", err)
	}
	// The token goes by environment, not on the command line that ps shows.
	env := append(os.Environ(), "SKEP_TOKEN="+strings.TrimSpace(string(token)))
	p, done, err := daemon(n.Netns, n.Cgroup, l.agentArgs(n), env, n.Log)
	if err != nil {
		return fmt.Errorf("start the agent of %s: %w", n.Name, err)
	}
	l.track(p, done)
	n.Agent = p
	return l.st.save()
}

func (l *Lab) track(p *proc, done <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.reaped[p.PID] = done
}

// WaitReady waits up to timeout until every node of the lab is Ready,
// writing progress as nodes become Ready. It fails early when an agent
// exits, with the end of its log.
func (l *Lab) WaitReady(ctx context.Context, timeout time.Duration) error {
	c, err := l.Client()
	if err != nil {
		return err
	}
	deadline := time.Now().Add(timeout)
	last := -1
	for {
		ready, notReady := l.readiness(ctx, c)
		if len(ready) != last {
			l.progress("%d/%d nodes Ready", len(ready), len(l.st.Nodes))
			last = len(ready)
		}
		if len(notReady) == 0 {
			return nil
		}
		for _, n := range l.st.Nodes {
			if n.Agent != nil && !n.Agent.running() {
				return fmt.Errorf("the agent of %s exited; the end of %s:\n%s", n.Name, n.Log, tail(n.Log, 20))
			}
		}
		if time.Now().After(deadline) {
			n := l.member(notReady[0])
			return fmt.Errorf("nodes not Ready after %s: %s; the end of %s:\n%s", timeout, strings.Join(notReady, ", "), n.Log, tail(n.Log, 20))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for nodes Ready: %w", ctx.Err())
		case <-time.After(300 * time.Millisecond):
		}
	}
}

// readiness sorts the lab's nodes into Ready and not (yet) Ready.
func (l *Lab) readiness(ctx context.Context, c *client.HTTP) (ready, notReady []string) {
	lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	objs, _, err := c.List(lctx, nodesR, "", client.ListOptions{})
	isReady := map[string]bool{}
	if err == nil {
		for _, o := range objs {
			n := o.(*corev1.Node)
			if conditions.NodeReady(n) {
				isReady[n.Name] = true
			}
		}
	}
	for _, n := range l.st.Nodes {
		if isReady[n.Name] {
			ready = append(ready, n.Name)
		} else {
			notReady = append(notReady, n.Name)
		}
	}
	return ready, notReady
}

// Open finds a lab by its state file: in dir, or in DirFor(name) when dir
// is empty. It fails with ErrNoLab when there is none.
func Open(name, dir string) (*Lab, error) {
	if name == "" {
		name = DefaultName
	}
	if dir == "" {
		dir = DirFor(name)
	}
	st, err := loadState(dir)
	if err != nil {
		return nil, err
	}
	cfg := Config{Name: st.Name, Nodes: len(st.Nodes), Dataplane: st.Dataplane, Binary: st.Binary,
		ImagesDir: st.ImagesDir, Dir: st.Dir, AgentArgs: st.AgentArgs, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Progress: io.Discard}
	return &Lab{cfg: cfg, st: st, log: cfg.Logger, reaped: map[int]<-chan struct{}{}}, nil
}

// SetProgress sends the progress lines of later calls (Down, WaitReady) to w.
func (l *Lab) SetProgress(w io.Writer) {
	if w == nil {
		w = io.Discard
	}
	l.cfg.Progress = w
}

// Config is the configuration the lab was made with.
func (l *Lab) Config() Config { return l.cfg }

// Name is the lab's name.
func (l *Lab) Name() string { return l.st.Name }

// AdminConfigPath is the admin's client config: export SKEPCONFIG=<it>.
func (l *Lab) AdminConfigPath() string { return filepath.Join(l.st.Dir, "server", "admin.conf") }

// ServerURL is the API server's address, on the bridge.
func (l *Lab) ServerURL() string { return l.st.ServerURL }

// Client is an API client with the admin's credentials.
func (l *Lab) Client() (*client.HTTP, error) {
	cfg, err := client.LoadConfig(l.AdminConfigPath())
	if err != nil {
		return nil, fmt.Errorf("load the lab's admin config: %w", err)
	}
	return client.New(cfg)
}

// Nodes are the names of the lab's nodes, as registered: <lab>-node1 ...
func (l *Lab) Nodes() []string {
	var out []string
	for _, n := range l.st.Nodes {
		out = append(out, n.Name)
	}
	return out
}

// member finds a node by its name (<lab>-node2) or short name (node2), or
// the client by "client".
func (l *Lab) member(name string) *member {
	if name == ClientName {
		return &l.st.Client
	}
	for i := range l.st.Nodes {
		if n := &l.st.Nodes[i]; n.Name == name || n.Short == name {
			return n
		}
	}
	return nil
}

func (l *Lab) mustMember(name string) (*member, error) {
	m := l.member(name)
	if m == nil {
		return nil, fmt.Errorf("lab %s has no node %q (it has %s and %s)", l.st.Name, name, strings.Join(l.Nodes(), ", "), ClientName)
	}
	return m, nil
}

// NodeIP is a node's InternalIP (the invalid address for an unknown node).
func (l *Lab) NodeIP(node string) netip.Addr {
	if m := l.member(node); m != nil && m.Name != ClientName {
		a, _ := netip.ParseAddr(m.IP)
		return a
	}
	return netip.Addr{}
}

// ClientIP is the address of the client namespace, the world outside.
func (l *Lab) ClientIP() netip.Addr { return clientIP(l.st.Subnet) }

// BridgeIP is the host's address on the node network.
func (l *Lab) BridgeIP() netip.Addr { return bridgeIP(l.st.Subnet) }

// LBPool is the range LoadBalancer addresses come from; the client routes
// it through the nodes.
func (l *Lab) LBPool() netip.Prefix { return lbPool(l.st.Subnet) }

// Netns is the network namespace's name of a node or of the client.
func (l *Lab) Netns(node string) string {
	if m := l.member(node); m != nil {
		return m.Netns
	}
	return ""
}

// Cgroup is the cgroup2 directory of a node or of the client.
func (l *Lab) Cgroup(node string) string {
	if m := l.member(node); m != nil {
		return m.Cgroup
	}
	return ""
}

// LogPath is the log of a node's agent, or of the server for "server".
func (l *Lab) LogPath(node string) string {
	if node == "server" {
		return filepath.Join(l.st.Dir, "logs", "server.log")
	}
	if m := l.member(node); m != nil {
		return m.Log
	}
	return ""
}

// AgentRunning says whether a node's agent process is running.
func (l *Lab) AgentRunning(node string) bool {
	m := l.member(node)
	return m != nil && m.Agent.running()
}

// ServerRunning says whether the server process is running.
func (l *Lab) ServerRunning() bool { return l.st.Server.running() }

// Exec runs argv on a node (its name or node<i>), or on the client for
// "client": in its network namespace and its cgroup, so the node's socket
// programs see it as one of the node's processes. It returns the command's
// exit status; err is for a command that could not run or was killed,
// also when ctx ended.
func (l *Lab) Exec(ctx context.Context, node string, argv []string, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	m, err := l.mustMember(node)
	if err != nil {
		return -1, err
	}
	cmd, fd, err := command(ctx, m.Netns, m.Cgroup, argv)
	if err != nil {
		return -1, err
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
	err = cmd.Start()
	fd.Close()
	if err != nil {
		return -1, fmt.Errorf("run %s on %s: %w", argv[0], node, err)
	}
	err = cmd.Wait()
	var exit *exec.ExitError
	if errors.As(err, &exit) && exit.ExitCode() >= 0 && ctx.Err() == nil {
		return exit.ExitCode(), nil
	}
	if err != nil {
		return -1, fmt.Errorf("run %s on %s: %w", argv[0], node, err)
	}
	return 0, nil
}

// StopAgent stops a node's agent (SIGTERM, then SIGKILL after 10 s) and
// leaves everything else of the node running: its pods, containerd (as far
// as the agent leaves it) and dataplane.
func (l *Lab) StopAgent(ctx context.Context, node string) error {
	m, err := l.mustMember(node)
	if err != nil {
		return err
	}
	l.stopTracked(m.Agent, 10*time.Second)
	return nil
}

// StartAgent starts a node's agent again, with the flags it had.
func (l *Lab) StartAgent(ctx context.Context, node string) error {
	m, err := l.mustMember(node)
	if err != nil {
		return err
	}
	if m.Agent.running() {
		return fmt.Errorf("the agent of %s is running (pid %d)", m.Name, m.Agent.PID)
	}
	return l.startAgent(m)
}

// KillNode kills every process of a node at once (agent, containerd,
// shims, pods: its whole cgroup) and cuts its cable to the node network,
// as a machine that loses power. ReviveNode undoes the cable cut and starts
// the agent again.
func (l *Lab) KillNode(ctx context.Context, node string) error {
	m, err := l.mustMember(node)
	if err != nil {
		return err
	}
	if err := setLinkUp(m.HostVeth, false); err != nil {
		return err
	}
	procs := cgroupProcs(m.Cgroup)
	if !killProcs(m.Cgroup) {
		return fmt.Errorf("kill node %s: processes remain in %s", m.Name, m.Cgroup)
	}
	l.mu.Lock()
	done := l.reaped[m.Agent.PID]
	l.mu.Unlock()
	if done != nil {
		<-done
	}
	l.waitGone(procs, 15*time.Second)
	return nil
}

// CutNode sets a node's cable to the node network down (or up again, with
// up true); its processes keep running.
func (l *Lab) CutNode(node string, up bool) error {
	m, err := l.mustMember(node)
	if err != nil {
		return err
	}
	return setLinkUp(m.HostVeth, up)
}

// ReviveNode reconnects a killed node and, once it reaches the API server
// again, starts its agent.
func (l *Lab) ReviveNode(ctx context.Context, node string) error {
	if err := l.CutNode(node, true); err != nil {
		return err
	}
	m, _ := l.mustMember(node)
	if err := dialFrom(m.Netns, strings.TrimPrefix(l.st.ServerURL, "https://"), 10*time.Second); err != nil {
		return fmt.Errorf("revive %s: %w", m.Name, err)
	}
	return l.StartAgent(ctx, node)
}

// stopTracked stops a process of the lab and, when this process started
// it, waits until it has been reaped.
func (l *Lab) stopTracked(p *proc, grace time.Duration) {
	if p == nil {
		return
	}
	p.stop(grace)
	l.mu.Lock()
	done := l.reaped[p.PID]
	l.mu.Unlock()
	if done != nil {
		select {
		case <-done:
		case <-time.After(5 * time.Second):
		}
	}
}

// waitGone waits until the processes have left /proc entirely. Processes
// this process did not start are reaped by PID 1, which on some machines
// takes a while; until then they are zombies that still count as ours.
func (l *Lab) waitGone(procs []proc, d time.Duration) bool {
	return waitFor(d, func() bool {
		for i := range procs {
			if procs[i].exists() {
				return false
			}
		}
		return true
	})
}

// PIDs are the recorded processes of the lab that run: the server and the
// agents.
func (l *Lab) PIDs() []int {
	var out []int
	for _, p := range l.started() {
		if p.running() {
			out = append(out, p.PID)
		}
	}
	return out
}

// Bridge is the name of the lab's bridge in the host namespace.
func (l *Lab) Bridge() string { return l.st.Bridge }

// Dir is the lab's directory: state, data and logs.
func (l *Lab) Dir() string { return l.st.Dir }

// Ready says, for every node of the lab, whether the API server has it
// Ready.
func (l *Lab) Ready(ctx context.Context) (map[string]bool, error) {
	c, err := l.Client()
	if err != nil {
		return nil, err
	}
	lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, _, err := c.List(lctx, nodesR, "", client.ListOptions{}); err != nil {
		return nil, fmt.Errorf("list nodes at %s: %w", l.st.ServerURL, err)
	}
	ready, _ := l.readiness(ctx, c)
	out := map[string]bool{}
	for _, n := range l.st.Nodes {
		out[n.Name] = false
	}
	for _, n := range ready {
		out[n] = true
	}
	return out, nil
}

// List names the labs that have a state file under DefaultRoot.
func List() ([]string, error) {
	entries, err := os.ReadDir(DefaultRoot)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list labs: %w", err)
	}
	var out []string
	for _, e := range entries {
		if _, err := os.Stat(filepath.Join(DefaultRoot, e.Name(), stateFile)); err == nil {
			out = append(out, e.Name())
		}
	}
	return out, nil
}
