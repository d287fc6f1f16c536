package runtime

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	containerd "github.com/containerd/containerd"
	"github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// foundContainer is a container of a pod as containerd holds it.
type foundContainer struct {
	container containerd.Container
	labels    map[string]string
	kind      string
	name      string
	attempt   int
	image     string
	created   time.Time
}

// podContainers lists the containers containerd holds for the pod uid on
// this node.
func (r *Runtime) podContainers(ctx context.Context, uid types.UID) ([]foundContainer, error) {
	filter := fmt.Sprintf(`labels.%q==%q,labels.%q==%q`, labelPodUID, string(uid), labelNode, r.cfg.NodeName)
	return r.listContainers(ctx, filter)
}

func (r *Runtime) listContainers(ctx context.Context, filter string) ([]foundContainer, error) {
	ctrs, err := r.client.Containers(ctx, filter)
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	found := make([]foundContainer, 0, len(ctrs))
	for _, c := range ctrs {
		info, err := c.Info(ctx, containerd.WithoutRefreshedMetadata)
		if errdefs.IsNotFound(err) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("container %s: %w", c.ID(), err)
		}
		attempt, _ := strconv.Atoi(info.Labels[labelAttempt])
		found = append(found, foundContainer{
			container: c,
			labels:    info.Labels,
			kind:      info.Labels[labelKind],
			name:      info.Labels[labelName],
			attempt:   attempt,
			image:     info.Image,
			created:   info.CreatedAt,
		})
	}
	return found, nil
}

// loadTask returns the container's task and its status; nil when it has none.
func (r *Runtime) loadTask(ctx context.Context, c containerd.Container) (containerd.Task, containerd.ProcessStatus) {
	task, err := c.Task(ctx, nil)
	if err != nil {
		return nil, ""
	}
	st, err := task.Status(ctx)
	if err != nil {
		return task, containerd.Unknown
	}
	return task, st.Status
}

// removeContainer deletes a container whose task is gone, with its snapshot.
func (r *Runtime) removeContainer(ctx context.Context, c containerd.Container) error {
	if task, err := c.Task(ctx, nil); err == nil {
		if _, err := task.Delete(ctx, containerd.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
			return fmt.Errorf("delete task %s: %w", c.ID(), err)
		}
	}
	if err := c.Delete(ctx, containerd.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("delete container %s: %w", c.ID(), err)
	}
	return nil
}

// removeSandboxContainer tears the pod network down and removes the pause
// container.
func (r *Runtime) removeSandboxContainer(ctx context.Context, pw *podWorker, c containerd.Container, task containerd.Task) error {
	var errs []error
	if err := r.cfg.Network.Teardown(ctx, string(pw.uid)); err != nil {
		errs = append(errs, fmt.Errorf("tear down pod network: %w", err))
	}
	if task != nil {
		task.Kill(ctx, syscall.SIGKILL)
	}
	if err := r.removeContainer(ctx, c); err != nil {
		errs = append(errs, err)
	}
	r.untrackContainer(c.ID())
	return errors.Join(errs...)
}

// runtimeOpts runs every container with runc, its state under the
// supervised containerd's directory when there is one.
func (r *Runtime) runtimeOpts() containerd.NewContainerOpts {
	if r.runcRoot == "" {
		return containerd.WithRuntime(runcRuntime, nil)
	}
	return containerd.WithRuntime(runcRuntime, &options.Options{Root: r.runcRoot})
}

func (r *Runtime) labels(pod *corev1.Pod, kind, name string, attempt int) map[string]string {
	return map[string]string{
		labelNode:         r.cfg.NodeName,
		labelPodUID:       string(pod.UID),
		labelPodName:      pod.Name,
		labelPodNamespace: pod.Namespace,
		labelKind:         kind,
		labelName:         name,
		labelAttempt:      strconv.Itoa(attempt),
	}
}

// errSandboxBackoff: the sandbox failed recently and is not retried yet.
var errSandboxBackoff = errors.New("sandbox creation is backing off")

