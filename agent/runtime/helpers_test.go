package runtime

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/namespaces"
	"github.com/skep-io/skep/agent/containerlog"
	"github.com/skep-io/skep/lab/labtest"
	"github.com/skep-io/skep/test/images"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// These tests need root: they run a real containerd (started through the
// runtime's own supervisor on a temporary data dir), runc, overlayfs and
// cgroups, with the test images built from this repository.

// imageTars are the test images, built once by TestMain.
var imageTars map[string]string

func TestMain(m *testing.M) {
	// The runtime links its log driver to this executable: run as that,
	// the test binary is the driver.
	containerlog.RunIfDriver()
	// The shims of the tests' containerds daemonize: orphaned, they would
	// become zombies of PID 1, which on some machines reaps them only
	// seconds later. As a subreaper the test binary gets them and reaps
	// them itself (labtest.ReapShims), so that a test ends with its shims gone.
	if err := labtest.BecomeSubreaper(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	dir, err := os.MkdirTemp("", "skep-runtime-images-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	imageTars, err = images.Build(ctx, dir)
	cancel()
	if err != nil {
		os.RemoveAll(dir)
		fmt.Fprintln(os.Stderr, "build test images:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// testNetwork is a real, minimal pod network: it brings lo up and gives the
// pod an eth0 with an address from 10.244.0.0/16 inside the pod's own
// network namespace. Its links die with the namespace, so Teardown only
// records that it was called.
type testNetwork struct {
	mu       sync.Mutex
	next     int
	addrs    map[string]netip.Addr
	setups   map[string]int
	teardown map[string]int
}

func newTestNetwork() *testNetwork {
	return &testNetwork{next: 2, addrs: map[string]netip.Addr{}, setups: map[string]int{}, teardown: map[string]int{}}
}

func (n *testNetwork) Setup(ctx context.Context, podID, netnsPath string) (netip.Addr, error) {
	ns, err := netns.GetFromPath(netnsPath)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("open %s: %w", netnsPath, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("netlink in %s: %w", netnsPath, err)
	}
	defer h.Close()

	n.mu.Lock()
	defer n.mu.Unlock()
	n.setups[podID]++
	addr, ok := n.addrs[podID]
	if !ok {
		addr = netip.AddrFrom4([4]byte{10, 244, byte(n.next / 250), byte(n.next%250 + 2)})
		n.next++
		n.addrs[podID] = addr
	}
	lo, err := h.LinkByName("lo")
	if err != nil {
		return netip.Addr{}, err
	}
	if err := h.LinkSetUp(lo); err != nil {
		return netip.Addr{}, err
	}
	if _, err := h.LinkByName("eth0"); err == nil {
		return addr, nil // set up before (an adoption)
	}
	// A veth pair with both ends in the pod's namespace (this kernel has
	// no dummy driver): eth0 carries the pod's address.
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: "eth0-peer"}); err != nil {
		return netip.Addr{}, fmt.Errorf("add eth0: %w", err)
	}
	eth, err := h.LinkByName("eth0")
	if err != nil {
		return netip.Addr{}, err
	}
	ipnet, _ := netlink.ParseIPNet(addr.String() + "/16")
	if err := h.AddrAdd(eth, &netlink.Addr{IPNet: ipnet}); err != nil {
		return netip.Addr{}, fmt.Errorf("address eth0: %w", err)
	}
	if err := h.LinkSetUp(eth); err != nil {
		return netip.Addr{}, err
	}
	return addr, nil
}

func (n *testNetwork) Teardown(ctx context.Context, podID string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.teardown[podID]++
	return nil
}

func (n *testNetwork) teardowns(podID string) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.teardown[podID]
}

// testEnv is one data dir, cgroup parent and network, on which a test may
// start Runtimes one after another (an agent restart).
type testEnv struct {
	t            *testing.T
	dataDir      string
	cgroupTop    string // "/skep-test-<hex>"
	cgroupParent string
	network      *testNetwork
	log          *slog.Logger
	events       EventRecorder // nil: none
}

func newTestEnv(t *testing.T) *testEnv {
	t.Helper()
	var b [4]byte
	rand.Read(b[:])
	top := "/skep-test-" + hex.EncodeToString(b[:])
	env := &testEnv{
		t:            t,
		dataDir:      t.TempDir(),
		cgroupTop:    top,
		cgroupParent: top + "/n1",
		network:      newTestNetwork(),
		log:          slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo})),
	}
	// Registered first, so it runs last: after every Runtime was cleaned
	// up, nothing may remain.
	t.Cleanup(env.checkNothingLeft)
	return env
}

