package runtime

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/api/services/tasks/v1"
	"github.com/containerd/containerd/snapshots"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/skep-io/skep/test/images"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// The corrected Pod of shared/examples/intro/pod.yaml: two containers
// sharing an emptyDir at /data and the network. app1 writes a file and
// serves /data over HTTP on localhost; app2 reads the file and fetches it
// from app1 through localhost.
func introPod() *corev1.Pod {
	app1 := toolbox("app1", `echo hello-from-app1 > /data/msg; httpd -f -p 127.0.0.1:8080 -h /data & while true; do sleep 1; done`)
	app1.ReadinessProbe = &corev1.Probe{
		ProbeHandler:  corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/msg"}}},
		PeriodSeconds: 1,
	}
	app1.Resources.Limits = corev1.ResourceList{
		corev1.ResourceMemory: resource.MustParse("64Mi"),
		corev1.ResourceCPU:    resource.MustParse("500m"),
	}
	app2 := toolbox("app2", `until [ -s /data/msg ]; do sleep 0.1; done; echo "read: $(cat /data/msg)";
		until wget -q -O /data/fetched http://localhost:8080/msg; do sleep 0.2; done; echo "fetched: $(cat /data/fetched)";
		while true; do sleep 1; done`)
	app2.ReadinessProbe = &corev1.Probe{
		ProbeHandler:  corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"cat", "/data/fetched"}}},
		PeriodSeconds: 1,
	}
	app2.Env = []corev1.EnvVar{
		{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
		{Name: "NODE_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.nodeName"}}},
		{Name: "GREETING", Value: "hi $(POD_NAME)"},
	}
	app2.WorkingDir = "/data"
	for _, c := range []*corev1.Container{&app1, &app2} {
		c.VolumeMounts = []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}
	}
	pod := newPod("pod1", app1, app2)
	pod.Spec.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
	return pod
}

