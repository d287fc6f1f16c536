package runtime

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// probeTarget is what a probe of one container attempt needs.
type probeTarget struct {
	containerID string
	netnsPath   string
	podIP       string
	ports       []corev1.ContainerPort
	// unhealthy records a failed probe as an Unhealthy event.
	unhealthy func(probe string, err error)
}

// startProbes starts the goroutine running c's startup, liveness and
// readiness probes for its current attempt; finishContainer stops it.
// pw.mu is held.
func (r *Runtime) startProbes(ctx context.Context, pw *podWorker, c *containerState) {
	spec := findContainer(pw.pod, c.name)
	if spec == nil {
		c.started, c.ready = true, true
		return
	}
	c.started = spec.StartupProbe == nil
	c.ready = spec.ReadinessProbe == nil
	if spec.StartupProbe == nil && spec.LivenessProbe == nil && spec.ReadinessProbe == nil {
		return
	}
	target := probeTarget{
		containerID: c.id,
		netnsPath:   fmt.Sprintf("/proc/%d/ns/net", pw.sandbox.pid),
		podIP:       pw.sandbox.ip.String(),
		ports:       spec.Ports,
	}
	pod := pw.pod // the probes report on the pod as it was when the attempt started
	target.unhealthy = func(probe string, err error) {
		r.event(pod, c, corev1.EventTypeWarning, "Unhealthy", "%s probe failed: %v", probe, err)
	}
	if !pw.sandbox.ip.IsValid() {
		target.podIP = "127.0.0.1"
	}
	ctx, cancel := context.WithCancel(ctx)
	c.stopProbes = cancel
	startup, liveness, readiness := spec.StartupProbe, spec.LivenessProbe, spec.ReadinessProbe
	grace := terminationGrace(pw.pod)
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		if startup != nil {
			if !r.probeUntil(ctx, "Startup", startup, target, true) {
				if ctx.Err() == nil {
					r.killForProbe(ctx, pw, target.containerID, "startup probe failed", probeGrace(startup, grace))
				}
				return
			}
			r.setProbeResult(pw, target.containerID, func(c *containerState) bool {
				changed := !c.started
				c.started = true
				return changed
			})
		}
		if readiness != nil {
			r.wg.Add(1)
			go func() {
				defer r.wg.Done()
				r.runReadiness(ctx, pw, readiness, target)
			}()
		}
		if liveness != nil {
			// Liveness starts after the startup probe passed.
			if !r.probeUntil(ctx, "Liveness", liveness, target, false) && ctx.Err() == nil {
				r.killForProbe(ctx, pw, target.containerID, "liveness probe failed", probeGrace(liveness, grace))
			}
		}
	}()
}

func findContainer(pod *corev1.Pod, name string) *corev1.Container {
	for i := range pod.Spec.InitContainers {
		if pod.Spec.InitContainers[i].Name == name {
			return &pod.Spec.InitContainers[i]
		}
	}
	for i := range pod.Spec.Containers {
		if pod.Spec.Containers[i].Name == name {
			return &pod.Spec.Containers[i]
		}
	}
	return nil
}

// probeTiming is a probe's timing fields with Kubernetes' defaults.
type probeTiming struct {
	initialDelay, period, timeout time.Duration
	success, failure              int
}

func timing(p *corev1.Probe) probeTiming {
	t := probeTiming{
		initialDelay: time.Duration(p.InitialDelaySeconds) * time.Second,
		period:       time.Duration(p.PeriodSeconds) * time.Second,
		timeout:      time.Duration(p.TimeoutSeconds) * time.Second,
		success:      int(p.SuccessThreshold),
		failure:      int(p.FailureThreshold),
	}
	if t.period <= 0 {
		t.period = 10 * time.Second
	}
	if t.timeout <= 0 {
		t.timeout = time.Second
	}
	if t.success <= 0 {
		t.success = 1
	}
	if t.failure <= 0 {
		t.failure = 3
	}
	return t
}

// probeUntil runs p every period. untilSuccess (a startup probe) returns
// true once it succeeded; otherwise (liveness) it keeps probing while it
// passes. Either returns false after failureThreshold failures in a row,
// and false when ctx ends.
func (r *Runtime) probeUntil(ctx context.Context, kind string, p *corev1.Probe, target probeTarget, untilSuccess bool) bool {
	t := timing(p)
	if !sleepCtx(ctx, t.initialDelay) {
		return false
	}
	failures := 0
	for {
		err := r.probeOnce(ctx, p, target, t.timeout)
		if ctx.Err() != nil {
			return false
		}
		if err == nil {
			failures = 0
			if untilSuccess {
				return true
			}
		} else {
			failures++
			r.log.Debug("probe failed", "container", target.containerID, "failures", failures, "err", err)
			target.unhealthy(kind, err)
			if failures >= t.failure {
				return false
			}
		}
		if !sleepCtx(ctx, t.period) {
			return false
		}
	}
}