// testWriter sends the runtime's log lines to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// start starts a Runtime (and its containerd) on the env and imports the
// test images. Its cleanup kills every pod it still holds and stops
// containerd; stop it earlier with the returned function (an agent
// restart), which leaves the pods running.
func (env *testEnv) start() (*Runtime, func()) {
	t := env.t
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r, err := New(ctx, Config{
		NodeName:     "n1",
		DataDir:      env.dataDir,
		CgroupParent: env.cgroupParent,
		Network:      env.network,
		Logger:       env.log,
		Events:       env.events,
		ResolvConf: func(pod *corev1.Pod) []byte {
			return []byte("nameserver 10.96.0.10\nsearch " + pod.Namespace + ".svc.cluster.local svc.cluster.local cluster.local\n")
		},
	})
	if err != nil {
		cancel()
		t.Fatalf("New: %v", err)
	}
	var once sync.Once
	stop := func() {
		once.Do(func() {
			if err := r.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
			cancel()
		})
	}
	t.Cleanup(func() {
		// Kill whatever the test left running, then stop.
		select {
		case <-r.ctrd.Done():
		default:
			kctx, kcancel := context.WithTimeout(context.Background(), time.Minute)
			pods, err := listPods(t, r)
			if err != nil {
				t.Errorf("cleanup: ListPods: %v", err)
			}
			for _, p := range pods {
				if err := r.KillPod(kctx, p.UID, 0); err != nil {
					t.Errorf("cleanup: KillPod %s: %v", p.UID, err)
				}
			}
			kcancel()
		}
		stop()
	})
	for ref, tar := range imageTars {
		f, err := os.Open(tar)
		if err != nil {
			t.Fatal(err)
		}
		names, err := r.ImportImage(ctx, f)
		f.Close()
		if err != nil {
			t.Fatalf("ImportImage %s: %v", ref, err)
		}
		if len(names) != 1 || names[0] != images.FullName(ref) {
			t.Fatalf("ImportImage %s: imported %v, want [%s]", ref, names, images.FullName(ref))
		}
	}
	return r, stop
}

// checkNothingLeft fails the test if a process, mount or cgroup of the env
// remains, and then removes it so the machine stays clean.
func (env *testEnv) checkNothingLeft() {
	t := env.t
	// A shim exits a moment after its last container is deleted.
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if labtest.ReapShims() == 0 && len(processesMentioning(env.dataDir)) == 0 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, pid := range processesMentioning(env.dataDir) {
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		t.Errorf("process %d left running: %s", pid, bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '}))
		syscall.Kill(pid, syscall.SIGKILL)
	}
	for _, m := range mountsUnder(env.dataDir) {
		t.Errorf("mount left behind: %s", m)
		syscall.Unmount(m, syscall.MNT_DETACH)
	}
	cg, err := findCgroupMounts()
	if err != nil {
		t.Error(err)
		return
	}
	for _, m := range cg.all {
		for _, dir := range cgroupsBelow(filepath.Join(m, env.cgroupParent)) {
			t.Errorf("cgroup left behind: %s", dir)
		}
	}
	if err := cg.remove(env.cgroupTop); err != nil {
		t.Errorf("remove test cgroups: %v", err)
	}
}

// processesMentioning lists the processes whose command line names dir: the
// containerd and shims of a test's data dir.
func processesMentioning(dir string) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		var pid int
		if _, err := fmt.Sscanf(e.Name(), "%d", &pid); err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err == nil && bytes.Contains(cmdline, []byte(dir)) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// shimsOf lists the containerd shims serving the containerd of dataDir.
func shimsOf(dataDir string) []int {
	var shims []int
	for _, pid := range processesMentioning(dataDir) {
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if strings.HasPrefix(string(comm), "containerd-shim") {
			shims = append(shims, pid)
		}
	}
	return shims
}

func mountsUnder(dir string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var mounts []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && strings.HasPrefix(fields[4], dir) {
			mounts = append(mounts, fields[4])
		}
	}
	return mounts
}

// cgroupsBelow lists the cgroups under dir, dir excluded.
func cgroupsBelow(dir string) []string {
	var found []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() && p != dir {
			found = append(found, p)
		}
		return nil
	})
	return found
}