// ensureSandbox checks the pause container and makes one when it is missing
// or dead: then every container of the pod is stopped, since their
// namespaces went with it, and the reconcile that follows restarts them.
func (r *Runtime) ensureSandbox(ctx context.Context, pw *podWorker, now time.Time) error {
	sb := &pw.sandbox
	if sb.task != nil {
		st, err := sb.task.Status(ctx)
		if err == nil && st.Status == containerd.Running {
			return nil
		}
		if err != nil && !errdefs.IsNotFound(err) {
			// containerd is unreachable (restarting, say): that says
			// nothing about the pod; look again in a second.
			pw.retryAt = now.Add(time.Second)
			r.podLog(pw.pod).Debug("sandbox status", "err", err)
			return errSandboxBackoff
		}
		r.podLog(pw.pod).Warn("pod sandbox died; recreating the pod's containers", "sandbox", sb.id)
		for _, c := range pw.containers {
			if c.running {
				c.task.Kill(ctx, syscall.SIGKILL)
				r.finishContainer(ctx, pw, c, 137, now)
			}
			if c.init {
				// Init containers run again in a new sandbox.
				c.exited, c.nextStart = nil, time.Time{}
			}
		}
		if ctr, err := r.client.LoadContainer(ctx, sb.id); err == nil {
			if err := r.removeSandboxContainer(ctx, pw, ctr, sb.task); err != nil {
				r.podLog(pw.pod).Warn("remove dead sandbox", "err", err)
			}
		}
		*sb = sandboxState{attempt: sb.attempt + 1}
	}
	if pw.retryAt.After(now) {
		return errSandboxBackoff
	}
	if err := r.createSandbox(ctx, pw); err != nil {
		if pw.backoff == 0 {
			pw.backoff = time.Second
		}
		pw.retryAt = now.Add(pw.backoff)
		pw.backoff = min(2*pw.backoff, time.Minute)
		return err
	}
	pw.backoff = 0
	return nil
}

// createSandbox starts the pause container, wires its network namespace and
// writes the pod's /etc/hosts and /etc/resolv.conf.
func (r *Runtime) createSandbox(ctx context.Context, pw *podWorker) (err error) {
	pod := pw.pod
	sb := &pw.sandbox
	img, _, err := r.ensureImage(ctx, r.cfg.PauseImage, corev1.PullIfNotPresent)
	if err != nil {
		return fmt.Errorf("pause image: %w", err)
	}
	for _, dir := range []string{"volumes", "etc", "logs"} {
		if err := os.MkdirAll(filepath.Join(r.podDir(pod.UID), dir), 0o755); err != nil {
			return fmt.Errorf("create pod dir: %w", err)
		}
	}
	id := sandboxContainerID(pod.UID, sb.attempt)
	if old, err := r.client.LoadContainer(ctx, id); err == nil {
		// Left by an attempt that failed half-way.
		r.removeSandboxContainer(ctx, pw, old, nil)
	}
	ctr, err := r.client.NewContainer(ctx, id,
		containerd.WithImage(img),
		containerd.WithSnapshotter(snapshotter),
		containerd.WithNewSnapshot(id, img),
		r.runtimeOpts(),
		containerd.WithContainerLabels(r.labels(pod, kindSandbox, "", sb.attempt)),
		containerd.WithNewSpec(
			oci.WithImageConfig(img),
			oci.WithHostname(hostname(pod)),
			oci.WithCgroup(r.podCgroup(pod.UID)+"/"+id),
			oci.WithAnnotations(map[string]string{groupAnnotation: id}),
		),
	)
	if err != nil {
		return fmt.Errorf("create pause container: %w", err)
	}
	r.trackContainer(pod.UID, id)
	defer func() {
		if err != nil {
			r.removeSandboxContainer(context.WithoutCancel(ctx), pw, ctr, nil)
		}
	}()
	task, err := ctr.NewTask(ctx, cio.NullIO)
	if err != nil {
		return fmt.Errorf("create pause task: %w", err)
	}
	if err := task.Start(ctx); err != nil {
		return fmt.Errorf("start pause: %w", err)
	}
	netnsPath := fmt.Sprintf("/proc/%d/ns/net", task.Pid())
	if err := bringUpLoopback(netnsPath); err != nil {
		return err
	}
	ip, err := r.cfg.Network.Setup(ctx, string(pod.UID), netnsPath)
	if err != nil {
		return fmt.Errorf("set up pod network: %w", err)
	}
	if err := r.writePodFiles(pod, ip.String()); err != nil {
		return err
	}
	if _, err := ctr.SetLabels(ctx, map[string]string{labelPodIP: ip.String()}); err != nil {
		return fmt.Errorf("label pause container: %w", err)
	}
	info, err := ctr.Info(ctx, containerd.WithoutRefreshedMetadata)
	if err != nil {
		return fmt.Errorf("pause container: %w", err)
	}
	*sb = sandboxState{id: id, attempt: sb.attempt, task: task, pid: task.Pid(), ip: ip, created: info.CreatedAt}
	r.podLog(pod).Info("pod sandbox started", "sandbox", id, "ip", ip)
	return nil
}

