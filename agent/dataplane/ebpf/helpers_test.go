package ebpf

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/skep-io/skep/agent/dataplane"
)

// clientEnv makes the test binary act as a client inside the test cgroup
// instead of running tests: the socket programs only see processes in the
// cgroup they are attached to.
const clientEnv = "SKEP_EBPF_TEST_CLIENT"

func TestMain(m *testing.M) {
	if spec := os.Getenv(clientEnv); spec != "" {
		os.Exit(runClient(spec))
	}
	os.Exit(m.Run())
}

// clientSpec is what a client process does.
type clientSpec struct {
	Mode  string        // "tcp", "udp" (unconnected sendmsg), "udp-connected"
	Addr  string        // where to connect or send
	Count int           // how many connections or datagrams
	Pause time.Duration // between them
}

// clientResult is one connection or datagram, printed as a JSON line.
type clientResult struct {
	Backend string // what the backend answered: its name
	Peer    string // getpeername (tcp, udp-connected) or recvfrom source (udp)
	Err     string // errno name when the call failed
}

func runClient(raw string) int {
	var spec clientSpec
	if err := json.Unmarshal([]byte(raw), &spec); err != nil {
		fmt.Fprintln(os.Stderr, "bad client spec:", err)
		return 2
	}
	enc := json.NewEncoder(os.Stdout)
	if spec.Mode == "udp-hold" {
		return holdUDP(spec, enc)
	}
	if spec.Mode == "tcp-hold" {
		return holdTCP(spec, enc)
	}
	for i := 0; i < spec.Count; i++ {
		if i > 0 {
			time.Sleep(spec.Pause)
		}
		enc.Encode(clientOnce(spec))
	}
	return 0
}

// holdUDP keeps one connected UDP socket: it exchanges a datagram, waits
// for a line on stdin, and tries again on the same socket.
func holdUDP(spec clientSpec, enc *json.Encoder) int {
	ap := netip.MustParseAddrPort(spec.Addr)
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
	if err != nil {
		return 1
	}
	defer unix.Close(fd)
	tv := unix.Timeval{Sec: 2}
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	if err := connect(fd, &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}); err != nil {
		enc.Encode(clientResult{Err: errName(err)})
		return 0
	}
	exchange := func() clientResult {
		if _, err := unix.Write(fd, []byte("hi")); err != nil {
			return clientResult{Err: errName(err)}
		}
		buf := make([]byte, 64)
		n, from, err := recvfrom(fd, buf)
		if err != nil {
			return clientResult{Err: errName(err)}
		}
		return clientResult{Backend: string(buf[:n]), Peer: sockaddrString(from)}
	}
	enc.Encode(exchange())
	bufio.NewReader(os.Stdin).ReadString('\n')
	enc.Encode(exchange())
	return 0
}

// holdTCP keeps one TCP connection: it reports getpeername, waits for a
// line on stdin, and reports getpeername again.
func holdTCP(spec clientSpec, enc *json.Encoder) int {
	ap := netip.MustParseAddrPort(spec.Addr)
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	if err != nil {
		return 1
	}
	defer unix.Close(fd)
	if err := connect(fd, &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}); err != nil {
		enc.Encode(clientResult{Err: errName(err)})
		return 0
	}
	peer := func() clientResult {
		sa, err := unix.Getpeername(fd)
		if err != nil {
			return clientResult{Err: errName(err)}
		}
		return clientResult{Peer: sockaddrString(sa)}
	}
	enc.Encode(peer())
	bufio.NewReader(os.Stdin).ReadString('\n')
	enc.Encode(peer())
	return 0
}

// connect is a blocking connect that survives signals: the Go runtime
// preempts goroutines with SIGURG, and connect(2) is never restarted after
// a signal (it returns EINTR and goes on connecting in the background).
func connect(fd int, sa unix.Sockaddr) error {
	for {
		switch err := unix.Connect(fd, sa); err {
		case unix.EINTR, unix.EALREADY:
			time.Sleep(time.Millisecond)
		case unix.EISCONN:
			return nil // the interrupted connect finished
		default:
			return err
		}
	}
}

// recvfrom retries a receive interrupted by a signal; with SO_RCVTIMEO set
// the kernel does not restart it.
func recvfrom(fd int, buf []byte) (int, unix.Sockaddr, error) {
	for {
		n, from, err := unix.Recvfrom(fd, buf, 0)
		if err != unix.EINTR {
			return n, from, err
		}
	}
}