// newPod returns a pod with a fresh UID.
func newPod(name string, containers ...corev1.Container) *corev1.Pod {
	var b [16]byte
	rand.Read(b[:])
	grace := int64(1)
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:      name,
			Namespace: "default",
			UID:       types.UID(fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])),
		},
		Spec: corev1.PodSpec{
			NodeName:                      "n1",
			RestartPolicy:                 corev1.RestartPolicyAlways,
			TerminationGracePeriodSeconds: &grace,
			Containers:                    containers,
		},
	}
}

// toolbox is a busybox container running script with sh. The script runs
// under a TERM trap, so the container stops promptly on SIGTERM.
func toolbox(name, script string) corev1.Container {
	return corev1.Container{
		Name:            name,
		Image:           images.Toolbox,
		ImagePullPolicy: corev1.PullIfNotPresent,
		Command:         []string{"sh", "-c", "trap 'exit 143' TERM; " + script},
	}
}

// waitStatus calls SyncPod until ok accepts the status or the deadline
// passes, and returns the last status.
func waitStatus(t *testing.T, r *Runtime, pod *corev1.Pod, timeout time.Duration, what string, ok func(corev1.PodStatus) bool) corev1.PodStatus {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var st corev1.PodStatus
	for {
		var err error
		st, err = r.SyncPod(t.Context(), pod)
		if err != nil {
			t.Fatalf("SyncPod %s: %v", pod.Name, err)
		}
		if ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("pod %s: not %s after %s; status:\n%s", pod.Name, what, timeout, describe(st))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func isReady(st corev1.PodStatus) bool {
	for _, c := range st.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func condition(st corev1.PodStatus, t corev1.PodConditionType) corev1.ConditionStatus {
	for _, c := range st.Conditions {
		if c.Type == t {
			return c.Status
		}
	}
	return ""
}

func containerStatusOf(st corev1.PodStatus, name string) corev1.ContainerStatus {
	for _, s := range append(append([]corev1.ContainerStatus{}, st.InitContainerStatuses...), st.ContainerStatuses...) {
		if s.Name == name {
			return s
		}
	}
	return corev1.ContainerStatus{}
}

// describe prints a status for a failure message.
func describe(st corev1.PodStatus) string {
	var b strings.Builder
	fmt.Fprintf(&b, "  phase %s ip %s reason %q message %q\n", st.Phase, st.PodIP, st.Reason, st.Message)
	for _, c := range st.Conditions {
		fmt.Fprintf(&b, "  condition %s=%s %s\n", c.Type, c.Status, c.Reason)
	}
	for _, s := range append(append([]corev1.ContainerStatus{}, st.InitContainerStatuses...), st.ContainerStatuses...) {
		fmt.Fprintf(&b, "  container %s ready=%v restarts=%d id=%s state=%s last=%s\n", s.Name, s.Ready, s.RestartCount, s.ContainerID, stateString(s.State), stateString(s.LastTerminationState))
	}
	return b.String()
}

func stateString(s corev1.ContainerState) string {
	switch {
	case s.Running != nil:
		return "running"
	case s.Waiting != nil:
		return fmt.Sprintf("waiting(%s: %s)", s.Waiting.Reason, s.Waiting.Message)
	case s.Terminated != nil:
		return fmt.Sprintf("terminated(%d %s %s)", s.Terminated.ExitCode, s.Terminated.Reason, s.Terminated.Message)
	}
	return "-"
}

// exec runs cmd in a container of the pod and returns its stdout.
func execOut(t *testing.T, r *Runtime, pod *corev1.Pod, container string, cmd ...string) string {
	t.Helper()
	var out, errOut bytes.Buffer
	code, err := r.Exec(t.Context(), pod.UID, container, cmd, nil, &out, &errOut)
	if err != nil || code != 0 {
		t.Fatalf("exec %v in %s/%s: code %d err %v stderr %q", cmd, pod.Name, container, code, err, errOut.String())
	}
	return out.String()
}

// nsCtx is ctx in the runtime's containerd namespace, for direct client calls.
func nsCtx(t *testing.T) context.Context {
	return namespaces.WithNamespace(t.Context(), DefaultNamespace)
}

func fmtSscan(s string, v *int) (int, error) { return fmt.Sscan(strings.TrimSpace(s), v) }

// listPods calls ListPods until it succeeds (containerd may be restarting)
// or 10s passed.
func listPods(t *testing.T, r *Runtime) ([]RunningPod, error) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		pods, err := r.ListPods(context.Background())
		if err == nil || time.Now().After(deadline) {
			return pods, err
		}
		time.Sleep(100 * time.Millisecond)
	}
}