func hostname(pod *corev1.Pod) string {
	name := pod.Name
	if pod.Spec.Hostname != "" {
		name = pod.Spec.Hostname
	}
	if len(name) > 63 {
		name = name[:63]
	}
	return name
}

// writePodFiles writes the /etc/hosts and /etc/resolv.conf every container
// of the pod gets.
func (r *Runtime) writePodFiles(pod *corev1.Pod, ip string) error {
	var hosts strings.Builder
	hosts.WriteString("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
	if ip != "" && ip != "invalid IP" {
		fmt.Fprintf(&hosts, "%s\t%s\n", ip, hostname(pod))
	}
	var resolv []byte
	if r.cfg.ResolvConf != nil {
		resolv = r.cfg.ResolvConf(pod)
	}
	if resolv == nil {
		host, err := os.ReadFile("/etc/resolv.conf")
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("read host resolv.conf: %w", err)
		}
		resolv = host
	}
	dir := filepath.Join(r.podDir(pod.UID), "etc")
	if err := os.WriteFile(filepath.Join(dir, "hosts"), []byte(hosts.String()), 0o644); err != nil {
		return fmt.Errorf("write pod hosts: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "resolv.conf"), resolv, 0o644); err != nil {
		return fmt.Errorf("write pod resolv.conf: %w", err)
	}
	return nil
}

// refreshContainers notices the containers whose task exited.
func (r *Runtime) refreshContainers(ctx context.Context, pw *podWorker) {
	for _, c := range pw.containers {
		if !c.running {
			continue
		}
		st, err := c.task.Status(ctx)
		switch {
		case err == nil && st.Status == containerd.Stopped:
			r.finishContainer(ctx, pw, c, int32(st.ExitStatus), st.ExitTime)
		case errdefs.IsNotFound(err):
			// Its task vanished (containerd lost it): kubelet reports
			// that the way a kill looks.
			r.finishContainer(ctx, pw, c, 137, time.Now())
		}
	}
}

// finishContainer records the exit of c's current attempt, deletes its task
// (freeing its rootfs mount and cgroup) and schedules the restart.
func (r *Runtime) finishContainer(ctx context.Context, pw *podWorker, c *containerState, code int32, finished time.Time) {
	if c.stopProbes != nil {
		c.stopProbes()
		c.stopProbes = nil
	}
	reason := "Error"
	switch {
	case r.cgroups.oomKills(c.cgroup) > 0:
		reason = "OOMKilled"
	case code == 0:
		reason = "Completed"
	}
	if c.task != nil {
		if _, err := c.task.Delete(ctx, containerd.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
			r.podLog(pw.pod).Warn("delete task", "container", c.name, "err", err)
		}
	}
	if finished.IsZero() || finished.Before(c.startedAt) {
		finished = time.Now()
	}
	c.exited = &corev1.ContainerStateTerminated{
		ExitCode:    code,
		Reason:      reason,
		Message:     c.probeFailed,
		StartedAt:   metav1.NewTime(c.startedAt),
		FinishedAt:  metav1.NewTime(finished),
		ContainerID: containerIDPrefix + c.id,
	}
	c.running, c.task, c.pid, c.ready, c.started, c.probeFailed = false, nil, 0, false, false, ""
	if ctr, err := r.client.LoadContainer(ctx, c.id); err == nil {
		ctr.SetLabels(ctx, map[string]string{
			labelExitCode:     strconv.Itoa(int(code)),
			labelExitReason:   reason,
			labelExitStarted:  c.startedAt.Format(time.RFC3339Nano),
			labelExitFinished: finished.Format(time.RFC3339Nano),
		})
	}
	r.podLog(pw.pod).Info("container exited", "container", c.name, "id", c.id, "code", code, "reason", reason)
	if willRestart(pw.pod.Spec.RestartPolicy, c.init, code) {
		c.scheduleRestart(c.startedAt, finished)
	} else {
		c.nextStart = time.Time{}
	}
}

// startContainer starts the next attempt of c: image, container, task.
// Failures are recorded in c as a waiting reason with a back-off.
func (r *Runtime) startContainer(ctx context.Context, pw *podWorker, c *containerState, spec *corev1.Container) {
	now := time.Now()
	log := r.podLog(pw.pod).With("container", spec.Name)
	img, pulled, err := r.ensureImage(ctx, spec.Image, spec.ImagePullPolicy)
	if err != nil {
		c.waitReason, c.waitMessage = reasonErrImagePull, err.Error()
		if errors.Is(err, errImageNeverPull) {
			c.waitReason = reasonErrImageNeverPull
			r.event(pw.pod, c, corev1.EventTypeWarning, reasonErrImageNeverPull, "Container image %q is not present with pull policy of Never", spec.Image)
		} else {
			r.event(pw.pod, c, corev1.EventTypeWarning, "Failed", "Failed to pull image %q: %v", spec.Image, err)
		}
		c.schedulePullRetry(now)
		log.Warn("image", "err", err)
		return
	}
	if pulled > 0 {
		r.event(pw.pod, c, corev1.EventTypeNormal, "Pulled", "Successfully pulled image %q in %s", spec.Image, pulled.Round(time.Millisecond))
	} else {
		r.event(pw.pod, c, corev1.EventTypeNormal, "Pulled", "Container image %q already present on machine", spec.Image)
	}
	c.pullBackoff = 0
	c.image, c.imageID = img.Name(), img.Target().Digest.String()

	// The previous attempt's container goes; its log stays for --previous.
	if c.id != "" {
		if ctr, err := r.client.LoadContainer(ctx, c.id); err == nil {
			if err := r.removeContainer(ctx, ctr); err != nil {
				log.Warn("remove previous container", "err", err)
			}
		}
		r.untrackContainer(c.id)
		if c.exited != nil {
			c.last, c.exited = c.exited, nil
			c.attempt++
		}
		c.id = ""
	}
	r.removeOldLogs(pw.uid, c.name, c.attempt)

	id := appContainerID(pw.uid, spec.Name, c.attempt)
	if old, err := r.client.LoadContainer(ctx, id); err == nil {
		r.removeContainer(ctx, old) // left by an attempt that failed half-way
	}
	c.cgroup = r.podCgroup(pw.uid) + "/" + id
	specOpts, err := r.containerSpec(pw, spec, img, id)
	if err != nil {
		r.failStart(c, reasonCreateContainerError, err, now)
		log.Warn("container spec", "err", err)
		return
	}
	labels := r.labels(pw.pod, kindApp, spec.Name, c.attempt)
	if c.init {
		labels[labelKind] = kindInit
	}
	if c.last != nil {
		labels[labelLastExitCode] = strconv.Itoa(int(c.last.ExitCode))
		labels[labelLastReason] = c.last.Reason
		labels[labelLastStarted] = c.last.StartedAt.Format(time.RFC3339Nano)
		labels[labelLastFinished] = c.last.FinishedAt.Format(time.RFC3339Nano)
		labels[labelLastContainer] = c.last.ContainerID
	}
	ctr, err := r.client.NewContainer(ctx, id,
		containerd.WithImage(img),
		containerd.WithSnapshotter(snapshotter),
		containerd.WithNewSnapshot(id, img),
		r.runtimeOpts(),
		containerd.WithContainerLabels(labels),
		containerd.WithNewSpec(specOpts...),
	)
	if err != nil {
		r.failStart(c, reasonCreateContainerError, err, now)
		r.event(pw.pod, c, corev1.EventTypeWarning, "Failed", "Error: %v", err)
		log.Warn("create container", "err", err)
		return
	}
	r.event(pw.pod, c, corev1.EventTypeNormal, "Created", "Created container: %s", spec.Name)
	r.trackContainer(pw.uid, id)
	c.id = id
	ioc, undoIO, err := r.taskIO(pw.uid, spec, c.attempt)
	var task containerd.Task
	if err == nil {
		if task, err = ctr.NewTask(ctx, ioc); err != nil {
			undoIO()
		}
	}
	if err == nil {
		c.startedAt = time.Now()
		err = task.Start(ctx)
		if err != nil {
			task.Delete(ctx, containerd.WithProcessKill)
			undoIO()
		}
	}
	if err != nil {
		r.removeContainer(ctx, ctr)
		r.untrackContainer(id)
		c.id = ""
		r.failStart(c, reasonRunContainerError, err, now)
		r.event(pw.pod, c, corev1.EventTypeWarning, "Failed", "Error: %v", err)
		log.Warn("start container", "err", err)
		return
	}
	r.event(pw.pod, c, corev1.EventTypeNormal, "Started", "Started container %s", spec.Name)
	c.task, c.pid, c.running = task, task.Pid(), true
	c.waitReason, c.waitMessage = "", ""
	log.Info("container started", "id", id, "restarts", c.attempt)
	r.startProbes(ctx, pw, c)
}

func (r *Runtime) failStart(c *containerState, reason string, err error, now time.Time) {
	c.waitReason, c.waitMessage = reason, err.Error()
	c.scheduleRestart(now, now)
	c.backoffReason = reason
}

// containerSpec is the OCI spec of an app or init container: the image's
// config overridden by the pod spec, the pod's namespaces, cgroup, volumes,
// /etc/hosts and /etc/resolv.conf.
func (r *Runtime) containerSpec(pw *podWorker, spec *corev1.Container, img containerd.Image, id string) ([]oci.SpecOpts, error) {
	pod := pw.pod
	env, err := containerEnv(pod, spec, pw.sandbox.ip.String(), r.cfg.NodeName)
	if err != nil {
		return nil, err
	}
	mounts, err := r.containerMounts(pod, spec)
	if err != nil {
		return nil, err
	}
	opts := []oci.SpecOpts{oci.WithImageConfig(img)}
	switch {
	case len(spec.Command) > 0:
		opts = append(opts, oci.WithProcessArgs(expandAll(append(append([]string{}, spec.Command...), spec.Args...), env)...))
	case len(spec.Args) > 0:
		opts = append(opts, oci.WithImageConfigArgs(img, expandAll(spec.Args, env)))
	}
	opts = append(opts, oci.WithEnv(env))
	if spec.WorkingDir != "" {
		opts = append(opts, oci.WithProcessCwd(spec.WorkingDir))
	}
	if spec.TTY {
		// The shim gives the process a terminal; its output goes to the
		// log as stdout (containerio.go).
		opts = append(opts, oci.WithTTY)
	}
	for _, ns := range []specs.LinuxNamespaceType{specs.NetworkNamespace, specs.IPCNamespace, specs.UTSNamespace} {
		opts = append(opts, oci.WithLinuxNamespace(specs.LinuxNamespace{
			Type: ns,
			Path: fmt.Sprintf("/proc/%d/ns/%s", pw.sandbox.pid, nsFile(ns)),
		}))
	}
	opts = append(opts,
		oci.WithMounts(mounts),
		oci.WithCgroup(r.podCgroup(pod.UID)+"/"+id),
		oci.WithAnnotations(map[string]string{groupAnnotation: pw.sandbox.id}),
	)
	opts = append(opts, resourceOpts(spec.Resources)...)
	return opts, nil
}

func nsFile(ns specs.LinuxNamespaceType) string {
	switch ns {
	case specs.NetworkNamespace:
		return "net"
	case specs.IPCNamespace:
		return "ipc"
	case specs.UTSNamespace:
		return "uts"
	}
	return string(ns)
}

// resourceOpts turns limits into the cgroup settings runc applies: a memory
// limit, a CFS quota for the CPU limit, and CPU shares from the request.
func resourceOpts(res corev1.ResourceRequirements) []oci.SpecOpts {
	var opts []oci.SpecOpts
	if mem, ok := res.Limits[corev1.ResourceMemory]; ok && mem.Value() > 0 {
		opts = append(opts, oci.WithMemoryLimit(uint64(mem.Value())))
	}
	const period = 100000 // µs, the kernel's default CFS period
	if cpu, ok := res.Limits[corev1.ResourceCPU]; ok && cpu.MilliValue() > 0 {
		quota := max(cpu.MilliValue()*period/1000, 1000)
		opts = append(opts, oci.WithCPUCFS(quota, period))
	}
	cpuReq, ok := res.Requests[corev1.ResourceCPU]
	if !ok {
		cpuReq, ok = res.Limits[corev1.ResourceCPU]
	}
	if ok && cpuReq.MilliValue() > 0 {
		opts = append(opts, oci.WithCPUShares(uint64(max(cpuReq.MilliValue()*1024/1000, 2))))
	}
	return opts
}

// containerEnv is the container's environment from the pod spec: values as
// given (with $(VAR) references expanded) and the downward-API fields a
// fieldRef may name.
func containerEnv(pod *corev1.Pod, spec *corev1.Container, podIP, node string) ([]string, error) {
	var env []string
	values := map[string]string{}
	for _, e := range spec.Env {
		v := e.Value
		if e.ValueFrom != nil {
			if e.ValueFrom.FieldRef == nil {
				return nil, fmt.Errorf("env %s: only value and valueFrom.fieldRef are supported", e.Name)
			}
			var err error
			if v, err = podField(pod, e.ValueFrom.FieldRef.FieldPath, podIP, node); err != nil {
				return nil, fmt.Errorf("env %s: %w", e.Name, err)
			}
		} else {
			v = expand(v, values)
		}
		values[e.Name] = v
		env = append(env, e.Name+"="+v)
	}
	return env, nil
}

func podField(pod *corev1.Pod, path, podIP, node string) (string, error) {
	switch path {
	case "metadata.name":
		return pod.Name, nil
	case "metadata.namespace":
		return pod.Namespace, nil
	case "metadata.uid":
		return string(pod.UID), nil
	case "spec.nodeName":
		if pod.Spec.NodeName != "" {
			return pod.Spec.NodeName, nil
		}
		return node, nil
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, nil
	case "status.podIP":
		return podIP, nil
	case "status.hostIP":
		return pod.Status.HostIP, nil
	}
	return "", fmt.Errorf("fieldRef %q is not supported", path)
}

// expand replaces $(NAME) with the value of an earlier variable, leaves
// unknown references as written and turns $$ into $, as Kubernetes does.
func expand(s string, values map[string]string) string {
	if !strings.Contains(s, "$") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 >= len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteByte(s[i])
				continue
			}
			name := s[i+2 : i+2+end]
			if v, ok := values[name]; ok {
				b.WriteString(v)
			} else {
				b.WriteString(s[i : i+3+end])
			}
			i += 2 + end
		default:
			b.WriteByte(s[i])
		}
	}
	return b.String()
}