// runReadiness keeps c's readiness up to date until ctx ends.
func (r *Runtime) runReadiness(ctx context.Context, pw *podWorker, p *corev1.Probe, target probeTarget) {
	t := timing(p)
	if !sleepCtx(ctx, t.initialDelay) {
		return
	}
	successes, failures := 0, 0
	for {
		err := r.probeOnce(ctx, p, target, t.timeout)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			successes, failures = successes+1, 0
		} else {
			successes, failures = 0, failures+1
			target.unhealthy("Readiness", err)
		}
		switch {
		case successes >= t.success:
			r.setProbeResult(pw, target.containerID, func(c *containerState) bool {
				changed := !c.ready
				c.ready = true
				return changed
			})
		case failures >= t.failure:
			r.setProbeResult(pw, target.containerID, func(c *containerState) bool {
				changed := c.ready
				c.ready = false
				return changed
			})
		}
		if !sleepCtx(ctx, t.period) {
			return
		}
	}
}

// setProbeResult applies set to the container whose current attempt is
// containerID, and kicks the pod worker when it changed something.
func (r *Runtime) setProbeResult(pw *podWorker, containerID string, set func(*containerState) bool) {
	pw.mu.Lock()
	changed := false
	for _, c := range pw.containers {
		if c.id == containerID && c.running {
			changed = set(c)
		}
	}
	pw.mu.Unlock()
	if changed {
		pw.kick()
	}
}

// killForProbe stops the container attempt a liveness or startup probe gave
// up on: SIGTERM, the grace period, SIGKILL. The exit then restarts it as
// restartPolicy says.
func (r *Runtime) killForProbe(ctx context.Context, pw *podWorker, containerID, why string, grace time.Duration) {
	pw.mu.Lock()
	var target *containerState
	for _, c := range pw.containers {
		if c.id == containerID && c.running {
			target = c
		}
	}
	if target == nil {
		pw.mu.Unlock()
		return
	}
	target.probeFailed = why
	task := target.task
	log := r.podLog(pw.pod).With("container", target.name, "id", containerID)
	r.event(pw.pod, target, corev1.EventTypeNormal, "Killing", "Container %s failed %s, will be restarted", target.name, strings.TrimSuffix(why, " failed"))
	pw.mu.Unlock()

	log.Info("killing container", "why", why)
	if err := stopTask(ctx, task, grace); err != nil {
		log.Warn("kill container", "err", err)
	}
	pw.kick()
}

// terminationGrace is the pod's terminationGracePeriodSeconds (default 30s).
func terminationGrace(pod *corev1.Pod) time.Duration {
	if s := pod.Spec.TerminationGracePeriodSeconds; s != nil {
		return time.Duration(*s) * time.Second
	}
	return 30 * time.Second
}

func probeGrace(p *corev1.Probe, pod time.Duration) time.Duration {
	if p.TerminationGracePeriodSeconds != nil {
		return time.Duration(*p.TerminationGracePeriodSeconds) * time.Second
	}
	return pod
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// probeOnce runs one probe. HTTP and TCP probes connect from inside the
// pod's network namespace to the pod IP, the address the pod serves on
// whatever the node can reach.
func (r *Runtime) probeOnce(ctx context.Context, p *corev1.Probe, target probeTarget, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	switch {
	case p.Exec != nil:
		code, err := r.execTask(ctx, target.containerID, p.Exec.Command, ExecIO{})
		if err != nil {
			return err
		}
		if code != 0 {
			return fmt.Errorf("exec probe %v exited %d", p.Exec.Command, code)
		}
		return nil
	case p.TCPSocket != nil:
		port, err := resolvePort(p.TCPSocket.Port, target.ports)
		if err != nil {
			return err
		}
		host := p.TCPSocket.Host
		if host == "" {
			host = target.podIP
		}
		conn, err := dialInNetNS(ctx, target.netnsPath, "tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			return err
		}
		return conn.Close()
	case p.HTTPGet != nil:
		return httpProbe(ctx, p.HTTPGet, target)
	}
	return errors.New("probe has no exec, tcpSocket or httpGet handler (grpc probes are not supported)")
}

func httpProbe(ctx context.Context, g *corev1.HTTPGetAction, target probeTarget) error {
	port, err := resolvePort(g.Port, target.ports)
	if err != nil {
		return err
	}
	host := g.Host
	if host == "" {
		host = target.podIP
	}
	scheme := "http"
	if g.Scheme == corev1.URISchemeHTTPS {
		scheme = "https"
	}
	u := &url.URL{Scheme: scheme, Host: net.JoinHostPort(host, strconv.Itoa(port)), Path: g.Path}
	if u.Path == "" {
		u.Path = "/"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return fmt.Errorf("http probe: %w", err)
	}
	req.Header.Set("User-Agent", "skep-probe/1")
	for _, h := range g.HTTPHeaders {
		req.Header.Add(h.Name, h.Value)
	}
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return dialInNetNS(ctx, target.netnsPath, network, addr)
		},
		DisableKeepAlives: true,
		// Kubernetes does not verify the certificates of HTTPS probes.
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true},
	}}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 10<<10))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode >= 400 {
		return fmt.Errorf("http probe %s: status %d", u, resp.StatusCode)
	}
	return nil
}

// resolvePort turns a probe's port (a number or a container port's name)
// into a number.
func resolvePort(port intstr.IntOrString, ports []corev1.ContainerPort) (int, error) {
	if port.Type == intstr.Int {
		return port.IntValue(), nil
	}
	for _, p := range ports {
		if p.Name == port.StrVal {
			return int(p.ContainerPort), nil
		}
	}
	if n, err := strconv.Atoi(port.StrVal); err == nil {
		return n, nil
	}
	return 0, fmt.Errorf("probe port %q names no container port", port.StrVal)
}
