// Package provision checks the Vagrant lab on a machine that cannot boot
// VMs: the Vagrantfile with `vagrant validate`, and the provisioning
// scripts by running them under a scratch root and starting what they set
// up — the command lines of the systemd units they write — on a netns lab,
// one of its nodes playing a worker VM.
package provision

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/skep-io/skep/controlplane/api/conditions"
	"github.com/skep-io/skep/internal/testwait"
	"github.com/skep-io/skep/lab"
	"github.com/skep-io/skep/lab/labtest"
	"github.com/skep-io/skep/test/images"
)

var (
	skepBinary  string // built from this tree, as `make build` builds bin/skep
	imagesDir   string // the test images, as `make images` builds _out/images
	vagrantHome string // Vagrant's own state, kept out of ~/.vagrant.d
)

func TestMain(m *testing.M) {
	if err := labtest.BecomeSubreaper(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	dir, err := os.MkdirTemp("", "skep-vagrant-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := func() int {
		if skepBinary, err = labtest.BuildSkep(dir); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		imagesDir = filepath.Join(dir, "images")
		if _, err := images.Build(context.Background(), imagesDir); err != nil {
			fmt.Fprintf(os.Stderr, "build the test images: %v\n", err)
			return 1
		}
		vagrantHome = filepath.Join(dir, "vagrant.d")
		code := m.Run()
		if !labtest.WaitShimsGone(15 * time.Second) {
			fmt.Fprintln(os.Stderr, "containerd shims still running 15s after the tests")
			code = 1
		}
		return code
	}()
	os.RemoveAll(dir)
	os.Exit(code)
}

// repoRoot is the top of the repository: the test runs in test/lab.
const repoRoot = "../.."

// TestVagrantfileValidates runs `vagrant validate` on the Vagrantfile: with
// the libvirt provider's settings checked by its plugin, and with the
// provider settings ignored (the machines it defines are then listed, one
// line each). VirtualBox's settings cannot be checked here: its provider
// refuses to load without VirtualBox installed.
func TestVagrantfileValidates(t *testing.T) {
	built := vagrantTree(t, true)
	for _, tc := range []struct {
		name     string
		tree     string
		env      []string
		args     []string
		ok       bool
		machines []string // listed by --ignore-provider
		says     string   // in the output
	}{
		{name: "libvirt", tree: built, env: []string{"VAGRANT_DEFAULT_PROVIDER=libvirt"}, args: []string{"validate"}, ok: true},
		{name: "provider-neutral", tree: built, args: []string{"validate", "--ignore-provider"}, ok: true,
			machines: []string{"cp", "worker1", "worker2"}},
		{name: "SKEP_WORKERS=3 libvirt", tree: built, env: []string{"SKEP_WORKERS=3", "VAGRANT_DEFAULT_PROVIDER=libvirt"},
			args: []string{"validate"}, ok: true},
		{name: "SKEP_WORKERS=3 provider-neutral", tree: built, env: []string{"SKEP_WORKERS=3"},
			args: []string{"validate", "--ignore-provider"}, ok: true, machines: []string{"cp", "worker1", "worker2", "worker3"}},
		{name: "SKEP_WORKERS=0", tree: built, env: []string{"SKEP_WORKERS=0"}, args: []string{"validate", "--ignore-provider"},
			says: "SKEP_WORKERS=0: give a number of worker VMs from 1 to 20"},
		{name: "no bin/skep", tree: vagrantTree(t, false), args: []string{"validate", "--ignore-provider"},
			says: "bin/skep is missing: run `make build` first"},
		{name: "a provisioning script missing", tree: without(t, vagrantTree(t, true), "test/lab/provision-agent.sh"),
			args: []string{"validate", "--ignore-provider"}, says: "provision-agent.sh"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := vagrant(t, tc.tree, tc.env, tc.args...)
			t.Logf("%s vagrant %s:\n%s", strings.Join(tc.env, " "), strings.Join(tc.args, " "), out)
			if tc.ok && err != nil {
				t.Fatalf("vagrant %s: %v, want success", strings.Join(tc.args, " "), err)
			}
			if !tc.ok && err == nil {
				t.Fatalf("vagrant %s succeeded, want a failure saying %q", strings.Join(tc.args, " "), tc.says)
			}
			if !strings.Contains(out, tc.says) {
				t.Errorf("the output does not say %q", tc.says)
			}
			if tc.machines != nil {
				if got := listedMachines(out); strings.Join(got, " ") != strings.Join(tc.machines, " ") {
					t.Errorf("machines %v, want %v", got, tc.machines)
				}
			}
		})
	}
}

