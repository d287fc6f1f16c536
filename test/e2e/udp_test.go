package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/skep-io/skep/controlplane/api"
	"github.com/skep-io/skep/lab/labtest"
)

// udpClient, re-executed on a node, is a UDP client as applications write
// them: a connected socket to addr, one datagram every 50ms, and a new
// socket when a read fails or times out. It prints one line per datagram
// sent, as it goes: the Unix time in milliseconds and the answering pod, or
// "-" for none.
// With dials > 0 it instead makes that many sockets of one datagram each
// and prints the pod of each answer.
func udpClient(addr string, seconds, dials int) int {
	ask := func(c net.Conn) string {
		_ = c.SetDeadline(time.Now().Add(300 * time.Millisecond))
		if _, err := c.Write([]byte("x")); err != nil {
			return "-"
		}
		buf := make([]byte, 2048)
		n, err := c.Read(buf)
		if err != nil {
			return "-"
		}
		var a struct{ Pod string }
		if json.Unmarshal(buf[:n], &a) != nil || a.Pod == "" {
			return "-"
		}
		return a.Pod
	}
	if dials > 0 {
		w := bufio.NewWriter(os.Stdout)
		defer w.Flush()
		for i := 0; i < dials; i++ {
			c, err := net.Dial("udp", addr)
			if err != nil {
				fmt.Fprintln(w, "-")
				continue
			}
			fmt.Fprintln(w, ask(c))
			c.Close()
		}
		return 0
	}
	start := time.Now()
	var c net.Conn
	for time.Since(start) < time.Duration(seconds)*time.Second {
		if c == nil {
			var err error
			if c, err = net.Dial("udp", addr); err != nil {
				fmt.Printf("%d -\n", time.Now().UnixMilli())
				time.Sleep(50 * time.Millisecond)
				continue
			}
		}
		pod := ask(c)
		fmt.Printf("%d %s\n", time.Now().UnixMilli(), pod)
		if pod == "-" {
			c.Close()
			c = nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return 0
}

func udpClientMain(args []string) int {
	seconds, err1 := strconv.Atoi(args[1])
	dials, err2 := strconv.Atoi(args[2])
	if err1 != nil || err2 != nil {
		fmt.Println("usage: udp-client ADDR SECONDS DIALS")
		return 2
	}
	return udpClient(args[0], seconds, dials)
}

// testUDP: UDP through a ClusterIP from a node reaches every backend over
// many sockets; and a client that keeps sending while its backend is
// removed reaches a live backend within a second of the removal.
func testUDP(t *testing.T, cl *cluster) {
	cl.apply(t, `apiVersion: v1
kind: Service
metadata:
  name: echo-udp
spec:
  selector: {app: echo}
  ports:
  - {protocol: UDP, port: 5353, targetPort: 8080}
`)
	addr := net.JoinHostPort(cl.clusterIP(t, "echo-udp"), "5353")
	node := cl.lab.Nodes()[0]
	run := func(d time.Duration, args ...string) []string {
		var out bytes.Buffer
		ctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		code, err := cl.lab.Exec(ctx, node, append([]string{os.Args[0], "udp-client", addr}, args...), nil, &out, &out)
		if err != nil || code != 0 {
			t.Fatalf("udp client on %s to %s: exit %d %v\n%s", node, addr, code, err, out.String())
		}
		return strings.Split(strings.TrimSpace(out.String()), "\n")
	}

	// Many sockets reach every backend (the first may come before the
	// node's dataplane carries the new Service: wait for an answer).
	deadline := time.Now().Add(15 * time.Second)
	for run(10*time.Second, "0", "1")[0] == "-" {
		if time.Now().After(deadline) {
			t.Fatalf("no UDP answer from %s on %s within 15s", addr, node)
		}
		time.Sleep(250 * time.Millisecond)
	}
	pods := map[string]int{}
	for _, p := range run(30*time.Second, "0", "60") {
		pods[p]++
	}
	if len(pods) != 3 || pods["-"] > 0 {
		t.Fatalf("60 UDP sockets from %s to %s were answered by %v; want the 3 echo pods and no lost datagram", node, addr, pods)
	}
	t.Logf("UDP %s from %s: 60 sockets answered by %v", addr, node, pods)

	// A steady client; the pod it talks to is deleted under it.
	const seconds = 12
	var live labtest.SyncBuffer
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), (seconds+20)*time.Second)
		defer cancel()
		_, err := cl.lab.Exec(ctx, node, []string{os.Args[0], "udp-client", addr, strconv.Itoa(seconds), "0"}, nil, &live, &live)
		done <- err
	}()
	var victim string
	for deadline := time.Now().Add(5 * time.Second); victim == "" || victim == "-"; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the steady UDP client got no answer within 5s:\n%s", live.String())
		}
		if r := udpReplies(live.String()); len(r) > 0 {
			victim = r[len(r)-1].pod
		}
	}
	cl.skep(t, "delete", "pod", victim)
	removed := cl.endpointsWithout(t, "echo-udp", victim, 10*time.Second)
	if err := <-done; err != nil {
		t.Fatalf("steady UDP client: %v\n%s", err, live.String())
	}
	var moved, last time.Time
	lost := 0
	for _, r := range udpReplies(live.String()) {
		if r.at.Before(removed) {
			continue
		}
		if r.pod == "-" {
			lost++
		}
		if r.pod != victim && r.pod != "-" && moved.IsZero() {
			moved = r.at
		}
		if r.pod == victim {
			last = r.at
		}
	}
	if moved.IsZero() {
		t.Fatalf("after %s left the Endpoints, the UDP client never reached another pod:\n%s", victim, live.String())
	}
	took := moved.Sub(removed)
	if last.After(moved) {
		t.Errorf("the client reached the removed pod %s again %v after it had moved to another", victim, last.Sub(moved))
	}
	t.Logf("UDP client on %s: its backend %s left the Endpoints; %v later it was answered by another pod (%d datagrams unanswered in between)", node, victim, took.Round(time.Millisecond), lost)
	// Within a second of the removal; iptables and nftables modes, as
	// kube-proxy, write rules at most once a second (--iptables-min-sync-period
	// 1s), so a removal right after another change waits up to a second more.
	limit := time.Second
	if mode := cl.lab.Dataplane(); mode == "iptables" || mode == "nftables" {
		limit += time.Second
	}
	if took > limit {
		t.Errorf("the UDP client reached a live backend %v after its backend was removed; want within %v", took, limit)
	}
	cl.waitReadyReplicas(t, 3, time.Minute)
}