func TestTwoContainerPodBecomesReady(t *testing.T) {
	env := newTestEnv(t)
	r, _ := env.start()
	pod := introPod()

	st := waitStatus(t, r, pod, 60*time.Second, "Ready", isReady)
	if st.Phase != corev1.PodRunning {
		t.Errorf("phase %s, want Running", st.Phase)
	}
	if st.PodIP == "" || !strings.HasPrefix(st.PodIP, "10.244.") {
		t.Errorf("podIP %q, want an address from the test network's 10.244.0.0/16", st.PodIP)
	}
	if st.StartTime == nil {
		t.Error("no startTime")
	}
	for _, c := range []corev1.PodConditionType{corev1.PodScheduled, corev1.PodInitialized, corev1.ContainersReady, corev1.PodReady} {
		if got := condition(st, c); got != corev1.ConditionTrue {
			t.Errorf("condition %s = %q, want True", c, got)
		}
	}
	for _, name := range []string{"app1", "app2"} {
		s := containerStatusOf(st, name)
		if s.State.Running == nil || !s.Ready || s.RestartCount != 0 || !strings.HasPrefix(s.ContainerID, "containerd://") {
			t.Errorf("container %s: %+v, want running, ready, no restarts", name, s)
		}
	}

	// app2 read the file app1 wrote, and fetched it over localhost.
	var logs bytes.Buffer
	if err := r.Logs(t.Context(), pod.UID, "app2", nil, &logs); err != nil {
		t.Fatalf("Logs: %v", err)
	}
	for _, want := range []string{"read: hello-from-app1", "fetched: hello-from-app1"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("app2 logs %q lack %q", logs.String(), want)
		}
	}

	tests := []struct {
		container string
		cmd       []string
		want      string
	}{
		{"app2", []string{"cat", "/data/fetched"}, "hello-from-app1\n"},
		{"app2", []string{"sh", "-c", "echo $POD_NAME $NODE_NAME $GREETING"}, "pod1 n1 hi pod1\n"},
		{"app2", []string{"pwd"}, "/data\n"},
		{"app2", []string{"hostname"}, "pod1\n"},
		{"app1", []string{"cat", "/etc/resolv.conf"}, "nameserver 10.96.0.10\nsearch default.svc.cluster.local svc.cluster.local cluster.local\n"},
		{"app1", []string{"sh", "-c", "grep pod1 /etc/hosts"}, st.PodIP + "\tpod1\n"},
		{"app1", []string{"sh", "-c", "grep -c localhost /etc/hosts"}, "2\n"},
		// Both containers share the pause container's network namespace.
		{"app1", []string{"sh", "-c", "readlink /proc/self/ns/net"}, execOut(t, r, pod, "app2", "sh", "-c", "readlink /proc/self/ns/net")},
	}
	for _, tt := range tests {
		if got := execOut(t, r, pod, tt.container, tt.cmd...); got != tt.want {
			t.Errorf("exec %v in %s = %q, want %q", tt.cmd, tt.container, got, tt.want)
		}
	}

	// Exec passes stdin and the exit code through.
	var out bytes.Buffer
	code, err := r.Exec(t.Context(), pod.UID, "app1", []string{"sh", "-c", "cat; exit 7"}, strings.NewReader("from stdin"), &out, nil)
	if err != nil || code != 7 || out.String() != "from stdin" {
		t.Errorf("exec with stdin: code %d out %q err %v, want 7 %q nil", code, out.String(), err, "from stdin")
	}

	// The limits are in app1's cgroup, under the node's cgroup parent, and
	// the container is in the cgroup2 hierarchy at the same path too.
	app1 := containerStatusOf(st, "app1")
	cgroup := filepath.Join(env.cgroupParent, "pod"+string(pod.UID), strings.TrimPrefix(app1.ContainerID, "containerd://"))
	for file, want := range map[string]string{
		"/sys/fs/cgroup/memory" + cgroup + "/memory.limit_in_bytes": "67108864",
		"/sys/fs/cgroup/cpu" + cgroup + "/cpu.cfs_quota_us":         "50000",
	} {
		data, err := os.ReadFile(file)
		if err != nil || strings.TrimSpace(string(data)) != want {
			t.Errorf("%s = %q (%v), want %s", file, data, err, want)
		}
	}
	if _, err := os.Stat("/sys/fs/cgroup/unified" + cgroup + "/cgroup.procs"); err != nil {
		t.Errorf("app1 is not in the cgroup2 hierarchy: %v", err)
	}
}

func TestFailingLivenessProbeRestartsContainer(t *testing.T) {
	env := newTestEnv(t)
	r, _ := env.start()
	c := toolbox("app", `echo started; touch /tmp/alive; sleep 2; rm /tmp/alive; while true; do sleep 1; done`)
	c.LivenessProbe = &corev1.Probe{
		ProbeHandler:     corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"cat", "/tmp/alive"}}},
		PeriodSeconds:    1,
		FailureThreshold: 1,
	}
	pod := newPod("liveness", c)

	first := waitStatus(t, r, pod, 30*time.Second, "running", func(st corev1.PodStatus) bool {
		return containerStatusOf(st, "app").State.Running != nil
	})
	st := waitStatus(t, r, pod, 30*time.Second, "restarted", func(st corev1.PodStatus) bool {
		s := containerStatusOf(st, "app")
		return s.RestartCount >= 1 && s.State.Running != nil
	})
	s := containerStatusOf(st, "app")
	last := s.LastTerminationState.Terminated
	if last == nil || last.ExitCode != 143 || !strings.Contains(last.Message, "liveness") {
		t.Errorf("last termination %+v, want exit 143 (SIGTERM trapped) with a liveness message", last)
	}
	if s.ContainerID == containerStatusOf(first, "app").ContainerID {
		t.Errorf("container ID %s did not change on restart", s.ContainerID)
	}
	var prev bytes.Buffer
	if err := r.Logs(t.Context(), pod.UID, "app", &corev1.PodLogOptions{Previous: true}, &prev); err != nil || prev.String() != "started\n" {
		t.Errorf("previous logs %q (%v), want %q", prev.String(), err, "started\n")
	}
}