// vagrantTree is a directory holding what the Vagrantfile reads — itself,
// the provisioning scripts, and (withBuild) bin/skep and the test images —
// so that validating neither depends on what `make build` left in the
// repository nor leaves anything there.
func vagrantTree(t *testing.T, withBuild bool) string {
	t.Helper()
	dir := t.TempDir()
	for _, f := range []string{"Vagrantfile", "test/lab/install-deps.sh", "test/lab/provision-server.sh", "test/lab/provision-agent.sh"} {
		data, err := os.ReadFile(filepath.Join(repoRoot, f))
		if err != nil {
			t.Fatal(err)
		}
		mustWrite(t, filepath.Join(dir, f), data, 0o755)
	}
	if withBuild {
		mustSymlink(t, skepBinary, filepath.Join(dir, "bin", "skep"))
		mustSymlink(t, imagesDir, filepath.Join(dir, "_out", "images"))
	}
	return dir
}

// without removes a file from a tree.
func without(t *testing.T, dir, file string) string {
	t.Helper()
	if err := os.Remove(filepath.Join(dir, file)); err != nil {
		t.Fatal(err)
	}
	return dir
}

// vagrant runs the vagrant command in dir. Vagrant's state goes to
// vagrantHome and dir/.vagrant, and it asks no server whether it is up to
// date: a test talks to nothing outside the machine.
func vagrant(t *testing.T, dir string, env []string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "vagrant", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "VAGRANT_HOME="+vagrantHome, "VAGRANT_DOTFILE_PATH="+filepath.Join(dir, ".vagrant"),
		"VAGRANT_CHECKPOINT_DISABLE=1", "VAGRANT_BOX_UPDATE_CHECK_DISABLE=1", "VAGRANT_NO_COLOR=1")
	cmd.Env = append(cmd.Env, env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// listedMachines reads "==> NAME: Ignoring provider config for
// validation..." lines.
func listedMachines(out string) []string {
	var names []string
	for _, line := range strings.Split(out, "\n") {
		if rest, ok := strings.CutPrefix(line, "==> "); ok && strings.Contains(rest, "Ignoring provider config") {
			name, _, _ := strings.Cut(rest, ":")
			names = append(names, name)
		}
	}
	return names
}

// Paths as the VMs have them; under the test's scratch root here.
const (
	syncedRepo   = "/vagrant" // the repository, synced by the Vagrantfile
	serverUnit   = "/etc/systemd/system/skep-server.service"
	agentUnit    = "/etc/systemd/system/skep-agent.service"
	installedBin = "/usr/local/bin/skep"
	shareDir     = syncedRepo + "/_out/vagrant" // token, URL and admin config for the host and workers
	vagrantHomeD = "/home/vagrant"              // the vagrant user's home (no such user here)
)

// TestProvisioningOnNetnsLab runs the Vagrant lab's provisioning on a netns
// lab: provision-server.sh and provision-agent.sh under a scratch root with
// no systemctl, then the server and an agent started from the ExecStart
// lines of the units they wrote — the server in the host namespace playing
// cp, the agent in a lab node playing worker1, only paths and the ports of
// this shared machine changed. The node must become Ready in `skep get
// nodes` run with the admin config the server's script installed, and a pod
// must run there and answer.
func TestProvisioningOnNetnsLab(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 6*time.Minute)
	defer cancel()
	// First, so that it is removed after the lab's teardown (cleanups run
	// last-registered first): the server keeps its data here.
	root := t.TempDir()
	name := labtest.Name("vg")
	l, err := lab.Build(ctx, lab.Config{Name: name, Nodes: 1, Binary: skepBinary,
		Dir: filepath.Join(os.TempDir(), "skep-lab-"+name), Progress: logWriter{t}})
	if err != nil {
		t.Fatalf("build lab %s: %v", name, err)
	}
	t.Cleanup(func() { labtest.Teardown(t, l) })
	node := l.Nodes()[0]
	cpIP := l.BridgeIP() // the server listens on the host's address on the node network

	// The synced folder: bin/skep from `make build`, _out/images from
	// `make images`.
	mustSymlink(t, skepBinary, filepath.Join(root, syncedRepo, "bin", "skep"))
	mustSymlink(t, imagesDir, filepath.Join(root, syncedRepo, "_out", "images"))

	// cp. The script waits for the server it enabled to make its token, so
	// it runs while the test starts the server from the unit.
	port := freePort(t, cpIP) // 6443 in the VM; here the machine is shared
	serverScript := startScript(t, ctx, root, "./provision-server.sh", cpIP.String(), l.LBPool().String(), strconv.Itoa(port))
	testwait.For(t, 30*time.Second, 300*time.Millisecond, testwait.Holds("provision-server.sh writes "+serverUnit, func() bool {
		return strings.Contains(serverScript.output(), "wrote "+serverUnit)
	}))
	srv := readUnit(t, filepath.Join(root, serverUnit))
	argv := srv.execStart(t)
	if argv[0] != installedBin || argv[1] != "server" {
		t.Fatalf("%s: ExecStart %q, want %s server ...", serverUnit, argv, installedBin)
	}
	for flag, want := range map[string]string{"--listen": fmt.Sprintf("%s:%d", cpIP, port), "--advertise-address": cpIP.String(),
		"--tls-san": cpIP.String(), "--lb-pool": l.LBPool().String()} {
		if got := flagValue(argv, flag); got != want {
			t.Errorf("%s: %s %q, want %q", serverUnit, flag, got, want)
		}
	}
	argv[0] = filepath.Join(root, argv[0]) // what the script installed: the fresh build
	argv = setFlag(argv, "--data-dir", filepath.Join(root, flagValue(argv, "--data-dir")))
	argv = setFlag(argv, "--nats-listen", "127.0.0.1:-1") // 127.0.0.1:4222 in the VM
	serverURL := fmt.Sprintf("https://%s:%d", cpIP, port)
	t.Logf("cp: %s", strings.Join(argv, " "))
	// systemd gives root's services no HOME of their own making; the
	// server writes ~/.skep/config there when there is none.
	serverEnv := append(os.Environ(), "HOME="+filepath.Join(root, "root"))
	if err := l.RunServer(argv, serverEnv, serverURL); err != nil {
		t.Fatal(err)
	}
	if err := serverScript.wait(2 * time.Minute); err != nil {
		t.Fatalf("provision-server.sh: %v\n%s", err, serverScript.output())
	}
	t.Logf("provision-server.sh:\n%s", serverScript.output())
	token := mustRead(t, filepath.Join(root, "/var/lib/skep/server/node-token"))
	adminConf := filepath.Join(root, vagrantHomeD, ".skep", "config")
	for path, want := range map[string]string{
		filepath.Join(root, shareDir, "node-token"): token,
		filepath.Join(root, shareDir, "server-url"): serverURL + "\n",
		filepath.Join(root, shareDir, "admin.conf"): mustRead(t, filepath.Join(root, "/var/lib/skep/server/admin.conf")),
		adminConf: mustRead(t, filepath.Join(root, "/var/lib/skep/server/admin.conf")),
	} {
		if got := mustRead(t, path); got != want {
			t.Errorf("%s holds %q, want %q", path, got, want)
		}
	}

	// worker1.
	deps := runScript(t, ctx, root, "./install-deps.sh", "node")
	if !strings.Contains(deps, "deps (node): all present") {
		t.Errorf("install-deps.sh node:\n%s\nwant it to find everything a node needs", deps)
	}
	nodeIP := l.NodeIP(node).String()
	t.Logf("provision-agent.sh:\n%s", runScript(t, ctx, root, "./provision-agent.sh", node, nodeIP))
	agent := readUnit(t, filepath.Join(root, agentUnit))
	argv = agent.execStart(t)
	if argv[0] != installedBin || argv[1] != "agent" {
		t.Fatalf("%s: ExecStart %q, want %s agent ...", agentUnit, argv, installedBin)
	}
	for flag, want := range map[string]string{"--server": serverURL, "--node-name": node, "--node-ip": nodeIP,
		"--images": syncedRepo + "/_out/images"} {
		if got := flagValue(argv, flag); got != want {
			t.Errorf("%s: %s %q, want %q", agentUnit, flag, got, want)
		}
	}
	argv[0] = filepath.Join(root, argv[0])
	argv = setFlag(argv, "--images", filepath.Join(root, flagValue(argv, "--images")))
	// The lab's node: its data dir (short enough for containerd's socket
	// path) and cgroup, where the lab's teardown cleans up.
	argv = setFlag(argv, "--data-dir", l.DataDir(node))
	argv = setFlag(argv, "--cgroup-root", l.Cgroup(node))
	agentEnv := append(os.Environ(), readEnvFile(t, filepath.Join(root, agent.service["EnvironmentFile"]))...)
	if !contains(agentEnv, "SKEP_TOKEN="+strings.TrimSpace(token)) {
		t.Fatalf("%s: no SKEP_TOKEN with the server's node-token", agent.service["EnvironmentFile"])
	}
	t.Logf("%s: %s", node, strings.Join(argv, " "))
	if err := l.RunAgent(node, argv, agentEnv); err != nil {
		t.Fatal(err)
	}

	// What `vagrant ssh cp -c 'skep get nodes'` shows.
	skep := func(stdin string, args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, skepBinary, args...)
		cmd.Env = append(os.Environ(), "SKEPCONFIG="+adminConf)
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	var nodes string
	testwait.For(t, 3*time.Minute, 300*time.Millisecond, testwait.Holds(node+" Ready in skep get nodes", func() bool {
		if !l.AgentRunning(node) {
			t.Fatalf("the agent of %s exited", node)
		}
		nodes, _ = skep("", "get", "nodes")
		return nodeReady(nodes, node)
	}))
	t.Logf("skep get nodes:\n%s", nodes)

	if out, err := skep(echoPod, "apply", "-f", "-"); err != nil {
		t.Fatalf("skep apply: %v\n%s", err, out)
	}
	var pod corev1.Pod
	testwait.For(t, 2*time.Minute, 300*time.Millisecond, testwait.Holds("pod echo Running and Ready", func() bool {
		out, err := skep("", "get", "pod", "echo", "-o", "json")
		if err != nil || json.Unmarshal([]byte(out), &pod) != nil {
			return false
		}
		return pod.Status.Phase == corev1.PodRunning && conditions.PodReady(&pod) && pod.Status.PodIP != ""
	}))
	if pod.Spec.NodeName != node {
		t.Errorf("pod echo on node %q, want %q", pod.Spec.NodeName, node)
	}
	var answer bytes.Buffer
	url := "http://" + net.JoinHostPort(pod.Status.PodIP, "8080") + "/"
	if code, err := l.Exec(ctx, node, []string{"curl", "-sS", "-m", "5", url}, nil, &answer, &answer); err != nil || code != 0 {
		t.Fatalf("curl %s on %s: exit %d, %v\n%s", url, node, code, err, answer.String())
	}
	var got struct{ Pod, Node string }
	if err := json.Unmarshal(answer.Bytes(), &got); err != nil || got.Pod != "echo" || got.Node != node {
		t.Fatalf("curl %s on %s: %q, want the answer of pod echo on %s", url, node, answer.String(), node)
	}
	t.Logf("pod echo (%s) on %s answers: %s", pod.Status.PodIP, node, strings.TrimSpace(answer.String()))
}

