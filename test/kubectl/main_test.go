package kubectl

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/skep-io/skep/controlplane/client"
	"github.com/skep-io/skep/controlplane/nodetest"
	"github.com/skep-io/skep/lab/labtest"
)

// The nodes the simulated cluster has. drainNode is kept for the cordon
// and drain tests, which make it unschedulable for a while.
const drainNode = "node-3"

var nodes = []string{"node-1", "node-2", drainNode}

// kubeconfig is the admin.conf of the package's server; apiURL its
// address. kubectlHome is kubectl's $HOME: its discovery cache, shared by
// all the package's runs (the server's resources do not change during
// them), so that each run does not fetch discovery and schemas again.
var (
	kubeconfig  string
	apiURL      string
	kubectlHome string
)

// commandTimeout bounds every kubectl run: a verb that hangs fails its
// test instead of the whole package's deadline.
const commandTimeout = 45 * time.Second

func TestMain(m *testing.M) {
	// The tests wait on kubectl and the server, hardly on the CPU: run
	// more of them at once than -parallel's default (GOMAXPROCS, 2 on the
	// development machine), unless the command line says how many.
	flag.Parse()
	parallelSet := false
	flag.Visit(func(f *flag.Flag) { parallelSet = parallelSet || f.Name == "test.parallel" })
	if !parallelSet {
		_ = flag.Set("test.parallel", "8")
	}
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	// kubectl is a Debian package that `make deps` installs; without it
	// this suite proves nothing, so it fails rather than skips.
	if _, err := exec.LookPath("kubectl"); err != nil {
		fmt.Fprintln(os.Stderr, "kubectl is not installed (make deps installs Debian's kubectl):", err)
		return 1
	}
	dir, err := os.MkdirTemp("", "skep-kubectl-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	kubectlHome = filepath.Join(dir, "kubectl-home")
	start := time.Now()
	srv, err := startServer(dir)
	if srv != nil {
		defer srv.stop()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	stopNodes, err := startNodes(kubeconfig)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer stopNodes()
	// Shown with -v or a failure: where the package's time went.
	fmt.Fprintf(os.Stderr, "skep built and serving in %s\n", time.Since(start).Round(time.Second))
	code := m.Run()
	if code != 0 {
		fmt.Fprintf(os.Stderr, "--- skep server's log (last 8KiB):\n%s\n", tail(srv.log.String(), 8<<10))
	}
	return code
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// server is the `skep server` process of the package.
type server struct {
	cmd *exec.Cmd
	log *labtest.SyncBuffer
}

// startServer builds cmd/skep into dir and runs `skep server` on a data
// directory there, and waits until kubectl reaches it.
func startServer(dir string) (*server, error) {
	bin := filepath.Join(dir, "skep")
	// Without symbols: the link is faster, and no test debugs the binary.
	if out, err := exec.Command("go", "build", "-ldflags=-s -w", "-o", bin, "github.com/skep-io/skep/cmd/skep").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build skep: %v\n%s", err, out)
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	dataDir, home := filepath.Join(dir, "data"), filepath.Join(dir, "home")
	kubeconfig = filepath.Join(dataDir, "admin.conf")
	apiURL = fmt.Sprintf("https://127.0.0.1:%d", port)
	s := &server{log: &labtest.SyncBuffer{}}
	s.cmd = exec.Command(bin, "server", "--data-dir", dataDir, "--listen", fmt.Sprintf("127.0.0.1:%d", port),
		"--nats-listen", "127.0.0.1:-1", "--lb-pool", "198.18.200.0/28")
	// The server writes ~/.skep/config when it is missing: not the user's.
	s.cmd.Env = append(os.Environ(), "HOME="+home)
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	if err := s.cmd.Start(); err != nil {
		return nil, err
	}
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if s.cmd.ProcessState != nil {
			break
		}
		if _, err := os.Stat(kubeconfig); err != nil {
			continue
		}
		if out, err := kubectlOnce("get", "--raw", "/readyz"); err == nil && strings.TrimSpace(out) == "ok" {
			// Fill kubectl's discovery cache once for all the runs.
			if _, err := kubectlOnce("api-resources"); err != nil {
				return s, fmt.Errorf("kubectl api-resources: %v", err)
			}
			return s, nil
		}
	}
	return s, fmt.Errorf("skep server did not become ready within 60s:\n%s", s.log)
}

// kubectlOnce runs kubectl outside a test (in TestMain).
func kubectlOnce(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	k := labtest.Kubectl{Config: kubeconfig, Home: kubectlHome}
	out, err := k.Command(ctx, args...).Output()
	return string(out), err
}

func (s *server) stop() {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-done
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// startNodes plays the cluster's nodes for the whole package, through
// skep's client with the admin config.
func startNodes(config string) (stop func(), err error) {
	cfg, err := client.LoadConfig(config)
	if err != nil {
		return nil, err
	}
	c, err := client.New(cfg)
	if err != nil {
		return nil, err
	}
	tb := &mainTB{}
	defer func() {
		if r := recover(); r != nil {
			tb.cleanup()
			err = fmt.Errorf("start the simulated nodes: %v", r)
		}
	}()
	nodetest.Start(tb, c, nodes...)
	return tb.cleanup, nil
}

// mainTB lets nodetest, written for one test, play the nodes for the
// whole package from TestMain, where there is no testing.T. nodetest
// calls only the methods below; the embedded nil TB satisfies the
// interface's unexported method and would panic if anything else were
// called.
type mainTB struct {
	testing.TB
	cleanups []func()
}

func (*mainTB) Helper()                           {}
func (*mainTB) Fatalf(format string, args ...any) { panic(fmt.Sprintf(format, args...)) }
func (*mainTB) Logf(string, ...any)               {}
func (tb *mainTB) Cleanup(f func())               { tb.cleanups = append(tb.cleanups, f) }
func (tb *mainTB) cleanup() {
	for i := len(tb.cleanups) - 1; i >= 0; i-- {
		tb.cleanups[i]()
	}
}

// result is what one kubectl run printed.
type result = labtest.KubectlResult

// run is one kubectl command: stdin may be empty, env adds variables.
type run struct {
	stdin string
	env   []string
}

func (o run) kubectl(t *testing.T, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	// No user's config or cache: discovery comes from the server.
	k := labtest.Kubectl{Config: kubeconfig, Home: kubectlHome, Env: o.env}
	return k.Run(ctx, strings.NewReader(o.stdin), args...)
}

// kubectl runs kubectl with the admin config and returns what it printed.
func kubectl(t *testing.T, args ...string) result {
	t.Helper()
	return run{}.kubectl(t, args...)
}

// mustKubectl runs kubectl and fails the test unless it exits 0; it
// returns kubectl's stdout.
func mustKubectl(t *testing.T, args ...string) string {
	t.Helper()
	r := kubectl(t, args...)
	if r.Err != nil {
		t.Fatalf("%s", r)
	}
	return r.Stdout
}

// wantOutput fails the test unless kubectl printed exactly want.
func wantOutput(t *testing.T, want string, args ...string) {
	t.Helper()
	if got := mustKubectl(t, args...); got != want {
		t.Errorf("kubectl %s printed %q, want %q", strings.Join(args, " "), got, want)
	}
}

// checkOutput is wantOutput for a check the test goes on after: it
// marks the test failed and returns.
func checkOutput(t *testing.T, want string, args ...string) {
	t.Helper()
	r := kubectl(t, args...)
	if r.Err != nil || r.Stdout != want {
		t.Errorf("want %q printed\n%s", want, r)
	}
}

// wantContains fails the test unless s has every one of the phrases.
func wantContains(t *testing.T, what, s string, phrases ...string) {
	t.Helper()
	var missing []string
	for _, p := range phrases {
		if !strings.Contains(s, p) {
			missing = append(missing, fmt.Sprintf("%q", p))
		}
	}
	if len(missing) > 0 {
		t.Errorf("%s does not show %s:\n%s", what, strings.Join(missing, ", "), s)
	}
}

// squeeze makes each run of spaces and tabs one space, so that phrases of
// kubectl's aligned output (describe) do not depend on its widths.
func squeeze(s string) string { return spaces.ReplaceAllString(s, " ") }

var spaces = regexp.MustCompile(`[ \t]+`)

// wantFails runs kubectl, which must fail, and checks its error output.
func wantFails(t *testing.T, phrases []string, args ...string) result {
	t.Helper()
	r := kubectl(t, args...)
	if r.Err == nil {
		t.Errorf("kubectl %s succeeded; want it refused\n%s", strings.Join(args, " "), r)
		return r
	}
	wantContains(t, "kubectl "+strings.Join(args, " ")+"'s error", r.Stderr, phrases...)
	return r
}

// fields splits a table line into its columns' words, so that tests do
// not depend on column widths.
func fields(line string) string { return strings.Join(strings.Fields(line), " ") }

// tableLines is kubectl's table output with each line's columns joined by
// one space.
func tableLines(out string) []string {
	var lines []string
	for _, l := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		lines = append(lines, fields(l))
	}
	return lines
}

// wantRow fails the test unless a line of the table starts with prefix
// (columns joined by one space).
func wantRow(t *testing.T, what, out, prefix string) {
	t.Helper()
	for _, l := range tableLines(out) {
		if strings.HasPrefix(l, prefix) {
			return
		}
	}
	t.Errorf("%s has no row starting %q:\n%s", what, prefix, out)
}

// namespace creates a namespace for one test and deletes it when the test
// ends (without waiting for it to go).
func namespace(t *testing.T, name string) string {
	t.Helper()
	wantOutput(t, "namespace/"+name+" created\n", "create", "namespace", name)
	t.Cleanup(func() { kubectl(t, "delete", "namespace", name, "--wait=false") })
	return name
}

// writeFile writes a manifest into the test's temporary directory.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// deployment is a Deployment manifest: replicas pods of app=name running
// image, with nodeSelector (a YAML flow map's inside) when it is set.
func deployment(ns, name, image string, replicas int, nodeSelector string) string {
	sel := ""
	if nodeSelector != "" {
		sel = "\n      nodeSelector: {" + nodeSelector + "}"
	}
	return fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata:
  name: %[2]s
  namespace: %[1]s
  labels: {app: %[2]s}
spec:
  replicas: %[4]d
  strategy: {type: RollingUpdate, rollingUpdate: {maxSurge: 1, maxUnavailable: 0}}
  selector: {matchLabels: {app: %[2]s}}
  template:
    metadata: {labels: {app: %[2]s}}
    spec:%[5]s
      containers: [{name: main, image: %[3]q}]
`, ns, name, image, replicas, sel)
}

// applyAvailable applies a Deployment and waits until it is Available.
func applyAvailable(t *testing.T, ns, name string, replicas int, nodeSelector string) {
	t.Helper()
	wantOutput(t, "deployment.apps/"+name+" created\n", "apply", "-f", writeFile(t, name+".yaml", deployment(ns, name, "skep/echo:v1", replicas, nodeSelector)))
	wantOutput(t, "deployment.apps/"+name+" condition met\n", "wait", "-n", ns, "--for=condition=Available", "deployment/"+name, "--timeout=40s")
}

// served reports whether discovery lists the resource (plural name,
// optionally .group).
func served(t *testing.T, resource string) bool {
	t.Helper()
	out := mustKubectl(t, "api-resources", "-o", "name")
	for _, l := range strings.Split(out, "\n") {
		if l == resource {
			return true
		}
	}
	return false
}
