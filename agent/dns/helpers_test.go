package dns

import (
	"context"
	"log/slog"
	"net"
	"os"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// fakeSource is a Source the tests fill and change while the server runs.
type fakeSource struct {
	mu       sync.Mutex
	services []*corev1.Service
	slices   []*discoveryv1.EndpointSlice
	pods     []*corev1.Pod
}

func (f *fakeSource) Services() []*corev1.Service {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*corev1.Service(nil), f.services...)
}

func (f *fakeSource) EndpointSlices() []*discoveryv1.EndpointSlice {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*discoveryv1.EndpointSlice(nil), f.slices...)
}

func (f *fakeSource) Pods() []*corev1.Pod {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*corev1.Pod(nil), f.pods...)
}

func (f *fakeSource) setServices(svcs ...*corev1.Service) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.services = svcs
}

func meta(ns, name string) metav1.ObjectMeta { return metav1.ObjectMeta{Namespace: ns, Name: name} }

func clusterIPService(ns, name, ip string, ports ...corev1.ServicePort) *corev1.Service {
	return &corev1.Service{ObjectMeta: meta(ns, name), Spec: corev1.ServiceSpec{
		Type: corev1.ServiceTypeClusterIP, ClusterIP: ip, ClusterIPs: []string{ip}, Ports: ports,
	}}
}

func headlessService(ns, name string, ports ...corev1.ServicePort) *corev1.Service {
	return &corev1.Service{ObjectMeta: meta(ns, name), Spec: corev1.ServiceSpec{
		Type: corev1.ServiceTypeClusterIP, ClusterIP: corev1.ClusterIPNone, ClusterIPs: []string{corev1.ClusterIPNone}, Ports: ports,
	}}
}

// endpointSlice is one slice of Service ns/svc on a single port.
func endpointSlice(ns, svc, portName string, port int32, eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	m := meta(ns, svc+"-abcde")
	m.Labels = map[string]string{discoveryv1.LabelServiceName: svc}
	tcp := corev1.ProtocolTCP
	return &discoveryv1.EndpointSlice{ObjectMeta: m, AddressType: discoveryv1.AddressTypeIPv4, Endpoints: eps,
		Ports: []discoveryv1.EndpointPort{{Name: &portName, Port: &port, Protocol: &tcp}}}
}

// endpointAt is an endpoint at ip, ready or not, with a hostname if given.
func endpointAt(ip string, ready bool, hostname string) discoveryv1.Endpoint {
	e := discoveryv1.Endpoint{Addresses: []string{ip}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}}
	if hostname != "" {
		e.Hostname = &hostname
	}
	return e
}

func port(name string, proto corev1.Protocol, p int32) corev1.ServicePort {
	return corev1.ServicePort{Name: name, Protocol: proto, Port: p}
}

// fixture is the cluster most tests query.
func fixture() *fakeSource {
	many := endpointSlice("default", "many", "http", 8080)
	for i := range 40 {
		many.Endpoints = append(many.Endpoints, endpointAt("10.244.3."+strconv.Itoa(i+1), true, ""))
	}

	return &fakeSource{
		services: []*corev1.Service{
			clusterIPService("default", "web", "10.96.0.10",
				port("http", corev1.ProtocolTCP, 80), port("dns", corev1.ProtocolUDP, 53)),
			headlessService("default", "db", port("pg", corev1.ProtocolTCP, 5432)),
			{ObjectMeta: meta("default", "ext"), Spec: corev1.ServiceSpec{
				Type: corev1.ServiceTypeExternalName, ExternalName: "db.example.test",
				Ports: []corev1.ServicePort{port("https", corev1.ProtocolTCP, 443)},
			}},
			headlessService("default", "many", port("http", corev1.ProtocolTCP, 80)),
			headlessService("default", "empty", port("http", corev1.ProtocolTCP, 80)),
			clusterIPService("other", "api", "10.96.0.20", port("", corev1.ProtocolTCP, 443)),
			{ObjectMeta: meta("default", "dual"), Spec: corev1.ServiceSpec{
				Type: corev1.ServiceTypeClusterIP, ClusterIP: "10.96.0.30", ClusterIPs: []string{"10.96.0.30", "fd00:96::30"},
			}},
			nil, // the source may hold holes; they are skipped
		},
		slices: []*discoveryv1.EndpointSlice{
			endpointSlice("default", "web", "http", 8080, endpointAt("10.244.1.5", true, ""), endpointAt("10.244.2.7", true, "")),
			// The not-ready endpoint comes first: answers list the ready
			// ones first all the same.
			endpointSlice("default", "db", "pg", 15432, endpointAt("10.244.1.12", false, "db-2"),
				endpointAt("10.244.1.10", true, "db-0"), endpointAt("10.244.2.11", true, "")),
			many,
			nil, // the source may hold holes; they are skipped
		},
		pods: []*corev1.Pod{
			{ObjectMeta: meta("default", "box"),
				Spec: corev1.PodSpec{Hostname: "box", Subdomain: "db"},
				Status: corev1.PodStatus{PodIP: "10.244.1.20", PodIPs: []corev1.PodIP{{IP: "10.244.1.20"}},
					Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}},
			{ObjectMeta: meta("default", "sleepy"),
				Spec:   corev1.PodSpec{Hostname: "sleepy", Subdomain: "db"},
				Status: corev1.PodStatus{PodIP: "10.244.1.21"}},
			{ObjectMeta: meta("default", "loner"),
				Spec: corev1.PodSpec{Hostname: "loner", Subdomain: "web"},
				Status: corev1.PodStatus{PodIP: "10.244.1.22",
					Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}},
		},
	}
}