type udpReply struct {
	at  time.Time
	pod string
}

func udpReplies(out string) []udpReply {
	var rs []udpReply
	for _, line := range strings.Split(out, "\n") {
		ms, pod, ok := strings.Cut(strings.TrimSpace(line), " ")
		n, err := strconv.ParseInt(ms, 10, 64)
		if !ok || err != nil {
			continue
		}
		rs = append(rs, udpReply{time.UnixMilli(n), pod})
	}
	return rs
}

// endpointsWithout polls until the named Service's Endpoints no longer
// list pod as ready, and returns when that was seen.
func (cl *cluster) endpointsWithout(t *testing.T, svc, pod string, timeout time.Duration) time.Time {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		obj, err := cl.c.Get(context.Background(), api.MustLookup("endpoints"), "default", svc)
		//lint:ignore SA1019 waits on the v1 Endpoints the controller writes
		if err == nil && !listsPod(obj.(*corev1.Endpoints), pod) {
			return time.Now()
		}
		if time.Now().After(deadline) {
			t.Fatalf("Endpoints %s still list pod %s %v after it was deleted", svc, pod, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

//lint:ignore SA1019 waits on the v1 Endpoints the controller writes
func listsPod(e *corev1.Endpoints, pod string) bool {
	for _, ss := range e.Subsets {
		for _, a := range ss.Addresses {
			if a.TargetRef != nil && a.TargetRef.Name == pod {
				return true
			}
		}
	}
	return false
}