func TestCrashingContainerShowsCrashLoopBackOff(t *testing.T) {
	env := newTestEnv(t)
	r, _ := env.start()
	pod := newPod("crasher", toolbox("app", `echo crashing; exit 3`))

	st := waitStatus(t, r, pod, 30*time.Second, "in CrashLoopBackOff", func(st corev1.PodStatus) bool {
		w := containerStatusOf(st, "app").State.Waiting
		return w != nil && w.Reason == "CrashLoopBackOff"
	})
	s := containerStatusOf(st, "app")
	if s.RestartCount < 1 {
		t.Errorf("restartCount %d, want at least 1 (the first restart is immediate)", s.RestartCount)
	}
	if last := s.LastTerminationState.Terminated; last == nil || last.ExitCode != 3 || last.Reason != "Error" {
		t.Errorf("last termination %+v, want exit 3 reason Error", last)
	}
	if st.Phase != corev1.PodRunning || isReady(st) {
		t.Errorf("phase %s ready %v, want Running and not ready (restartPolicy Always)", st.Phase, isReady(st))
	}
	// The back-off holds: no restart within the first 10s of it.
	restarts := s.RestartCount
	time.Sleep(3 * time.Second)
	if got := containerStatusOf(waitStatus(t, r, pod, time.Second, "synced", func(corev1.PodStatus) bool { return true }), "app").RestartCount; got != restarts {
		t.Errorf("restartCount went %d → %d during the 10s back-off", restarts, got)
	}
	// Changes told about the pod.
	select {
	case uid := <-r.Changes():
		if uid != pod.UID {
			t.Errorf("Changes delivered %s, want %s", uid, pod.UID)
		}
	case <-time.After(5 * time.Second):
		t.Error("Changes delivered nothing for a crashing pod")
	}
}

func TestRestartPolicyAndExitReasons(t *testing.T) {
	env := newTestEnv(t)
	r, _ := env.start()
	oom := toolbox("app", `x=0123456789abcdef; while true; do x=$x$x; done`)
	oom.Resources.Limits = corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("16Mi")}
	missing := toolbox("app", "true")
	// A registry on loopback where nothing listens: the pull fails
	// without leaving the machine.
	missing.Image = "127.0.0.1:1/skep/missing:latest"
	initPod := newPod("init", toolbox("app", "cat /data/init; while true; do sleep 1; done"))
	initPod.Spec.InitContainers = []corev1.Container{
		toolbox("first", "echo one > /data/init"),
		toolbox("second", "echo two >> /data/init"),
	}
	for i := range initPod.Spec.InitContainers {
		initPod.Spec.InitContainers[i].VolumeMounts = []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}
	}
	initPod.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}
	initPod.Spec.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}

	tests := []struct {
		name   string
		pod    *corev1.Pod
		policy corev1.RestartPolicy
		phase  corev1.PodPhase
		check  func(corev1.ContainerStatus) bool
	}{
		{"never-fails", newPod("never", toolbox("app", "exit 2")), corev1.RestartPolicyNever, corev1.PodFailed,
			func(s corev1.ContainerStatus) bool {
				return s.State.Terminated != nil && s.State.Terminated.ExitCode == 2 && s.RestartCount == 0
			}},
		{"onfailure-succeeds", newPod("onfailure", toolbox("app", "exit 0")), corev1.RestartPolicyOnFailure, corev1.PodSucceeded,
			func(s corev1.ContainerStatus) bool {
				return s.State.Terminated != nil && s.State.Terminated.Reason == "Completed" && s.RestartCount == 0
			}},
		{"oom-killed", newPod("oom", oom), corev1.RestartPolicyNever, corev1.PodFailed,
			func(s corev1.ContainerStatus) bool {
				return s.State.Terminated != nil && s.State.Terminated.Reason == "OOMKilled"
			}},
		{"image-missing", newPod("missing", missing), corev1.RestartPolicyAlways, corev1.PodPending,
			func(s corev1.ContainerStatus) bool {
				return s.State.Waiting != nil && (s.State.Waiting.Reason == "ErrImagePull" || s.State.Waiting.Reason == "ImagePullBackOff")
			}},
		{"init-containers-in-order", initPod, corev1.RestartPolicyAlways, corev1.PodRunning,
			func(s corev1.ContainerStatus) bool { return s.State.Running != nil }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.pod.Spec.RestartPolicy = tt.policy
			st := waitStatus(t, r, tt.pod, 30*time.Second, string(tt.phase), func(st corev1.PodStatus) bool {
				return st.Phase == tt.phase && tt.check(containerStatusOf(st, "app"))
			})
			if tt.name == "init-containers-in-order" {
				for _, name := range []string{"first", "second"} {
					if s := containerStatusOf(st, name); s.State.Terminated == nil || s.State.Terminated.ExitCode != 0 {
						t.Errorf("init container %s: %s, want terminated 0", name, stateString(s.State))
					}
				}
				if condition(st, corev1.PodInitialized) != corev1.ConditionTrue {
					t.Error("Initialized is not True")
				}
				if got := execOut(t, r, tt.pod, "app", "cat", "/data/init"); got != "one\ntwo\n" {
					t.Errorf("init containers wrote %q, want %q", got, "one\ntwo\n")
				}
			}
			if err := r.KillPod(t.Context(), tt.pod.UID, time.Second); err != nil {
				t.Errorf("KillPod: %v", err)
			}
		})
	}
}

