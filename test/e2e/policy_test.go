package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/skep-io/skep/controlplane/api"
	"github.com/skep-io/skep/controlplane/client"
)

// echoAnswer is what the echo server says of a request.
type echoAnswer struct {
	Pod, Node, Client string
}

// curlFromClient fetches url from the client outside the cluster.
func (cl *cluster) curlFromClient(t *testing.T, url string) echoAnswer {
	t.Helper()
	var out, errs bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Retried: the node's dataplane may not carry a new Service yet.
	code, err := cl.lab.Exec(ctx, "client", []string{"curl", "-sS", "--max-time", "3", "--retry", "8", "--retry-all-errors", url}, nil, &out, &errs)
	var a echoAnswer
	if err != nil || code != 0 || json.Unmarshal(out.Bytes(), &a) != nil || a.Pod == "" {
		t.Fatalf("curl %s from the client: exit %d %v\n%s%s", url, code, err, out.String(), errs.String())
	}
	return a
}

// testLocalTrafficPolicy: a NodePort Service with externalTrafficPolicy
// Local answers on a node from that node's own backend, and the backend
// sees the outside client's own address.
func testLocalTrafficPolicy(t *testing.T, cl *cluster) {
	cl.apply(t, `apiVersion: v1
kind: Service
metadata:
  name: echo-local
spec:
  type: NodePort
  externalTrafficPolicy: Local
  selector: {app: echo}
  ports:
  - {port: 80, targetPort: 8080, nodePort: 31123}
`)
	objs, _, err := cl.c.List(context.Background(), api.MustLookup("pods"), "default", client.ListOptions{LabelSelector: "app=echo"})
	if err != nil {
		t.Fatal(err)
	}
	withBackend := map[string]bool{}
	for _, o := range objs {
		if p := o.(*corev1.Pod); ready(p) && p.DeletionTimestamp == nil {
			withBackend[p.Spec.NodeName] = true
		}
	}
	if len(withBackend) == 0 {
		t.Fatal("no ready echo pod")
	}
	clientIP := cl.lab.ClientIP().String()
	for _, node := range cl.lab.Nodes() {
		if !withBackend[node] {
			continue
		}
		url := fmt.Sprintf("http://%s:31123/", cl.lab.NodeIP(node))
		a := cl.curlFromClient(t, url)
		host, _, _ := net.SplitHostPort(a.Client)
		if a.Node != node || host != clientIP {
			t.Errorf("%s (Local): answered by %s on %s, which saw the client as %s; want a pod on %s seeing %s", url, a.Pod, a.Node, a.Client, node, clientIP)
			continue
		}
		t.Logf("%s (Local): answered by %s on the same node, which saw the client's own address %s", url, a.Pod, a.Client)
	}
}

// testAffinityTimeout: ClientIP affinity is released once the client has
// been idle longer than timeoutSeconds, so later requests spread again.
func testAffinityTimeout(t *testing.T, cl *cluster) {
	cl.apply(t, `apiVersion: v1
kind: Service
metadata:
  name: echo-aff-short
spec:
  selector: {app: echo}
  sessionAffinity: ClientIP
  sessionAffinityConfig:
    clientIP: {timeoutSeconds: 1}
  ports:
  - {port: 80, targetPort: 8080}
`)
	url := "http://" + cl.clusterIP(t, "echo-aff-short") + "/"
	node := cl.lab.Nodes()[1]
	// Two requests close together share a backend; requests 2.5s apart
	// (longer than the timeout) are chosen afresh and, over 8 rounds,
	// reach more than one of the 3 backends (all 8 on one: (1/3)^7).
	script := fmt.Sprintf(`for i in $(seq 100); do curl -s --max-time 2 -o /dev/null %[1]s && break; sleep 0.1; done
sleep 2.5
for i in $(seq 8); do
  a=$(curl -s --max-time 2 %[1]s | grep -o '"pod":"[^"]*"'); b=$(curl -s --max-time 2 %[1]s | grep -o '"pod":"[^"]*"')
  echo "$a $b"
  sleep 2.5
done`, url)
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if _, err := cl.lab.Exec(ctx, node, []string{"sh", "-c", script}, nil, &out, &out); err != nil {
		t.Fatal(err)
	}
	rounds := strings.Split(strings.TrimSpace(out.String()), "\n")
	pods := map[string]bool{}
	for _, r := range rounds {
		a, b, _ := strings.Cut(r, " ")
		if a == "" || a != b {
			t.Errorf("two requests 0s apart from %s to %s (affinity timeout 1s): %q; want one backend twice", node, url, r)
		}
		pods[a] = true
	}
	if len(rounds) != 8 || len(pods) < 2 {
		t.Fatalf("8 rounds 2.5s apart from %s to %s (affinity timeout 1s) reached %d backend(s): %q; want the affinity released between rounds", node, url, len(pods), out.String())
	}
	t.Logf("ClientIP affinity with timeoutSeconds 1: back-to-back requests stayed together, rounds 2.5s apart reached %d backends", len(pods))
}
