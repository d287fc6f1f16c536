package kubectlstreams

import (
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"
)

// testPortForward: kubectl port-forward of two ports of a pod at once;
// HTTP requests over many connections through both get each port's page.
func (s *suite) testPortForward(t *testing.T) {
	t.Parallel()
	s.waitReady(t, "tools")
	local := s.portForward(t, "tools", 8080, 8081)

	// Per port: clients each with its own connections, at once. busybox
	// httpd closes every connection after its answer, so each request is
	// a new connection, and a new stream through kubectl.
	type load struct{ port, clients, requests int }
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		errs   []string
		served = map[int]int{}
	)
	for _, l := range []load{{8080, 5, 100}, {8081, 3, 30}} {
		for c := range l.clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				client := &http.Client{Transport: &http.Transport{}, Timeout: 20 * time.Second}
				defer client.CloseIdleConnections()
				for range l.requests / l.clients {
					body, err := get(client, fmt.Sprintf("http://127.0.0.1:%d/index.html", local[l.port]))
					mu.Lock()
					if want := fmt.Sprintf("port-%d\n", l.port); err != nil || body != want {
						errs = append(errs, fmt.Sprintf("client %d of port %d: %q, %v; want %q", c, l.port, body, err, want))
					} else {
						served[l.port]++
					}
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	if len(errs) > 0 || served[8080] != 100 || served[8081] != 30 {
		t.Errorf("through kubectl port-forward, %d of 100 requests to 8080 and %d of 30 to 8081 got their page; %d failed, the first: %v",
			served[8080], served[8081], len(errs), errs[:min(len(errs), 5)])
	}
}

var forwarding = regexp.MustCompile(`Forwarding from 127\.0\.0\.1:(\d+) -> (\d+)`)

// portForward runs kubectl port-forward of the pod's ports to free local
// ports, for as long as the test runs, and returns the local port of
// each.
func (s *suite) portForward(t *testing.T, pod string, ports ...int) map[int]int {
	t.Helper()
	args := []string{"port-forward", "--address", "127.0.0.1", "pod/" + pod}
	for _, p := range ports {
		args = append(args, ":"+strconv.Itoa(p))
	}
	st := s.start(t, s.kubectl(args...))
	local := map[int]int{}
	waitFor(t, 30*time.Second, "kubectl port-forward to listen", func() string {
		for _, m := range forwarding.FindAllStringSubmatch(st.stdout.String(), -1) {
			l, _ := strconv.Atoi(m[1])
			r, _ := strconv.Atoi(m[2])
			local[r] = l
		}
		if len(local) < len(ports) {
			return st.String()
		}
		return ""
	})
	return local
}

func get(c *http.Client, url string) (string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("%s", resp.Status)
	}
	return string(body), err
}