func TestKillPodLeavesNothingBehind(t *testing.T) {
	env := newTestEnv(t)
	r, _ := env.start()
	pod := introPod()
	st := waitStatus(t, r, pod, 60*time.Second, "Ready", isReady)
	if n := len(shimsOf(env.dataDir)); n != 1 {
		t.Errorf("%d shims for the pod's three containers, want 1 (grouped by pod)", n)
	}
	podDir := r.podDir(pod.UID)
	if _, err := os.Stat(filepath.Join(podDir, "volumes", "data", "msg")); err != nil {
		t.Errorf("emptyDir on the host: %v", err)
	}

	start := time.Now()
	if err := r.KillPod(t.Context(), pod.UID, 5*time.Second); err != nil {
		t.Fatalf("KillPod: %v", err)
	}
	if took := time.Since(start); took > 4*time.Second {
		t.Errorf("KillPod took %s: the containers trap SIGTERM and should not need the whole grace period", took)
	}
	_ = st

	ctx := nsCtx(t)
	if ctrs, err := r.client.Containers(ctx); err != nil || len(ctrs) != 0 {
		t.Errorf("containers left: %d (%v)", len(ctrs), err)
	}
	if tasks, err := r.client.TaskService().List(ctx, &tasks.ListTasksRequest{}); err != nil || len(tasks.Tasks) != 0 {
		t.Errorf("tasks left: %v (%v)", tasks, err)
	}
	var snaps []string
	err := r.client.SnapshotService(snapshotter).Walk(ctx, func(_ context.Context, info snapshots.Info) error {
		if info.Kind != snapshots.KindCommitted {
			snaps = append(snaps, info.Name)
		}
		return nil
	})
	if err != nil || len(snaps) != 0 {
		t.Errorf("container snapshots left: %v (%v)", snaps, err)
	}
	if m := mountsUnder(env.dataDir); len(m) != 0 {
		t.Errorf("mounts left: %v", m)
	}
	if shims := shimsOf(env.dataDir); len(shims) != 0 {
		t.Errorf("shims left: %v", shims)
	}
	cg, _ := findCgroupMounts()
	for _, m := range cg.all {
		if left := cgroupsBelow(filepath.Join(m, env.cgroupParent)); len(left) != 0 {
			t.Errorf("cgroups left in %s: %v", m, left)
		}
	}
	if _, err := os.Stat(podDir); !os.IsNotExist(err) {
		t.Errorf("pod dir %s still exists (%v)", podDir, err)
	}
	if n := env.network.teardowns(string(pod.UID)); n != 1 {
		t.Errorf("Network.Teardown called %d times, want 1", n)
	}
	if pods, err := r.ListPods(t.Context()); err != nil || len(pods) != 0 {
		t.Errorf("ListPods after KillPod: %v (%v)", pods, err)
	}
	// Killing it again is no error.
	if err := r.KillPod(t.Context(), pod.UID, 0); err != nil {
		t.Errorf("second KillPod: %v", err)
	}
}

