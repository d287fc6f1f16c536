package lab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Build makes a lab's machines and starts nothing on them: the bridge, each
// node's network namespace, cgroup and data directory, and the client
// outside. It is for running the server and the agents with command lines
// of one's own (RunServer, RunAgent), such as the ExecStart lines of the
// systemd units the Vagrant provisioning writes, where Up runs the lab's
// own. Of cfg, Build uses Name, Nodes, Dataplane (what Down's cleanup of a
// node assumes), Binary (the one that cleanup runs), Dir, Logger and
// Progress. Down removes a built lab as it removes one from Up; when Build
// fails, it removes what it made.
func Build(ctx context.Context, cfg Config) (*Lab, error) {
	return create(ctx, cfg, "build", func(l *Lab) error { return l.build() })
}

// build is Up's making of the network, namespaces and cgroups, without the
// server and the agents; like Up, it records every name before it makes
// anything.
func (l *Lab) build() error {
	cfg := l.cfg
	for _, d := range []string{cfg.Dir, filepath.Join(cfg.Dir, "logs"), filepath.Join(cfg.Dir, "nodes")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("create %s: %w", d, err)
		}
	}
	unlock, err := lockSubnets()
	if err != nil {
		return err
	}
	k, err := freeSubnet(cfg.Name)
	if err != nil {
		unlock()
		return err
	}
	l.st = &state{
		Name: cfg.Name, Dir: cfg.Dir, Binary: cfg.Binary, Dataplane: cfg.Dataplane, ImagesDir: cfg.ImagesDir,
		AgentArgs: cfg.AgentArgs, Subnet: k, Bridge: bridgeName(cfg.Name), Cgroup: filepath.Join(cgroup2Root, "sklab-"+cfg.Name),
	}
	l.st.Client = member{Name: ClientName, Short: ClientName, Netns: clientNetns(cfg.Name), HostVeth: clientVeth(k),
		IP: clientIP(k).String(), Cgroup: filepath.Join(l.st.Cgroup, ClientName)}
	for i := 1; i <= cfg.Nodes; i++ {
		short := "node" + strconv.Itoa(i)
		l.st.Nodes = append(l.st.Nodes, member{
			Name: nodeName(cfg.Name, i), Short: short, Netns: nodeNetns(cfg.Name, i), HostVeth: nodeVeth(k, i),
			IP: nodeIP(k, i).String(), Cgroup: filepath.Join(l.st.Cgroup, short),
			DataDir: filepath.Join(cfg.Dir, "nodes", short), Log: filepath.Join(cfg.Dir, "logs", short+".log"),
		})
	}
	if err := l.st.save(); err != nil {
		unlock()
		return err
	}
	err = makeBridge(l.st.Bridge, bridgeIP(k))
	unlock()
	if err != nil {
		return err
	}
	l.progress("bridge %s with %s, node network %s", l.st.Bridge, bridgeIP(k), subnet(k))
	for _, dir := range []string{l.st.Cgroup, l.st.Client.Cgroup, filepath.Join(l.st.Cgroup, "server")} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("create cgroup %s: %w", dir, err)
		}
	}
	var gws []netip.Addr
	for i := range l.st.Nodes {
		n := &l.st.Nodes[i]
		if err := makeNetns(n.Netns); err != nil {
			return err
		}
		if err := plug(n.Netns, n.HostVeth, l.st.Bridge, nodeIP(k, i+1), bridgeIP(k)); err != nil {
			return err
		}
		if err := os.MkdirAll(n.Cgroup, 0o755); err != nil {
			return fmt.Errorf("create cgroup %s: %w", n.Cgroup, err)
		}
		if err := os.MkdirAll(n.DataDir, 0o700); err != nil {
			return fmt.Errorf("create %s: %w", n.DataDir, err)
		}
		gws = append(gws, nodeIP(k, i+1))
		l.progress("%s: %s in netns %s, cgroup %s", n.Name, n.IP, n.Netns, n.Cgroup)
	}
	c := &l.st.Client
	if err := makeNetns(c.Netns); err != nil {
		return err
	}
	if err := plug(c.Netns, c.HostVeth, l.st.Bridge, clientIP(k), bridgeIP(k)); err != nil {
		return err
	}
	if err := routeVia(c.Netns, lbPool(k), gws); err != nil {
		return err
	}
	l.progress("client %s in netns %s; LoadBalancer pool %s routed through the nodes", c.IP, c.Netns, lbPool(k))
	return nil
}