func testLogger(t testing.TB) *slog.Logger {
	t.Helper()
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// startServer runs a Server on a random loopback port and stops it when the
// test ends. It returns the server and its "127.0.0.1:port".
func startServer(t *testing.T, cfg Config, src Source) (*Server, string) {
	t.Helper()
	if cfg.Listen == nil {
		cfg.Listen = []string{"127.0.0.1:0"}
	}
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	if cfg.Upstreams == nil && cfg.ResolvConfPath == "" {
		cfg.ResolvConfPath = writeFile(t, "resolv.conf", "") // no upstreams
	}
	s, err := New(cfg, src)
	if err != nil {
		t.Fatalf("New(%+v): %v", cfg, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run returned %v after its context ended, want nil", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Run did not return within 10s of its context ending")
		}
	})
	select {
	case <-s.Ready():
	case err := <-done:
		t.Fatalf("Run: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatalf("server not ready after 5s")
	}
	return s, s.Addrs()[0]
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := t.TempDir() + "/" + name
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// exchange sends m to addr over network ("udp" or "tcp").
func exchange(t *testing.T, addr, network string, m *dns.Msg) *dns.Msg {
	t.Helper()
	c := &dns.Client{Net: network, Timeout: 5 * time.Second}
	resp, _, err := c.Exchange(m, addr)
	if err != nil {
		t.Fatalf("query %s %s over %s: %v", m.Question[0].Name, dns.TypeToString[m.Question[0].Qtype], network, err)
	}
	return resp
}

func query(name string, qtype uint16) *dns.Msg {
	return new(dns.Msg).SetQuestion(name, qtype)
}

// rrStrings is the presentation form of rrs, sorted, for comparison.
func rrStrings(rrs []dns.RR) []string {
	out := make([]string, 0, len(rrs))
	for _, rr := range rrs {
		if rr.Header().Rrtype == dns.TypeOPT {
			continue
		}
		out = append(out, rr.String())
	}
	sort.Strings(out)
	return out
}

// parseRRs turns presentation lines into the sorted strings rrStrings gives.
func parseRRs(t *testing.T, lines ...string) []string {
	t.Helper()
	out := make([]string, 0, len(lines))
	for _, l := range lines {
		rr, err := dns.NewRR(l)
		if err != nil {
			t.Fatalf("parse %q: %v", l, err)
		}
		out = append(out, rr.String())
	}
	sort.Strings(out)
	return out
}

// fakeUpstream is a miekg server on loopback, UDP and TCP on one port, that
// answers with handle and counts queries per transport.
type fakeUpstream struct {
	addr       string
	udpQueries atomic.Int32
	tcpQueries atomic.Int32
}

func startUpstream(t testing.TB, handle func(w dns.ResponseWriter, r *dns.Msg)) *fakeUpstream {
	t.Helper()
	up := &fakeUpstream{}
	pc, l, err := listenPair(t.Context(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	up.addr = pc.LocalAddr().String()
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		if isUDP(w) {
			up.udpQueries.Add(1)
		} else {
			up.tcpQueries.Add(1)
		}
		handle(w, r)
	})
	for _, srv := range []*dns.Server{{PacketConn: pc, Handler: h}, {Listener: l, Handler: h}} {
		started := make(chan struct{})
		done := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		go func() {
			defer close(done)
			if err := srv.ActivateAndServe(); err != nil {
				t.Errorf("fake upstream: %v", err)
			}
		}()
		<-started
		t.Cleanup(func() {
			if err := srv.Shutdown(); err != nil {
				t.Errorf("stop fake upstream: %v", err)
			}
			<-done
		})
	}
	return up
}

// closedPort is a loopback UDP address nothing listens on: queries to it
// are refused at once by the kernel.
func closedPort(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	if err := pc.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

// recorder is a ResponseWriter that keeps what the handler writes, packed
// as a real writer would send it.
type recorder struct {
	remote  net.Addr
	packets [][]byte
}

func (r *recorder) LocalAddr() net.Addr  { return &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 53} }
func (r *recorder) RemoteAddr() net.Addr { return r.remote }
func (r *recorder) WriteMsg(m *dns.Msg) error {
	b, err := m.Pack()
	if err != nil {
		return err
	}
	r.packets = append(r.packets, b)
	return nil
}
func (r *recorder) Write(b []byte) (int, error) {
	r.packets = append(r.packets, append([]byte(nil), b...))
	return len(b), nil
}
func (r *recorder) Close() error        { return nil }
func (r *recorder) TsigStatus() error   { return nil }
func (r *recorder) TsigTimersOnly(bool) {}
func (r *recorder) Hijack()             {}

func udpRecorder() *recorder {
	return &recorder{remote: &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}}
}

func tcpRecorder() *recorder {
	return &recorder{remote: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}}
}
