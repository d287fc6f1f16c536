// Package netnstest makes the network namespaces the rule-writing
// dataplanes' kernel tests program, and talks through them: a namespace
// with a node address, a route for the service range and backend addresses,
// servers on those addresses, and clients that run inside.
package netnstest

import (
	"crypto/rand"
	"encoding/hex"
	"io"
	"net"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"
)

// NodeIP is the namespace's node address; ServiceRange is routed through
// it, as is ExternalRange (where tests put external and load balancer IPs).
const (
	NodeIP        = "198.18.0.2"
	ServiceRange  = "10.96.0.0/12"
	ExternalRange = "203.0.113.0/24"
)

// New makes a network namespace named prefix-RANDOM with its own netfilter
// tables: lo up, a "node" link NodeIP/24 that ServiceRange and
// ExternalRange route through, and a "pods" link holding the backend
// addresses. (The links are veth pairs with both ends inside: this kernel
// has no dummy module.) It is deleted, with everything in it, when the
// test ends. The path returned is /run/netns/NAME.
func New(t testing.TB, prefix string, backends ...string) string {
	t.Helper()
	b := make([]byte, 4)
	rand.Read(b)
	name := prefix + "-" + hex.EncodeToString(b)
	Run(t, "ip", "netns", "add", name)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	in := func(args ...string) { Run(t, append([]string{"ip", "netns", "exec", name}, args...)...) }
	in("ip", "link", "set", "lo", "up")
	in("ip", "link", "add", "node0", "type", "veth", "peer", "name", "node1")
	in("ip", "addr", "add", NodeIP+"/24", "dev", "node0")
	in("ip", "link", "set", "node0", "up")
	in("ip", "link", "set", "node1", "up")
	in("ip", "route", "add", ServiceRange, "dev", "node0")
	in("ip", "route", "add", ExternalRange, "dev", "node0")
	in("ip", "link", "add", "pods0", "type", "veth", "peer", "name", "pods1")
	in("ip", "link", "set", "pods0", "up")
	in("ip", "link", "set", "pods1", "up")
	for _, ip := range backends {
		in("ip", "addr", "add", ip+"/32", "dev", "pods0")
	}
	return "/run/netns/" + name
}

// Run runs a command and returns its output; failing, it fails the test.
func Run(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// In runs fn on a thread moved into the namespace at path; sockets made
// there stay in that namespace afterwards.
func In(path string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		ns, err := netns.GetFromPath(path)
		if err != nil {
			errc <- err
			return
		}
		defer ns.Close()
		if err := netns.Set(ns); err != nil {
			errc <- err
			return
		}
		err = fn()
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread() // else the thread ends with the goroutine
		}
		errc <- err
	}()
	return <-errc
}

// ServeTCP answers every connection on addr with name.
func ServeTCP(t *testing.T, ns, addr, name string) {
	t.Helper()
	var ln net.Listener
	if err := In(ns, func() (err error) { ln, err = net.Listen("tcp4", addr); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte(name))
			c.Close()
		}
	}()
}

// ServeUDP answers every datagram on addr with name.
func ServeUDP(t *testing.T, ns, addr, name string) {
	t.Helper()
	var pc net.PacketConn
	if err := In(ns, func() (err error) { pc, err = net.ListenPacket("udp4", addr); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 64)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo([]byte(name), from)
		}
	}()
}

// Fetch connects to addr from inside the namespace and reads the answer.
func Fetch(ns, addr string) (string, error) {
	var conn net.Conn
	err := In(ns, func() (err error) { conn, err = net.DialTimeout("tcp4", addr, 2*time.Second); return err })
	if err != nil {
		return "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(2 * time.Second))
	b, err := io.ReadAll(conn)
	return string(b), err
}

// Eventually polls cond until it holds or 10 seconds pass.
func Eventually(t *testing.T, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