// RunServer starts argv, a `skep server` command line, as the lab's server:
// in the host's network namespace and the lab's server cgroup, its output
// appended to LogPath("server"). url is where it serves the API
// (ServerURL). Down stops it. Client, Ready and WaitReady read the admin
// config from AdminConfigPath, so they work only when argv's --data-dir is
// Dir()/server.
func (l *Lab) RunServer(argv, env []string, url string) error {
	if len(argv) == 0 {
		return errors.New("run the server: no command line given")
	}
	if l.st.Server.running() {
		return fmt.Errorf("the server of lab %s is running (pid %d)", l.st.Name, l.st.Server.PID)
	}
	logPath := l.LogPath("server")
	p, done, err := daemon("", filepath.Join(l.st.Cgroup, "server"), argv, env, logPath)
	if err != nil {
		return fmt.Errorf("start the server: %w", err)
	}
	l.track(p, done)
	l.st.Server = p
	l.st.ServerURL = url
	if err := l.st.save(); err != nil {
		return err
	}
	l.progress("server %s (pid %d, log %s)", url, p.PID, logPath)
	return nil
}

// RunAgent starts argv, a `skep agent` command line, as a node's agent: in
// the node's network namespace and cgroup, its output appended to
// LogPath(node). Down stops it and then runs `skep agent --cleanup` with the
// node's name, DataDir and Cgroup, so argv must give exactly those as
// --node-name, --data-dir and --cgroup-root (RunAgent refuses it
// otherwise): the cleanup then finds everything the agent made.
func (l *Lab) RunAgent(node string, argv, env []string) error {
	m, err := l.mustMember(node)
	if err != nil {
		return err
	}
	if m.Name == ClientName {
		return errors.New("run an agent: the client is not a node")
	}
	if len(argv) == 0 {
		return fmt.Errorf("run the agent of %s: no command line given", m.Name)
	}
	for flag, want := range map[string]string{"--node-name": m.Name, "--data-dir": m.DataDir, "--cgroup-root": m.Cgroup} {
		if got, ok := flagValue(argv, flag); !ok || got != want {
			return fmt.Errorf("run the agent of %s: %s is %q, but the lab's cleanup of the node needs %q", m.Name, flag, got, want)
		}
	}
	if m.Agent.running() {
		return fmt.Errorf("the agent of %s is running (pid %d)", m.Name, m.Agent.PID)
	}
	p, done, err := daemon(m.Netns, m.Cgroup, argv, env, m.Log)
	if err != nil {
		return fmt.Errorf("start the agent of %s: %w", m.Name, err)
	}
	l.track(p, done)
	m.Agent = p
	if err := l.st.save(); err != nil {
		return err
	}
	l.progress("%s: agent pid %d (log %s)", m.Name, p.PID, m.Log)
	return nil
}

// DataDir is the data directory of a node's agent ("" for an unknown node).
func (l *Lab) DataDir(node string) string {
	if m := l.member(node); m != nil {
		return m.DataDir
	}
	return ""
}

// flagValue finds a flag's value in a command line, given as "--flag
// value" or "--flag=value"; the last one counts, as for the CLI.
func flagValue(argv []string, flag string) (value string, found bool) {
	for i := 0; i < len(argv); i++ {
		if v, ok := strings.CutPrefix(argv[i], flag+"="); ok {
			value, found = v, true
		} else if argv[i] == flag && i+1 < len(argv) {
			value, found = argv[i+1], true
			i++
		}
	}
	return value, found
}