const echoPod = `apiVersion: v1
kind: Pod
metadata:
  name: echo
spec:
  containers:
  - name: echo
    image: skep/echo:latest
    env:
    - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    - {name: NODE_NAME, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}
    readinessProbe:
      httpGet: {path: /, port: 8080}
      periodSeconds: 1
`

// unit is a systemd unit file's [Service] section.
type unit struct {
	path    string
	service map[string]string
}

// readUnit reads the [Service] section of a unit file, continuation lines
// (a trailing backslash) joined.
func readUnit(t *testing.T, path string) unit {
	t.Helper()
	u := unit{path: path, service: map[string]string{}}
	section := ""
	sc := bufio.NewScanner(strings.NewReader(strings.ReplaceAll(mustRead(t, path), "\\\n", " ")))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "["):
			section = line
		case section == "[Service]":
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				t.Fatalf("%s: %q is no KEY=VALUE", path, line)
			}
			u.service[k] = v
		}
	}
	return u
}

// execStart splits ExecStart into words. It refuses what systemd would read
// differently from a split on spaces: quotes, variables, specifiers and
// prefixes such as '-' or '@'.
func (u unit) execStart(t *testing.T) []string {
	t.Helper()
	line := u.service["ExecStart"]
	if strings.ContainsAny(line, "\"'$%\\") || strings.ContainsAny(line[:min(1, len(line))], "-@:+!") {
		t.Fatalf("%s: ExecStart %q needs systemd's own parsing; keep it to plain words", u.path, line)
	}
	argv := strings.Fields(line)
	if len(argv) < 2 {
		t.Fatalf("%s: ExecStart %q is no command line", u.path, line)
	}
	return argv
}