func TestRestartedRuntimeAdoptsRunningPod(t *testing.T) {
	env := newTestEnv(t)
	r1, stop1 := env.start()
	pod := introPod()
	before := waitStatus(t, r1, pod, 60*time.Second, "Ready", isReady)
	pidBefore := execOut(t, r1, pod, "app1", "sh", "-c", "cat /proc/1/stat | cut -d' ' -f22") // start time of PID 1
	stop1()                                                                                   // the agent goes away; so does its containerd; the pod stays

	r2, _ := env.start()
	pods, err := r2.ListPods(t.Context())
	if err != nil || len(pods) != 1 || pods[0].UID != pod.UID || len(pods[0].Containers) != 3 || pods[0].SandboxID == "" {
		t.Fatalf("ListPods after restart: %+v (%v), want the pod with its sandbox and two containers", pods, err)
	}
	for _, c := range pods[0].Containers {
		if !c.Running {
			t.Errorf("container %s (%s) is not running after the restart", c.ID, c.Kind)
		}
	}
	after := waitStatus(t, r2, pod, 30*time.Second, "Ready", isReady)
	for _, name := range []string{"app1", "app2"} {
		b, a := containerStatusOf(before, name), containerStatusOf(after, name)
		if a.ContainerID != b.ContainerID || a.RestartCount != 0 {
			t.Errorf("%s: container %s restarts %d after adoption, want %s and 0", name, a.ContainerID, a.RestartCount, b.ContainerID)
		}
	}
	if after.PodIP != before.PodIP {
		t.Errorf("pod IP %s after adoption, want %s", after.PodIP, before.PodIP)
	}
	if !after.StartTime.Equal(before.StartTime) {
		t.Errorf("startTime %v after adoption, want %v", after.StartTime, before.StartTime)
	}
	if pidAfter := execOut(t, r2, pod, "app1", "sh", "-c", "cat /proc/1/stat | cut -d' ' -f22"); pidAfter != pidBefore {
		t.Errorf("app1's process started at %s, before the restart at %s: it was restarted", pidAfter, pidBefore)
	}
	// Exits are still noticed after adoption.
	if _, err := r2.Exec(t.Context(), pod.UID, "app2", []string{"kill", "-TERM", "1"}, nil, nil, nil); err != nil {
		t.Fatalf("exec kill: %v", err)
	}
	waitStatus(t, r2, pod, 30*time.Second, "restarted", func(st corev1.PodStatus) bool {
		s := containerStatusOf(st, "app2")
		return s.RestartCount == 1 && s.State.Running != nil
	})
}

func TestContainerdCrashIsSurvived(t *testing.T) {
	env := newTestEnv(t)
	r, _ := env.start()
	pod := introPod()
	before := waitStatus(t, r, pod, 60*time.Second, "Ready", isReady)

	pidFile := filepath.Join(env.dataDir, "containerd", containerdPIDFile)
	data, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	var pid int
	if _, err := fmtSscan(string(data), &pid); err != nil {
		t.Fatal(err)
	}
	if p, err := os.FindProcess(pid); err == nil {
		p.Kill() // the containerd this test's runtime started
	}
	// The supervisor starts a new one; the pod keeps its containers.
	deadline := time.Now().Add(30 * time.Second)
	for {
		data, _ := os.ReadFile(pidFile)
		var newPID int
		fmtSscan(string(data), &newPID)
		if newPID != 0 && newPID != pid && ping(t.Context(), r.ctrd.Address()) == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("containerd was not restarted")
		}
		time.Sleep(100 * time.Millisecond)
	}
	after := waitStatus(t, r, pod, 30*time.Second, "Ready", isReady)
	for _, name := range []string{"app1", "app2"} {
		b, a := containerStatusOf(before, name), containerStatusOf(after, name)
		if a.ContainerID != b.ContainerID || a.RestartCount != 0 {
			t.Errorf("%s: container %s restarts %d after the containerd crash, want %s and 0", name, a.ContainerID, a.RestartCount, b.ContainerID)
		}
	}
	pods, err := listPods(t, r)
	if err != nil || len(pods) != 1 || len(pods[0].Containers) != 3 {
		t.Errorf("ListPods after the crash: %+v (%v), want one pod of three containers", pods, err)
	}
}

