package kubectlstreams

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// bigSize is the size of the tools pod's /www/big.
const bigSize = 52428800

// testThroughput measures, and logs, how fast 50 MiB go through kubectl
// exec and kubectl port-forward, beside the same copy without the API
// server: cat to cat inside the pod, and curl from the node to the pod's
// address. It asserts that the bytes arrive, not how fast: the numbers
// are for a reader comparing runs.
func (s *suite) testThroughput(t *testing.T) {
	s.waitReady(t, "tools")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	mbps := func(n int64, d time.Duration) string {
		return fmt.Sprintf("%.0f MB/s (%d bytes in %s)", float64(n)/1e6/d.Seconds(), n, d.Round(time.Millisecond))
	}

	// In the pod: cat through a pipe, as kubectl exec's cat is read, ten
	// times over, since busybox's time counts hundredths of a second.
	r := s.run(t, "", "exec", "tools", "--", "time", "-f", "%e", "sh", "-c", "for i in 1 2 3 4 5 6 7 8 9 10; do cat /www/big | cat > /dev/null; done")
	if secs, err := strconv.ParseFloat(strings.TrimSpace(r.Stderr), 64); r.Err == nil && err == nil && secs > 0 {
		t.Logf("cat in the pod:                 %s", mbps(10*bigSize, time.Duration(secs*float64(time.Second))))
	} else {
		t.Errorf("time of cat in the pod: %v\n%s", err, r)
	}

	// kubectl exec: its start (discovery, the pod's GET, the upgrade) is
	// measured apart with true.
	start := time.Now()
	r = s.run(t, "", "exec", "tools", "--", "true")
	overhead := time.Since(start)
	if r.Err != nil {
		t.Errorf("%s", r)
	}
	var n countingWriter
	cmd := s.k.Command(ctx, "exec", "tools", "--", "cat", "/www/big")
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &n, &stderr
	start = time.Now()
	err := cmd.Run()
	d := time.Since(start)
	if err != nil || n != bigSize {
		t.Errorf("kubectl exec tools -- cat /www/big: %v, %d bytes, want %d\n%s", err, n, bigSize, stderr.String())
	} else {
		t.Logf("kubectl exec cat:               %s; %s of it kubectl exec -- true's", mbps(int64(n), d), overhead.Round(time.Millisecond))
	}

	// HTTP: curl to the pod's address from its node, and through
	// kubectl port-forward from the host.
	podIP := strings.TrimSpace(s.must(t, "get", "pod", "tools", "-o", "jsonpath={.status.podIP}"))
	var out, errb bytes.Buffer
	curl := []string{"curl", "-sS", "-o", "/dev/null", "-w", "%{size_download} %{time_total}"}
	code, err := s.lab.Exec(ctx, s.node, append(curl, "http://"+podIP+":8080/big"), nil, &out, &errb)
	if n, d, ok := curlResult(out.String()); err != nil || code != 0 || !ok || n != bigSize {
		t.Errorf("curl http://%s:8080/big on %s: exit %d, %v: %q %s", podIP, s.node, code, err, out.String(), errb.String())
	} else {
		t.Logf("curl from the node to the pod:  %s", mbps(n, d))
	}
	local := s.portForward(t, "tools", 8080)
	c := exec.CommandContext(ctx, curl[0], append(curl[1:], fmt.Sprintf("http://127.0.0.1:%d/big", local[8080]))...)
	o, err := c.Output()
	if n, d, ok := curlResult(string(o)); err != nil || !ok || n != bigSize {
		t.Errorf("curl through kubectl port-forward: %v: %q", err, o)
	} else {
		t.Logf("curl through port-forward:      %s", mbps(n, d))
	}
}

// curlResult reads curl's "-w '%{size_download} %{time_total}'".
func curlResult(out string) (int64, time.Duration, bool) {
	var n int64
	var secs float64
	if _, err := fmt.Sscan(out, &n, &secs); err != nil || secs <= 0 {
		return 0, 0, false
	}
	return n, time.Duration(secs * float64(time.Second)), true
}

// countingWriter counts what is written to it and drops it.
type countingWriter int64

func (c *countingWriter) Write(p []byte) (int, error) {
	*c += countingWriter(len(p))
	return len(p), nil
}

var _ io.Writer = (*countingWriter)(nil)