// readEnvFile reads KEY=VALUE lines, as systemd's EnvironmentFile= (without
// its quoting, which the provisioning does not write).
func readEnvFile(t *testing.T, path string) []string {
	t.Helper()
	var env []string
	for _, line := range strings.Split(mustRead(t, path), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if !strings.Contains(line, "=") || strings.ContainsAny(line, "\"'") {
			t.Fatalf("%s: %q is no plain KEY=VALUE line", path, line)
		}
		env = append(env, line)
	}
	return env
}

// flagValue is a flag's value in a command line ("--flag value" or
// "--flag=value"; the last counts); "" when absent.
func flagValue(argv []string, flag string) string {
	value := ""
	for i := 0; i < len(argv); i++ {
		if v, ok := strings.CutPrefix(argv[i], flag+"="); ok {
			value = v
		} else if argv[i] == flag && i+1 < len(argv) {
			value = argv[i+1]
			i++
		}
	}
	return value
}

// setFlag gives a flag a new value where the command line has it, or adds
// it at the end.
func setFlag(argv []string, flag, value string) []string {
	out := append([]string(nil), argv...)
	found := false
	for i := 0; i < len(out); i++ {
		if strings.HasPrefix(out[i], flag+"=") {
			out[i], found = flag+"="+value, true
		} else if out[i] == flag && i+1 < len(out) {
			out[i+1], found = value, true
			i++
		}
	}
	if !found {
		out = append(out, flag, value)
	}
	return out
}