func TestPodStartLatency(t *testing.T) {
	env := newTestEnv(t)
	r, _ := env.start()
	const pods = 50
	for _, tt := range []struct {
		containers int
		p50, p99   time.Duration // bounds, generous for a shared 2-core machine
	}{
		{containers: 1, p50: 3 * time.Second, p99: 10 * time.Second},
		{containers: 3, p50: 5 * time.Second, p99: 15 * time.Second},
	} {
		t.Run(fmt.Sprintf("%d-containers", tt.containers), func(t *testing.T) {
			var took []time.Duration
			for i := range pods {
				var cs []corev1.Container
				for j := range tt.containers {
					cs = append(cs, toolbox(fmt.Sprintf("app%d", j), "while true; do sleep 1; done"))
				}
				pod := newPod(fmt.Sprintf("latency-%d-%d", tt.containers, i), cs...)
				start := time.Now()
				waitStatus(t, r, pod, 30*time.Second, "Running", func(st corev1.PodStatus) bool { return st.Phase == corev1.PodRunning })
				took = append(took, time.Since(start))
				t.Cleanup(func() { r.KillPod(context.Background(), pod.UID, 0) })
			}
			slices.Sort(took)
			p50, p99 := took[len(took)/2], took[len(took)*99/100]
			t.Logf("pod start latency (create → Running, %d pods one after another, pause + %d containers): p50 %s p99 %s max %s",
				pods, tt.containers, p50.Round(time.Millisecond), p99.Round(time.Millisecond), took[len(took)-1].Round(time.Millisecond))
			if p50 > tt.p50 || p99 > tt.p99 {
				t.Errorf("pod start latency p50 %s p99 %s, want at most %s and %s", p50, p99, tt.p50, tt.p99)
			}
		})
	}
}