func clientOnce(spec clientSpec) clientResult {
	ap := netip.MustParseAddrPort(spec.Addr)
	sa := &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
	typ := unix.SOCK_STREAM
	if spec.Mode != "tcp" {
		typ = unix.SOCK_DGRAM
	}
	fd, err := unix.Socket(unix.AF_INET, typ, 0)
	if err != nil {
		return clientResult{Err: errName(err)}
	}
	defer unix.Close(fd)
	tv := unix.Timeval{Sec: 2}
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	buf := make([]byte, 64)
	switch spec.Mode {
	case "tcp", "udp-connected":
		if err := connect(fd, sa); err != nil {
			return clientResult{Err: errName(err)}
		}
		peer, err := unix.Getpeername(fd)
		if err != nil {
			return clientResult{Err: errName(err)}
		}
		if spec.Mode == "udp-connected" {
			if _, err := unix.Write(fd, []byte("hi")); err != nil {
				return clientResult{Err: errName(err)}
			}
		}
		n, from, err := recvfrom(fd, buf)
		if err != nil {
			return clientResult{Err: errName(err)}
		}
		res := clientResult{Backend: string(buf[:n]), Peer: sockaddrString(peer)}
		if spec.Mode == "udp-connected" && sockaddrString(from) != res.Peer {
			res.Err = "recvfrom source " + sockaddrString(from) + " differs from peer"
		}
		return res
	default:
		if err := unix.Sendto(fd, []byte("hi"), 0, sa); err != nil {
			return clientResult{Err: errName(err)}
		}
		n, from, err := recvfrom(fd, buf)
		if err != nil {
			return clientResult{Err: errName(err)}
		}
		return clientResult{Backend: string(buf[:n]), Peer: sockaddrString(from)}
	}
}

func errName(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return unix.ErrnoName(errno)
	}
	return err.Error()
}

func sockaddrString(sa unix.Sockaddr) string {
	if in, ok := sa.(*unix.SockaddrInet4); ok {
		return netip.AddrPortFrom(netip.AddrFrom4(in.Addr), uint16(in.Port)).String()
	}
	return fmt.Sprintf("%v", sa)
}

// runClients runs a client process in cgroup and returns its results.
func runClients(t *testing.T, cgroup string, spec clientSpec) []clientResult {
	t.Helper()
	raw, _ := json.Marshal(spec)
	cg, err := os.Open(cgroup)
	if err != nil {
		t.Fatalf("open cgroup: %v", err)
	}
	defer cg.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), clientEnv+"="+string(raw))
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cg.Fd())}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("client %s: %v\n%s", raw, err, stderr.String())
	}
	var results []clientResult
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		var r clientResult
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("client output %q: %v", sc.Text(), err)
		}
		results = append(results, r)
	}
	if len(results) != spec.Count {
		t.Fatalf("client %s: got %d results, want %d:\n%s", raw, len(results), spec.Count, out)
	}
	return results
}

func randomSuffix() string {
	b := make([]byte, 4)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// testCgroup makes a fresh cgroup2 directory, removed at the end of the
// test once its processes are gone.
func testCgroup(t testing.TB) string {
	t.Helper()
	dir := filepath.Join("/sys/fs/cgroup/unified", "skep-test-"+randomSuffix())
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatalf("create test cgroup: %v", err)
	}
	t.Cleanup(func() {
		deadline := time.Now().Add(10 * time.Second)
		for {
			err := os.Remove(dir)
			if err == nil || errors.Is(err, os.ErrNotExist) {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("remove test cgroup: %v", err)
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
	return dir
}

// testConfig returns a Config with its own pin root and cgroup; the test's
// end removes every pin, link and map.
func testConfig(t testing.TB) Config {
	t.Helper()
	root := "/sys/fs/bpf/skep-test-" + randomSuffix()
	cfg := Config{
		NodeName:   "node-a",
		PinRoot:    root,
		CgroupPath: testCgroup(t),
		NodeIPs:    []netip.Addr{netip.MustParseAddr("127.0.0.1")},
		Logger:     slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	if testing.Verbose() {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	t.Cleanup(func() {
		if err := Cleanup(cfg); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		if _, err := os.Stat(root); err == nil {
			t.Errorf("pin root %s left after Cleanup", root)
			os.RemoveAll(root)
		}
	})
	return cfg
}

func newDataplane(t testing.TB, cfg Config) *Dataplane {
	t.Helper()
	d, err := New(t.Context(), cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// backendServer is a TCP and UDP server on one loopback address that
// answers every connection or datagram with its name.
func backendServer(t *testing.T, name string, addr string) netip.AddrPort {
	t.Helper()
	ap := netip.MustParseAddrPort(addr)
	ln, err := net.ListenTCP("tcp4", net.TCPAddrFromAddrPort(ap))
	if err != nil {
		t.Fatalf("listen %s: %v", addr, err)
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
	pc, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(ap))
	if err != nil {
		t.Fatalf("listen udp %s: %v", addr, err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 64)
		for {
			_, from, err := pc.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			pc.WriteToUDPAddrPort([]byte(name), from)
		}
	}()
	return ap
}

func backend(ap netip.AddrPort) dataplane.Backend {
	return dataplane.Backend{Addr: ap.Addr(), Port: ap.Port(), Ready: true, Local: true, NodeName: "node-a"}
}

func services(list ...*dataplane.Service) map[dataplane.ServiceKey]*dataplane.Service {
	out := map[dataplane.ServiceKey]*dataplane.Service{}
	for _, s := range list {
		out[s.Key] = s
	}
	return out
}