// nodeReady reads `skep get nodes`: NAME STATUS ...
func nodeReady(table, node string) bool {
	for _, line := range strings.Split(table, "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == node {
			return f[1] == "Ready"
		}
	}
	return false
}

func contains(list []string, s string) bool {
	for _, e := range list {
		if e == s {
			return true
		}
	}
	return false
}

// script is a provisioning script running in the background.
type script struct {
	cmd  *exec.Cmd
	out  *labtest.SyncBuffer
	done chan error
}

// provisionEnv runs the scripts under root without systemctl.
func provisionEnv(root string) []string {
	return append(os.Environ(), "SKEP_ROOT="+root, "SKEP_NO_SYSTEMCTL=1")
}

// startScript starts a script of this directory in its own process group,
// which the test's cleanup kills if the script is still running.
func startScript(t *testing.T, ctx context.Context, root string, argv ...string) *script {
	t.Helper()
	s := &script{cmd: exec.CommandContext(ctx, argv[0], argv[1:]...), out: &labtest.SyncBuffer{}, done: make(chan error, 1)}
	s.cmd.Env = provisionEnv(root)
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", argv[0], err)
	}
	go func() { s.done <- s.cmd.Wait() }()
	t.Cleanup(func() {
		select {
		case err := <-s.done:
			s.done <- err
		default:
			_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
			<-s.done
		}
	})
	return s
}

func (s *script) output() string { return s.out.String() }

// wait waits for the script to end and returns how it ended.
func (s *script) wait(d time.Duration) error {
	select {
	case err := <-s.done:
		s.done <- err
		return err
	case <-time.After(d):
		return fmt.Errorf("still running after %s", d)
	}
}

// runScript runs a script of this directory to its end and returns its
// output; the test fails if the script does.
func runScript(t *testing.T, ctx context.Context, root string, argv ...string) string {
	t.Helper()
	s := startScript(t, ctx, root, argv...)
	if err := s.wait(3 * time.Minute); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, s.output())
	}
	return s.output()
}

// freePort is a free TCP port on addr.
func freePort(t *testing.T, addr netip.Addr) int {
	t.Helper()
	ln, err := net.Listen("tcp", netip.AddrPortFrom(addr, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func mustWrite(t *testing.T, path string, data []byte, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatal(err)
	}
}

func mustSymlink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}

// logWriter sends the lab's progress lines to the test's log.
type logWriter struct{ t testing.TB }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