func expandAll(args []string, env []string) []string {
	values := map[string]string{}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		values[k] = v
	}
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = expand(a, values)
	}
	return out
}

// containerMounts are the bind mounts of a container: the pod's /etc/hosts
// and /etc/resolv.conf, and its volumeMounts.
func (r *Runtime) containerMounts(pod *corev1.Pod, spec *corev1.Container) ([]specs.Mount, error) {
	etc := filepath.Join(r.podDir(pod.UID), "etc")
	mounts := []specs.Mount{
		{Destination: "/etc/hosts", Type: "bind", Source: filepath.Join(etc, "hosts"), Options: []string{"rbind", "rprivate", "rw"}},
		{Destination: "/etc/resolv.conf", Type: "bind", Source: filepath.Join(etc, "resolv.conf"), Options: []string{"rbind", "rprivate", "rw"}},
	}
	volumes := map[string]*corev1.Volume{}
	for i := range pod.Spec.Volumes {
		volumes[pod.Spec.Volumes[i].Name] = &pod.Spec.Volumes[i]
	}
	for _, vm := range spec.VolumeMounts {
		vol, ok := volumes[vm.Name]
		if !ok {
			return nil, fmt.Errorf("volumeMount %s: no volume of that name in the pod", vm.Name)
		}
		source, err := r.volumeSource(pod, vol)
		if err != nil {
			return nil, err
		}
		if vm.SubPath != "" {
			if filepath.IsAbs(vm.SubPath) || strings.Contains(vm.SubPath, "..") {
				return nil, fmt.Errorf("volumeMount %s: subPath %q must be a relative path inside the volume", vm.Name, vm.SubPath)
			}
			source = filepath.Join(source, vm.SubPath)
			if _, err := os.Stat(source); errors.Is(err, os.ErrNotExist) {
				if err := os.MkdirAll(source, 0o777); err != nil {
					return nil, fmt.Errorf("volumeMount %s: create subPath: %w", vm.Name, err)
				}
			}
		}
		mode := "rw"
		if vm.ReadOnly {
			mode = "ro"
		}
		mounts = append(mounts, specs.Mount{Destination: vm.MountPath, Type: "bind", Source: source, Options: []string{"rbind", "rprivate", mode}})
	}
	return mounts, nil
}

