package dns

import (
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// upstreamZone is what the fake upstream knows. 192.0.2.0/24 is TEST-NET-1:
// the addresses are only data here, nothing is sent to them.
func upstreamZone(w dns.ResponseWriter, r *dns.Msg) {
	m := new(dns.Msg).SetReply(r)
	m.RecursionAvailable = true
	q := r.Question[0]
	switch strings.ToLower(q.Name) {
	case "example.test.":
		m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.IPv4(192, 0, 2, 1)})
	case "big.example.test.":
		for i := range 30 {
			m.Answer = append(m.Answer, &dns.TXT{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60},
				Txt: []string{strings.Repeat(string(rune('a'+i%26)), 60)}})
		}
	default:
		m.Rcode = dns.RcodeNameError
	}
	if isUDP(w) {
		size := dns.MinMsgSize
		if opt := r.IsEdns0(); opt != nil {
			size = int(opt.UDPSize())
		}
		m.Truncate(size)
	}
	_ = w.WriteMsg(m)
}

func TestForward(t *testing.T) {
	up := startUpstream(t, upstreamZone)
	_, addr := startServer(t, Config{Upstreams: []string{up.addr}}, fixture())

	tests := []struct {
		name    string
		qname   string
		qtype   uint16
		network string
		edns    uint16
		rcode   int
		answers int
		tc      bool
		viaTCP  bool // the server had to ask the upstream over TCP
	}{
		{name: "A over udp", qname: "example.test.", qtype: dns.TypeA, network: "udp", answers: 1},
		{name: "A over tcp", qname: "example.test.", qtype: dns.TypeA, network: "tcp", answers: 1},
		{name: "mixed case", qname: "ExAmple.TEST.", qtype: dns.TypeA, network: "udp", answers: 1},
		{name: "NXDOMAIN passes through", qname: "missing.example.test.", qtype: dns.TypeA, network: "udp", rcode: dns.RcodeNameError},
		{name: "truncated upstream over udp, whole over tcp", qname: "big.example.test.", qtype: dns.TypeTXT, network: "tcp", answers: 30, viaTCP: true},
		{name: "big with a big EDNS0 buffer", qname: "big.example.test.", qtype: dns.TypeTXT, network: "udp", edns: 4096, answers: 30},
		{name: "big to a 512-byte client is cut", qname: "big.example.test.", qtype: dns.TypeTXT, network: "udp", answers: -1, tc: true, viaTCP: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q := query(tc.qname, tc.qtype)
			if tc.edns != 0 {
				q.SetEdns0(tc.edns, false)
			}
			tcpBefore := up.tcpQueries.Load()
			resp := exchange(t, addr, tc.network, q)
			what := tc.qname + " over " + tc.network
			if resp.Rcode != tc.rcode {
				t.Errorf("%s: rcode %s, want %s", what, dns.RcodeToString[resp.Rcode], dns.RcodeToString[tc.rcode])
			}
			if tc.answers >= 0 && len(resp.Answer) != tc.answers {
				t.Errorf("%s: %d answers, want %d", what, len(resp.Answer), tc.answers)
			}
			if tc.answers < 0 && (len(resp.Answer) == 0 || len(resp.Answer) >= 30) {
				t.Errorf("%s: %d answers, want some but not all 30", what, len(resp.Answer))
			}
			if resp.Truncated != tc.tc {
				t.Errorf("%s: TC=%v, want %v", what, resp.Truncated, tc.tc)
			}
			if resp.Authoritative {
				t.Errorf("%s: AA set on a forwarded answer", what)
			}
			if asked := up.tcpQueries.Load() > tcpBefore; asked != tc.viaTCP {
				t.Errorf("%s: upstream asked over TCP: %v, want %v", what, asked, tc.viaTCP)
			}
		})
	}

	t.Run("ExternalName target is not chased", func(t *testing.T) {
		before := up.udpQueries.Load() + up.tcpQueries.Load()
		resp := exchange(t, addr, "udp", query("ext.default.svc.cluster.local.", dns.TypeA))
		if len(resp.Answer) != 1 || resp.Answer[0].Header().Rrtype != dns.TypeCNAME {
			t.Errorf("ExternalName: answer %v, want one CNAME", resp.Answer)
		}
		if after := up.udpQueries.Load() + up.tcpQueries.Load(); after != before {
			t.Errorf("ExternalName: upstream asked %d times, want 0", after-before)
		}
	})
}

// silentUpstream is a loopback UDP socket that takes queries and never answers.
func silentUpstream(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc.LocalAddr().String()
}