func TestHTTPAndTCPProbesAndEcho(t *testing.T) {
	env := newTestEnv(t)
	r, _ := env.start()
	echo := corev1.Container{
		Name:  "echo",
		Image: "skep/echo:latest",
		Env: []corev1.EnvVar{
			{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
			{Name: "NODE_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.nodeName"}}},
			{Name: "PORT", Value: "9090"},
		},
		Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 9090}},
		StartupProbe: &corev1.Probe{
			ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/startup", Port: intstr.FromString("http")}},
			PeriodSeconds: 1, FailureThreshold: 10,
		},
		LivenessProbe: &corev1.Probe{
			ProbeHandler:  corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(9090)}},
			PeriodSeconds: 1,
		},
		ReadinessProbe: &corev1.Probe{
			ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/", Port: intstr.FromInt32(9090)}},
			PeriodSeconds: 1,
		},
	}
	// The second container never becomes ready: nothing listens on 9999.
	client := toolbox("client", "while true; do sleep 1; done")
	client.ReadinessProbe = &corev1.Probe{
		ProbeHandler:  corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(9999)}},
		PeriodSeconds: 1,
	}
	pod := newPod("echo", echo, client)

	st := waitStatus(t, r, pod, 30*time.Second, "echo ready", func(st corev1.PodStatus) bool {
		s := containerStatusOf(st, "echo")
		return s.Ready && s.Started != nil && *s.Started
	})
	if isReady(st) || condition(st, corev1.ContainersReady) != corev1.ConditionFalse {
		t.Errorf("pod Ready with container client not ready:\n%s", describe(st))
	}
	if s := containerStatusOf(st, "client"); s.Ready || s.State.Running == nil {
		t.Errorf("client: ready %v state %s, want running and not ready", s.Ready, stateString(s.State))
	}
	// The liveness probe keeps passing: no restarts over a few periods.
	time.Sleep(3 * time.Second)
	st = waitStatus(t, r, pod, time.Second, "synced", func(corev1.PodStatus) bool { return true })
	if s := containerStatusOf(st, "echo"); s.RestartCount != 0 || !s.Ready {
		t.Errorf("echo: restarts %d ready %v, want 0 and true", s.RestartCount, s.Ready)
	}

	// The echo server answers over HTTP and UDP with pod, node and client.
	httpAnswer := execOut(t, r, pod, "client", "wget", "-q", "-O", "-", "http://127.0.0.1:9090/")
	// Busybox's nc has no UDP: the datagram comes from the test, through a
	// socket made in the pod's network namespace, to the pod IP.
	r.mu.Lock()
	pw := r.pods[pod.UID]
	r.mu.Unlock()
	pw.mu.Lock()
	nsPath := fmt.Sprintf("/proc/%d/ns/net", pw.sandbox.pid)
	pw.mu.Unlock()
	conn, err := dialInNetNS(t.Context(), nsPath, "udp", net.JoinHostPort(st.PodIP, "9090"))
	if err != nil {
		t.Fatalf("dial udp in the pod: %v", err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 1024)
	n := 0
	if _, err = conn.Write([]byte("ping")); err == nil {
		n, err = conn.Read(buf)
	}
	if err != nil {
		t.Fatalf("udp to echo: %v", err)
	}
	udpAnswer := string(buf[:n])
	for _, tt := range []struct{ answer, client string }{{httpAnswer, "127.0.0.1:"}, {udpAnswer, st.PodIP + ":"}} {
		for _, want := range []string{`"pod":"echo"`, `"node":"n1"`, `"client":"` + tt.client} {
			answer := tt.answer
			if !strings.Contains(answer, want) {
				t.Errorf("echo answered %q, want it to contain %s", answer, want)
			}
		}
	}
}

func TestDeadSandboxIsRecreated(t *testing.T) {
	env := newTestEnv(t)
	r, _ := env.start()
	pod := introPod()
	before := waitStatus(t, r, pod, 60*time.Second, "Ready", isReady)
	r.mu.Lock()
	pw := r.pods[pod.UID]
	r.mu.Unlock()
	pw.mu.Lock()
	pausePID, sandboxID := int(pw.sandbox.pid), pw.sandbox.id
	pw.mu.Unlock()

	// The pod's pause process dies: its namespaces are gone, so every
	// container of the pod is restarted in a new sandbox.
	if err := syscall.Kill(pausePID, syscall.SIGKILL); err != nil {
		t.Fatalf("kill pause %d: %v", pausePID, err)
	}
	after := waitStatus(t, r, pod, 60*time.Second, "Ready in a new sandbox", func(st corev1.PodStatus) bool {
		return isReady(st) && containerStatusOf(st, "app1").RestartCount == 1 && containerStatusOf(st, "app2").RestartCount == 1
	})
	pw.mu.Lock()
	newSandbox := pw.sandbox.id
	pw.mu.Unlock()
	if newSandbox == sandboxID {
		t.Errorf("sandbox %s was not replaced", sandboxID)
	}
	if after.PodIP != before.PodIP {
		t.Errorf("pod IP changed from %s to %s", before.PodIP, after.PodIP)
	}
	if got := execOut(t, r, pod, "app2", "cat", "/data/fetched"); got != "hello-from-app1\n" {
		t.Errorf("app2 fetched %q after the new sandbox, want hello-from-app1", got)
	}
	pods, err := r.ListPods(t.Context())
	if err != nil || len(pods) != 1 || len(pods[0].Containers) != 3 || pods[0].SandboxID != newSandbox {
		t.Errorf("ListPods: %+v (%v), want one pod: the new sandbox and two containers", pods, err)
	}
}

