package lab_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skep-io/skep/controlplane/api"
	"github.com/skep-io/skep/controlplane/client"
	"github.com/skep-io/skep/lab"
	"github.com/skep-io/skep/lab/labtest"
)

// skep is the binary built by TestMain, the one the labs run; images the
// directory of the test images.
var skep, images string

func TestMain(m *testing.M) {
	// The test binary doubles as a helper run inside a lab or as a lab's
	// owner that crashes: see helper.
	if len(os.Args) > 1 && os.Args[1] == "lab-helper" {
		os.Exit(helper(os.Args[2:]))
	}
	dir, err := os.MkdirTemp("", "skep-lab-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	skep, err = labtest.BuildSkep(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	images = filepath.Join(dir, "images")
	if err := labtest.BuildImages(images); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// helper: "up NAME DIR BINARY NODES" brings a lab up and then waits to be
// killed; "netns" prints the inode of the current network namespace.
func helper(args []string) int {
	switch args[0] {
	case "up":
		var nodes int
		fmt.Sscan(args[4], &nodes)
		_, err := lab.Up(context.Background(), lab.Config{Name: args[1], Dir: args[2], Binary: args[3], Nodes: nodes, Progress: os.Stdout})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		select {}
	case "netns":
		var st syscall.Stat_t
		if err := syscall.Stat("/proc/self/ns/net", &st); err != nil {
			return 1
		}
		fmt.Println(st.Ino)
		return 0
	}
	return 2
}

func netnsInode(t *testing.T, name string) string {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join("/run/netns", name), &st); err != nil {
		t.Fatalf("stat netns %s: %v", name, err)
	}
	return fmt.Sprint(st.Ino)
}

// run runs argv on a lab's node (or client) and returns its output; a
// command that fails fails the test.
func run(t *testing.T, l *lab.Lab, node string, argv ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	var out bytes.Buffer
	code, err := l.Exec(ctx, node, argv, nil, &out, &out)
	if err != nil || code != 0 {
		t.Fatalf("on %s: %s: exit %d, err %v, output:\n%s", node, strings.Join(argv, " "), code, err, out.String())
	}
	return out.String()
}

func TestTwoLabsReachAndGoDown(t *testing.T) {
	a := labtest.Start(t, lab.Config{Name: labtest.Name("a"), Nodes: 2, Binary: skep})
	b := labtest.Start(t, lab.Config{Name: labtest.Name("b"), Nodes: 1, Binary: skep, Dataplane: "iptables"})

	t.Run("nodes registered with their addresses", func(t *testing.T) {
		for _, l := range []*lab.Lab{a, b} {
			c, err := l.Client()
			if err != nil {
				t.Fatal(err)
			}
			objs, _, err := c.List(t.Context(), api.MustLookup("nodes"), "", client.ListOptions{})
			if err != nil {
				t.Fatalf("list nodes of %s: %v", l.Name(), err)
			}
			got := map[string]string{}
			for _, o := range objs {
				n := o.(*corev1.Node)
				for _, ad := range n.Status.Addresses {
					if ad.Type == corev1.NodeInternalIP {
						got[n.Name] = ad.Address
					}
				}
			}
			want := map[string]string{}
			for _, n := range l.Nodes() {
				want[n] = l.NodeIP(n).String()
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("lab %s: nodes and InternalIPs %v, want %v", l.Name(), got, want)
			}
		}
		if a.BridgeIP() == b.BridgeIP() {
			t.Errorf("both labs on %s", a.BridgeIP())
		}
	})

	t.Run("the node network", func(t *testing.T) {
		n1, n2 := a.Nodes()[0], a.Nodes()[1]
		run(t, a, n1, "busybox", "ping", "-c1", "-W3", a.NodeIP(n2).String())
		run(t, a, "node2", "busybox", "ping", "-c1", "-W3", a.NodeIP(n1).String())
		for _, n := range a.Nodes() {
			run(t, a, "client", "busybox", "ping", "-c1", "-W3", a.NodeIP(n).String())
		}
		// The API server answers on the bridge from a node.
		out := run(t, a, n2, "curl", "-sSk", "--max-time", "5", a.ServerURL()+"/cacerts")
		if !strings.Contains(out, "BEGIN CERTIFICATE") {
			t.Errorf("GET /cacerts from %s: %q, want a certificate", n2, out)
		}
	})

	t.Run("exec in the node's netns and cgroup", func(t *testing.T) {
		for _, node := range []string{"node1", a.Nodes()[1], "client"} {
			cg := run(t, a, node, "cat", "/proc/self/cgroup")
			rel := strings.TrimPrefix(a.Cgroup(node), "/sys/fs/cgroup/unified")
			if !strings.Contains(cg, "0::"+rel+"\n") {
				t.Errorf("/proc/self/cgroup on %s:\n%s\nwant 0::%s", node, cg, rel)
			}
			ino := strings.TrimSpace(run(t, a, node, os.Args[0], "lab-helper", "netns"))
			if want := netnsInode(t, a.Netns(node)); ino != want {
				t.Errorf("netns inode on %s: %s, want %s (%s)", node, ino, want, a.Netns(node))
			}
		}
		var out bytes.Buffer
		code, err := a.Exec(t.Context(), "node1", []string{"sh", "-c", "exit 3"}, nil, &out, &out)
		if code != 3 || err != nil {
			t.Errorf("exit 3 on node1: exit %d, err %v", code, err)
		}
		if _, err := a.Exec(t.Context(), "node9", []string{"true"}, nil, &out, &out); err == nil {
			t.Errorf("exec on node9 of a 2-node lab: no error")
		}
	})

	t.Run("kill and revive a node", func(t *testing.T) {
		n2 := a.Nodes()[1]
		if err := a.KillNode(t.Context(), n2); err != nil {
			t.Fatal(err)
		}
		if procs, _ := os.ReadFile(a.Cgroup(n2) + "/cgroup.procs"); len(procs) > 0 || a.AgentRunning(n2) {
			t.Errorf("processes left in %s after KillNode: %q", n2, procs)
		}
		var sink bytes.Buffer
		if code, err := a.Exec(t.Context(), "client", []string{"busybox", "ping", "-c1", "-W1", a.NodeIP(n2).String()}, nil, &sink, &sink); err != nil || code == 0 {
			t.Errorf("ping to killed node %s: exit %d, err %v; want no answer", n2, code, err)
		}
		if err := a.ReviveNode(t.Context(), n2); err != nil {
			t.Fatal(err)
		}
		if err := a.WaitReady(t.Context(), 30*time.Second); err != nil {
			t.Fatal(err)
		}
		run(t, a, "client", "busybox", "ping", "-c1", "-W3", a.NodeIP(n2).String())
	})

	t.Run("down of one leaves the other", func(t *testing.T) {
		labtest.Teardown(t, b)
		for _, n := range a.Nodes() {
			if !a.AgentRunning(n) {
				t.Errorf("agent of %s stopped when lab %s went down", n, b.Name())
			}
		}
		run(t, a, "client", "busybox", "ping", "-c1", "-W3", a.NodeIP(a.Nodes()[0]).String())
	})
}

// TestDownAfterCrash brings a lab up from a process that is killed half-way
// through, kills the lab's server and agents too, and expects Down from
// the state file to remove everything.
func TestDownAfterCrash(t *testing.T) {
	name := labtest.Name("c")
	dir := filepath.Join(os.TempDir(), "skep-lab-"+name)
	cmd := exec.Command(os.Args[0], "lab-helper", "up", name, dir, skep, "2")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		// Down must work however far the crash let Up go.
		if l, err := lab.Open(name, dir); err == nil {
			_ = l.Down(context.Background())
		}
	})

	// Crash once the first node's agent runs, before the lab is complete.
	var l *lab.Lab
	deadline := time.Now().Add(60 * time.Second)
	for {
		var err error
		l, err = lab.Open(name, dir)
		if err == nil && l.AgentRunning("node1") {
			break
		}
		if err != nil && !errors.Is(err, lab.ErrNoLab) {
			t.Fatalf("open lab %s: %v", name, err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("the first agent of lab %s did not start; output of up:\n%s", name, out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	t.Logf("up killed; its output:\n%s", out.String())

	// The lab's processes die too, as they would in a machine's crash. The
	// state may have grown since it was read.
	l, err := lab.Open(name, dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range l.PIDs() {
		_ = syscall.Kill(p, syscall.SIGKILL)
	}

	l.SetProgress(testWriter{t})
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	if err := l.Down(ctx); err != nil {
		t.Errorf("down after a crash: %v", err)
	}
	if left := l.Leftovers(); len(left) > 0 {
		t.Errorf("down after a crash left behind:\n  %s", strings.Join(left, "\n  "))
	}
	if err := l.Down(ctx); err != nil {
		t.Errorf("down a second time: %v", err)
	}
	if _, err := lab.Open(name, dir); !errors.Is(err, lab.ErrNoLab) {
		t.Errorf("open after down: %v, want ErrNoLab", err)
	}
}

// TestDownWithPodsAfterCrash: a lab with a pod running on each node loses
// its server and agents at once (SIGKILL), which leaves containerd and the
// shims running with nobody to stop them; Down from the state file alone
// removes them and everything else.
func TestDownWithPodsAfterCrash(t *testing.T) {
	name := labtest.Name("p")
	dir := filepath.Join(os.TempDir(), "skep-lab-"+name)
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	up, err := lab.Up(ctx, lab.Config{Name: name, Dir: dir, Nodes: 2, Binary: skep, ImagesDir: images, Progress: testWriter{t}})
	if err != nil {
		t.Fatalf("lab up: %v", err)
	}
	t.Cleanup(func() { labtest.Teardown(t, up) })

	c, err := up.Client()
	if err != nil {
		t.Fatal(err)
	}
	podsR := api.MustLookup("pods")
	for _, node := range up.Nodes() {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "echo-" + node, Namespace: "default"},
			Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{
				Name: "echo", Image: "skep/echo:latest", ImagePullPolicy: corev1.PullNever,
			}}},
		}
		if _, err := c.Create(ctx, podsR, pod); err != nil {
			t.Fatalf("create pod on %s: %v", node, err)
		}
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		objs, _, err := c.List(ctx, podsR, "default", client.ListOptions{})
		running := 0
		var phases []string
		for _, o := range objs {
			p := o.(*corev1.Pod)
			phases = append(phases, p.Name+"="+string(p.Status.Phase))
			if p.Status.Phase == corev1.PodRunning {
				running++
			}
		}
		if err == nil && running == len(up.Nodes()) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pods not Running after 60 s: %v (err %v)", phases, err)
		}
		time.Sleep(300 * time.Millisecond)
	}
	// The hard case: shims and containerd, which the agents started, run.
	for _, node := range up.Nodes() {
		if got := procsNamed(up.Cgroup(node), "containerd-shim"); got == 0 {
			t.Fatalf("no containerd-shim in %s's cgroup %s with its pod running", node, up.Cgroup(node))
		}
	}

	l, err := lab.Open(name, dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range l.PIDs() {
		_ = syscall.Kill(p, syscall.SIGKILL)
	}
	l.SetProgress(testWriter{t})
	start := time.Now()
	if err := l.Down(ctx); err != nil {
		t.Errorf("down after the crash: %v", err)
	}
	t.Logf("down took %s", time.Since(start).Round(10*time.Millisecond))
	if left := l.Leftovers(); len(left) > 0 {
		t.Errorf("down after the crash left behind:\n  %s", strings.Join(left, "\n  "))
	}
}