func TestForwardFailures(t *testing.T) {
	tests := []struct {
		name      string
		upstreams func(t *testing.T) []string
		timeout   time.Duration
		rcode     int
		atLeast   time.Duration
		within    time.Duration
	}{
		{name: "closed port is SERVFAIL at once", upstreams: func(t *testing.T) []string { return []string{closedPort(t)} },
			rcode: dns.RcodeServerFailure, within: 500 * time.Millisecond},
		{name: "silent upstream is SERVFAIL after the timeout", upstreams: func(t *testing.T) []string { return []string{silentUpstream(t)} },
			timeout: 300 * time.Millisecond, rcode: dns.RcodeServerFailure, atLeast: 250 * time.Millisecond, within: time.Second},
		{name: "three silent upstreams share one budget", upstreams: func(t *testing.T) []string {
			return []string{silentUpstream(t), silentUpstream(t), silentUpstream(t)}
		}, timeout: 300 * time.Millisecond, rcode: dns.RcodeServerFailure, atLeast: 250 * time.Millisecond, within: time.Second},
		{name: "closed port then a working one", upstreams: func(t *testing.T) []string {
			return []string{closedPort(t), startUpstream(t, upstreamZone).addr}
		}, rcode: dns.RcodeSuccess, within: 500 * time.Millisecond},
		{name: "silent then a working one", upstreams: func(t *testing.T) []string {
			return []string{silentUpstream(t), startUpstream(t, upstreamZone).addr}
		}, timeout: 400 * time.Millisecond, rcode: dns.RcodeSuccess, atLeast: 150 * time.Millisecond, within: time.Second},
		{name: "an answer to another question is not used", upstreams: func(t *testing.T) []string {
			return []string{startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) {
				m := new(dns.Msg).SetReply(r)
				m.Question[0].Name = "evil.test."
				_ = w.WriteMsg(m)
			}).addr}
		}, rcode: dns.RcodeServerFailure, within: 500 * time.Millisecond},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, addr := startServer(t, Config{Upstreams: tc.upstreams(t), UpstreamTimeout: tc.timeout}, fixture())
			for _, network := range []string{"udp", "tcp"} {
				start := time.Now()
				resp := exchange(t, addr, network, query("example.test.", dns.TypeA))
				took := time.Since(start)
				if resp.Rcode != tc.rcode {
					t.Errorf("over %s: rcode %s, want %s", network, dns.RcodeToString[resp.Rcode], dns.RcodeToString[tc.rcode])
				}
				if took < tc.atLeast || took > tc.within {
					t.Errorf("over %s: answered in %v, want between %v and %v", network, took, tc.atLeast, tc.within)
				}
			}
		})
	}
}

func TestNewConfig(t *testing.T) {
	resolvConf := writeFile(t, "resolv.conf",
		"# node resolvers\nsearch example.test\nnameserver 192.0.2.53\nnameserver fd00::53\nnameserver not-an-ip\noptions ndots:2\n")

	tests := []struct {
		name      string
		cfg       Config
		nilSource bool
		upstreams []string
		err       string // a substring of the error; "" for none
	}{
		{name: "upstreams from resolv.conf, unusable ones skipped", cfg: Config{ResolvConfPath: resolvConf},
			upstreams: []string{"192.0.2.53:53", "[fd00::53]:53"}},
		{name: "explicit upstreams win, port 53 by default", cfg: Config{ResolvConfPath: resolvConf, Upstreams: []string{"127.0.0.1", "127.0.0.2:5353"}},
			upstreams: []string{"127.0.0.1:53", "127.0.0.2:5353"}},
		{name: "our own listen address is not an upstream", cfg: Config{Listen: []string{"127.0.0.1:53"}, Upstreams: []string{"127.0.0.1", "127.0.0.2"}},
			upstreams: []string{"127.0.0.2:53"}},
		{name: "missing resolv.conf", cfg: Config{ResolvConfPath: "/nonexistent/resolv.conf"}, err: "/nonexistent/resolv.conf"},
		{name: "upstream name", cfg: Config{Upstreams: []string{"dns.example.test:53"}}, err: `upstream "dns.example.test:53"`},
		{name: "upstream port", cfg: Config{Upstreams: []string{"127.0.0.1:99999"}}, err: "bad port"},
		{name: "bad domain", cfg: Config{Upstreams: []string{"127.0.0.1"}, Domain: "a..b"}, err: `cluster domain "a..b"`},
		{name: "bad listen address", cfg: Config{Upstreams: []string{"127.0.0.1"}, Listen: []string{"10.244.1.1"}}, err: `listen address "10.244.1.1"`},
		{name: "nil source", cfg: Config{Upstreams: []string{"127.0.0.1"}}, nilSource: true, err: "source is nil"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var src Source = fixture()
			if tc.nilSource {
				src = nil
			}
			s, err := New(tc.cfg, src)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("New(%+v): error %v, want one containing %q", tc.cfg, err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("New(%+v): %v", tc.cfg, err)
			}
			if got := s.Upstreams(); !slices.Equal(got, tc.upstreams) {
				t.Errorf("New(%+v): upstreams %q, want %q", tc.cfg, got, tc.upstreams)
			}
		})
	}
}