func TestLogsFollowUntilExit(t *testing.T) {
	env := newTestEnv(t)
	r, _ := env.start()
	pod := newPod("logs", toolbox("app", "for i in 1 2 3; do echo line$i; sleep 0.3; done; echo oops >&2; exit 1"))
	pod.Spec.RestartPolicy = corev1.RestartPolicyNever
	waitStatus(t, r, pod, 30*time.Second, "running", func(st corev1.PodStatus) bool {
		return containerStatusOf(st, "app").State.Running != nil
	})
	var out bytes.Buffer
	done := make(chan error, 1)
	go func() { done <- r.Logs(t.Context(), pod.UID, "app", &corev1.PodLogOptions{Follow: true}, &out) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Logs: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Logs -f did not return after the container exited")
	}
	if want := "line1\nline2\nline3\noops\n"; out.String() != want {
		t.Errorf("followed logs %q, want %q", out.String(), want)
	}
	if err := r.Logs(t.Context(), pod.UID, "app", &corev1.PodLogOptions{Previous: true}, &out); !errors.Is(err, ErrNotFound) {
		t.Errorf("previous logs of a container that never restarted: %v, want ErrNotFound", err)
	}
}

// dockerArchive rewrites an OCI layout tarball as a docker-archive (docker
// save's format): the same blobs, named by a manifest.json.
func dockerArchive(t *testing.T, ociTar, repoTag string) []byte {
	t.Helper()
	f, err := os.Open(ociTar)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	files := map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if hdr.Typeflag == tar.TypeReg {
			files[hdr.Name], _ = io.ReadAll(tr)
		}
	}
	var index ocispec.Index
	var manifest ocispec.Manifest
	blob := func(d ocispec.Descriptor) string { return "blobs/sha256/" + d.Digest.Encoded() }
	if err := json.Unmarshal(files["index.json"], &index); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(files[blob(index.Manifests[0])], &manifest); err != nil {
		t.Fatal(err)
	}
	dockerManifest, _ := json.Marshal([]map[string]any{{
		"Config":   blob(manifest.Config),
		"RepoTags": []string{repoTag},
		"Layers":   []string{blob(manifest.Layers[0])},
	}})
	var out bytes.Buffer
	tw := tar.NewWriter(&out)
	for name, data := range map[string][]byte{
		"manifest.json":          dockerManifest,
		blob(manifest.Config):    files[blob(manifest.Config)],
		blob(manifest.Layers[0]): files[blob(manifest.Layers[0])],
	} {
		tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg})
		tw.Write(data)
	}
	tw.Close()
	return out.Bytes()
}

func TestImportDockerArchive(t *testing.T) {
	env := newTestEnv(t)
	r, _ := env.start()
	archive := dockerArchive(t, imageTars[images.Echo], "skep/echo-docker:v1")
	names, err := r.ImportImage(t.Context(), bytes.NewReader(archive))
	if err != nil || len(names) != 1 || names[0] != "docker.io/skep/echo-docker:v1" {
		t.Fatalf("ImportImage of a docker-archive: %v (%v), want [docker.io/skep/echo-docker:v1]", names, err)
	}
	// A pod runs it.
	c := corev1.Container{Name: "echo", Image: "skep/echo-docker:v1", ImagePullPolicy: corev1.PullNever}
	pod := newPod("docker", c)
	waitStatus(t, r, pod, 30*time.Second, "running", func(st corev1.PodStatus) bool {
		return containerStatusOf(st, "echo").State.Running != nil
	})
	// Garbage is refused with an error, not half-imported.
	if _, err := r.ImportImage(t.Context(), strings.NewReader("not a tar")); err == nil {
		t.Error("ImportImage of garbage succeeded")
	}
	if err := r.Ping(t.Context()); err != nil {
		t.Errorf("Ping: %v", err)
	}
}