// volumeSource is the host path a volume is bound from: a directory of the
// pod for emptyDir, the path itself for hostPath.
func (r *Runtime) volumeSource(pod *corev1.Pod, vol *corev1.Volume) (string, error) {
	switch {
	case vol.EmptyDir != nil:
		dir := filepath.Join(r.podDir(pod.UID), "volumes", vol.Name)
		if err := os.MkdirAll(dir, 0o777); err != nil {
			return "", fmt.Errorf("volume %s: create emptyDir: %w", vol.Name, err)
		}
		// Writable by any user the container runs as, as in Kubernetes.
		if err := os.Chmod(dir, 0o777); err != nil {
			return "", fmt.Errorf("volume %s: %w", vol.Name, err)
		}
		return dir, nil
	case vol.HostPath != nil:
		path := vol.HostPath.Path
		typ := corev1.HostPathUnset
		if vol.HostPath.Type != nil {
			typ = *vol.HostPath.Type
		}
		st, err := os.Stat(path)
		switch typ {
		case corev1.HostPathDirectoryOrCreate:
			if errors.Is(err, os.ErrNotExist) {
				return path, os.MkdirAll(path, 0o755)
			}
		case corev1.HostPathFileOrCreate:
			if errors.Is(err, os.ErrNotExist) {
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					return "", fmt.Errorf("volume %s: %w", vol.Name, err)
				}
				f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
				if err != nil {
					return "", fmt.Errorf("volume %s: %w", vol.Name, err)
				}
				return path, f.Close()
			}
		case corev1.HostPathDirectory:
			if err != nil || !st.IsDir() {
				return "", fmt.Errorf("volume %s: hostPath %s is not a directory", vol.Name, path)
			}
		case corev1.HostPathFile:
			if err != nil || !st.Mode().IsRegular() {
				return "", fmt.Errorf("volume %s: hostPath %s is not a file", vol.Name, path)
			}
		case corev1.HostPathUnset:
			if err != nil {
				return "", fmt.Errorf("volume %s: hostPath %s: %w", vol.Name, path, err)
			}
		}
		return path, nil
	}
	return "", fmt.Errorf("volume %s: only emptyDir and hostPath volumes are supported", vol.Name)
}