// TestUpFailsCleanly: an agent that cannot start makes Up fail with the
// agent's own words, and leave nothing behind.
func TestUpFailsCleanly(t *testing.T) {
	name := labtest.Name("f")
	dir := filepath.Join(os.TempDir(), "skep-lab-"+name)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	l, err := lab.Up(ctx, lab.Config{Name: name, Dir: dir, Nodes: 1, Binary: skep, AgentArgs: []string{"--no-such-flag"}, Progress: testWriter{t}})
	if err == nil {
		labtest.Teardown(t, l)
		t.Fatal("up with an agent flag that does not exist: no error")
	}
	if !strings.Contains(err.Error(), "no-such-flag") {
		t.Errorf("up error %q does not quote the agent's complaint about --no-such-flag", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("lab dir %s after a failed up: %v, want gone", dir, err)
	}
	for _, ns := range []string{"sklab-" + name + "-node1", "sklab-" + name + "-client"} {
		if _, err := os.Stat("/run/netns/" + ns); err == nil {
			t.Errorf("netns %s left after a failed up", ns)
		}
	}
	if _, err := net.InterfaceByName("sklab-" + name); err == nil {
		t.Errorf("bridge sklab-%s left after a failed up", name)
	}
}

func TestNameChecks(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"skep", true}, {"a1", true}, {"lab-2", true},
		{"", true}, // the default
		{"Lab", false}, {"-a", false}, {"a-", false}, {"a_b", false}, {strings.Repeat("a", 31), false},
	} {
		_, err := lab.Up(t.Context(), lab.Config{Name: tc.name, Binary: "/nonexistent"})
		nameErr := err != nil && strings.Contains(err.Error(), "lab name")
		if nameErr == tc.ok {
			t.Errorf("name %q: err %v, want accepted=%v", tc.name, err, tc.ok)
		}
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// procsNamed counts the processes named comm in a cgroup2 directory and
// below it.
func procsNamed(cgroup, comm string) int {
	n := 0
	filepath.WalkDir(cgroup, func(path string, d os.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		data, _ := os.ReadFile(filepath.Join(path, "cgroup.procs"))
		for _, pid := range strings.Fields(string(data)) {
			c, _ := os.ReadFile("/proc/" + pid + "/comm")
			if strings.TrimSpace(string(c)) == comm {
				n++
			}
		}
		return nil
	})
	return n
}
