package dns

import (
	"context"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

const soaLine = "cluster.local. 5 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 0 7200 1800 86400 5"

// withoutSerial blanks the SOA serial, which is the time of the query.
func withoutSerial(rrs []dns.RR) []dns.RR {
	out := make([]dns.RR, 0, len(rrs))
	for _, rr := range rrs {
		if soa, ok := rr.(*dns.SOA); ok {
			c := *soa
			c.Serial = 0
			rr = &c
		}
		out = append(out, rr)
	}
	return out
}

func TestClusterAnswers(t *testing.T) {
	_, addr := startServer(t, Config{}, fixture())

	const (
		noerror  = dns.RcodeSuccess
		nxdomain = dns.RcodeNameError
		refused  = dns.RcodeRefused
	)
	tests := []struct {
		name   string
		qname  string
		qtype  uint16
		qclass uint16 // IN when zero
		rcode  int
		answer []string
		extra  []string
		soa    bool // an SOA in the authority section (NXDOMAIN, NODATA)
	}{
		{name: "service A", qname: "web.default.svc.cluster.local.", qtype: dns.TypeA,
			answer: []string{"web.default.svc.cluster.local. 5 IN A 10.96.0.10"}},
		{name: "service A mixed case answers as asked", qname: "WEB.Default.SVC.cluster.LOCAL.", qtype: dns.TypeA,
			answer: []string{"WEB.Default.SVC.cluster.LOCAL. 5 IN A 10.96.0.10"}},
		{name: "service AAAA of a v4 service is NODATA", qname: "web.default.svc.cluster.local.", qtype: dns.TypeAAAA, soa: true},
		{name: "service TXT is NODATA", qname: "web.default.svc.cluster.local.", qtype: dns.TypeTXT, soa: true},
		{name: "dual-stack AAAA", qname: "dual.default.svc.cluster.local.", qtype: dns.TypeAAAA,
			answer: []string{"dual.default.svc.cluster.local. 5 IN AAAA fd00:96::30"}},
		{name: "dual-stack ANY", qname: "dual.default.svc.cluster.local.", qtype: dns.TypeANY,
			answer: []string{"dual.default.svc.cluster.local. 5 IN A 10.96.0.30", "dual.default.svc.cluster.local. 5 IN AAAA fd00:96::30"}},
		{name: "other namespace", qname: "api.other.svc.cluster.local.", qtype: dns.TypeA,
			answer: []string{"api.other.svc.cluster.local. 5 IN A 10.96.0.20"}},

		{name: "SRV named port", qname: "_http._tcp.web.default.svc.cluster.local.", qtype: dns.TypeSRV,
			answer: []string{"_http._tcp.web.default.svc.cluster.local. 5 IN SRV 0 100 80 web.default.svc.cluster.local."},
			extra:  []string{"web.default.svc.cluster.local. 5 IN A 10.96.0.10"}},
		{name: "SRV udp port", qname: "_dns._udp.web.default.svc.cluster.local.", qtype: dns.TypeSRV,
			answer: []string{"_dns._udp.web.default.svc.cluster.local. 5 IN SRV 0 100 53 web.default.svc.cluster.local."},
			extra:  []string{"web.default.svc.cluster.local. 5 IN A 10.96.0.10"}},
		{name: "SRV at the service name lists every port", qname: "web.default.svc.cluster.local.", qtype: dns.TypeSRV,
			answer: []string{
				"web.default.svc.cluster.local. 5 IN SRV 0 100 80 web.default.svc.cluster.local.",
				"web.default.svc.cluster.local. 5 IN SRV 0 100 53 web.default.svc.cluster.local.",
			},
			extra: []string{"web.default.svc.cluster.local. 5 IN A 10.96.0.10"}},
		{name: "SRV unnamed port at the service name", qname: "api.other.svc.cluster.local.", qtype: dns.TypeSRV,
			answer: []string{"api.other.svc.cluster.local. 5 IN SRV 0 100 443 api.other.svc.cluster.local."},
			extra:  []string{"api.other.svc.cluster.local. 5 IN A 10.96.0.20"}},
		{name: "SRV wrong protocol", qname: "_http._udp.web.default.svc.cluster.local.", qtype: dns.TypeSRV, rcode: nxdomain, soa: true},
		{name: "SRV unknown port", qname: "_nope._tcp.web.default.svc.cluster.local.", qtype: dns.TypeSRV, rcode: nxdomain, soa: true},
		{name: "SRV protocol level exists", qname: "_tcp.web.default.svc.cluster.local.", qtype: dns.TypeSRV, soa: true},
		{name: "SRV A query is NODATA", qname: "_http._tcp.web.default.svc.cluster.local.", qtype: dns.TypeA, soa: true},

		{name: "headless A is the ready endpoints", qname: "db.default.svc.cluster.local.", qtype: dns.TypeA,
			answer: []string{"db.default.svc.cluster.local. 5 IN A 10.244.1.10", "db.default.svc.cluster.local. 5 IN A 10.244.2.11"}},
		{name: "headless SRV targets each endpoint", qname: "_pg._tcp.db.default.svc.cluster.local.", qtype: dns.TypeSRV,
			answer: []string{
				"_pg._tcp.db.default.svc.cluster.local. 5 IN SRV 0 100 15432 db-0.db.default.svc.cluster.local.",
				"_pg._tcp.db.default.svc.cluster.local. 5 IN SRV 0 100 15432 10-244-2-11.db.default.svc.cluster.local.",
			},
			extra: []string{
				"db-0.db.default.svc.cluster.local. 5 IN A 10.244.1.10",
				"10-244-2-11.db.default.svc.cluster.local. 5 IN A 10.244.2.11",
			}},
		{name: "headless endpoint hostname", qname: "db-0.db.default.svc.cluster.local.", qtype: dns.TypeA,
			answer: []string{"db-0.db.default.svc.cluster.local. 5 IN A 10.244.1.10"}},
		{name: "headless endpoint without hostname by dashed address", qname: "10-244-2-11.db.default.svc.cluster.local.", qtype: dns.TypeA,
			answer: []string{"10-244-2-11.db.default.svc.cluster.local. 5 IN A 10.244.2.11"}},
		{name: "headless not-ready endpoint is not published", qname: "db-2.db.default.svc.cluster.local.", qtype: dns.TypeA, rcode: nxdomain, soa: true},
		{name: "headless without endpoints is NODATA", qname: "empty.default.svc.cluster.local.", qtype: dns.TypeA, soa: true},
		{name: "pod hostname and subdomain", qname: "box.db.default.svc.cluster.local.", qtype: dns.TypeA,
			answer: []string{"box.db.default.svc.cluster.local. 5 IN A 10.244.1.20"}},
		{name: "pod hostname of a pod not ready", qname: "sleepy.db.default.svc.cluster.local.", qtype: dns.TypeA, rcode: nxdomain, soa: true},
		{name: "pod hostname under a service that is not headless", qname: "loner.web.default.svc.cluster.local.", qtype: dns.TypeA, rcode: nxdomain, soa: true},

		{name: "ExternalName A is a CNAME, not chased", qname: "ext.default.svc.cluster.local.", qtype: dns.TypeA,
			answer: []string{"ext.default.svc.cluster.local. 5 IN CNAME db.example.test."}},
		{name: "ExternalName CNAME", qname: "ext.default.svc.cluster.local.", qtype: dns.TypeCNAME,
			answer: []string{"ext.default.svc.cluster.local. 5 IN CNAME db.example.test."}},
		{name: "ExternalName AAAA is a CNAME", qname: "ext.default.svc.cluster.local.", qtype: dns.TypeAAAA,
			answer: []string{"ext.default.svc.cluster.local. 5 IN CNAME db.example.test."}},
		{name: "ExternalName SRV", qname: "_https._tcp.ext.default.svc.cluster.local.", qtype: dns.TypeSRV,
			answer: []string{"_https._tcp.ext.default.svc.cluster.local. 5 IN SRV 0 100 443 db.example.test."}},

		{name: "dashed pod A", qname: "10-244-1-5.default.pod.cluster.local.", qtype: dns.TypeA,
			answer: []string{"10-244-1-5.default.pod.cluster.local. 5 IN A 10.244.1.5"}},
		{name: "dashed pod AAAA", qname: "fd00--5.default.pod.cluster.local.", qtype: dns.TypeAAAA,
			answer: []string{"fd00--5.default.pod.cluster.local. 5 IN AAAA fd00::5"}},
		{name: "dashed pod AAAA of a v4 pod is NODATA", qname: "10-244-1-5.default.pod.cluster.local.", qtype: dns.TypeAAAA, soa: true},
		{name: "dashed pod bad address", qname: "10-244-1-500.default.pod.cluster.local.", qtype: dns.TypeA, rcode: nxdomain, soa: true},
		{name: "dashed pod too many labels", qname: "x.10-244-1-5.default.pod.cluster.local.", qtype: dns.TypeA, rcode: nxdomain, soa: true},

		{name: "missing service", qname: "nope.default.svc.cluster.local.", qtype: dns.TypeA, rcode: nxdomain, soa: true},
		{name: "missing namespace", qname: "web.nope.svc.cluster.local.", qtype: dns.TypeA, rcode: nxdomain, soa: true},
		{name: "search path expansion of a full name", qname: "web.default.svc.cluster.local.default.svc.cluster.local.", qtype: dns.TypeA, rcode: nxdomain, soa: true},
		{name: "unknown subtree", qname: "foo.cluster.local.", qtype: dns.TypeA, rcode: nxdomain, soa: true},
		{name: "namespace exists", qname: "default.svc.cluster.local.", qtype: dns.TypeA, soa: true},
		{name: "namespace without services", qname: "empty-ns.svc.cluster.local.", qtype: dns.TypeA, rcode: nxdomain, soa: true},
		{name: "svc subtree exists", qname: "svc.cluster.local.", qtype: dns.TypeA, soa: true},
		{name: "apex SOA", qname: "cluster.local.", qtype: dns.TypeSOA, answer: []string{soaLine}},
		{name: "apex A is NODATA", qname: "cluster.local.", qtype: dns.TypeA, soa: true},
		{name: "class CHAOS refused", qname: "web.default.svc.cluster.local.", qtype: dns.TypeA, qclass: dns.ClassCHAOS, rcode: refused},
		{name: "zone transfer refused", qname: "cluster.local.", qtype: dns.TypeAXFR, rcode: refused},
	}
	for _, tc := range tests {
		for _, network := range []string{"udp", "tcp"} {
			t.Run(tc.name+"/"+network, func(t *testing.T) {
				q := query(tc.qname, tc.qtype)
				if tc.qclass != 0 {
					q.Question[0].Qclass = tc.qclass
				}
				resp := exchange(t, addr, network, q)
				what := tc.qname + " " + dns.TypeToString[tc.qtype]
				if resp.Rcode != tc.rcode {
					t.Errorf("%s: rcode %s, want %s", what, dns.RcodeToString[resp.Rcode], dns.RcodeToString[tc.rcode])
				}
				if tc.rcode != refused && !resp.Authoritative {
					t.Errorf("%s: AA not set on an answer for the cluster domain", what)
				}
				if got, want := rrStrings(withoutSerial(resp.Answer)), parseRRs(t, tc.answer...); !slices.Equal(got, want) {
					t.Errorf("%s: answer\n%s\nwant\n%s", what, strings.Join(got, "\n"), strings.Join(want, "\n"))
				}
				if got, want := rrStrings(resp.Extra), parseRRs(t, tc.extra...); !slices.Equal(got, want) {
					t.Errorf("%s: additional\n%s\nwant\n%s", what, strings.Join(got, "\n"), strings.Join(want, "\n"))
				}
				var wantNs []string
				if tc.soa {
					wantNs = parseRRs(t, soaLine)
				}
				if got := rrStrings(withoutSerial(resp.Ns)); !slices.Equal(got, wantNs) {
					t.Errorf("%s: authority %q, want %q", what, got, wantNs)
				}
			})
		}
	}
}

func TestConfiguredTTLAndDomain(t *testing.T) {
	src := fixture()
	_, addr := startServer(t, Config{TTL: 30, Domain: "Corp.Example."}, src)

	resp := exchange(t, addr, "udp", query("web.default.svc.corp.example.", dns.TypeA))
	want := parseRRs(t, "web.default.svc.corp.example. 30 IN A 10.96.0.10")
	if got := rrStrings(resp.Answer); !slices.Equal(got, want) {
		t.Errorf("answer %q, want %q", got, want)
	}
	resp = exchange(t, addr, "udp", query("nope.default.svc.corp.example.", dns.TypeA))
	if resp.Rcode != dns.RcodeNameError || len(resp.Ns) != 1 {
		t.Fatalf("missing name: rcode %s authority %v, want NXDOMAIN with an SOA", dns.RcodeToString[resp.Rcode], resp.Ns)
	}
	if soa := resp.Ns[0].(*dns.SOA); soa.Minttl != 30 || soa.Hdr.Ttl != 30 || soa.Hdr.Name != "corp.example." {
		t.Errorf("SOA %v, want owner corp.example. with TTL and minimum 30", soa)
	}
}

// The server reads its Source on every query, so a change shows at once.
func TestAnswersFollowTheSource(t *testing.T) {
	src := fixture()
	_, addr := startServer(t, Config{}, src)
	name := "late.default.svc.cluster.local."

	if resp := exchange(t, addr, "udp", query(name, dns.TypeA)); resp.Rcode != dns.RcodeNameError {
		t.Fatalf("%s before it exists: rcode %s, want NXDOMAIN", name, dns.RcodeToString[resp.Rcode])
	}
	src.setServices(append(src.Services(), clusterIPService("default", "late", "10.96.0.99"))...)
	resp := exchange(t, addr, "udp", query(name, dns.TypeA))
	want := parseRRs(t, name+" 5 IN A 10.96.0.99")
	if got := rrStrings(resp.Answer); resp.Rcode != dns.RcodeSuccess || !slices.Equal(got, want) {
		t.Errorf("%s after it was added: rcode %s answer %q, want NOERROR %q", name, dns.RcodeToString[resp.Rcode], got, want)
	}
}

// A 40-address headless service does not fit in 512 bytes: over UDP the
// answer is cut and TC set, over TCP or with a large EDNS0 buffer it is whole.
func TestTruncation(t *testing.T) {
	_, addr := startServer(t, Config{}, fixture())
	name := "many.default.svc.cluster.local."

	udp := exchange(t, addr, "udp", query(name, dns.TypeA))
	if !udp.Truncated || len(udp.Answer) >= 40 {
		t.Errorf("UDP without EDNS0: TC=%v with %d answers, want TC and fewer than 40", udp.Truncated, len(udp.Answer))
	}
	udp.Compress = true // as it was on the wire
	if n := udp.Len(); n > dns.MinMsgSize {
		t.Errorf("UDP without EDNS0: %d bytes, want at most %d", n, dns.MinMsgSize)
	}

	tcp := exchange(t, addr, "tcp", query(name, dns.TypeA))
	if tcp.Truncated || len(tcp.Answer) != 40 {
		t.Errorf("TCP: TC=%v with %d answers, want no TC and 40", tcp.Truncated, len(tcp.Answer))
	}

	q := query(name, dns.TypeA)
	q.SetEdns0(4096, false)
	edns := exchange(t, addr, "udp", q)
	if edns.Truncated || len(edns.Answer) != 40 {
		t.Errorf("UDP with EDNS0 4096: TC=%v with %d answers, want no TC and 40", edns.Truncated, len(edns.Answer))
	}
	if opt := edns.IsEdns0(); opt == nil || opt.UDPSize() != advertisedUDPSize {
		t.Errorf("UDP with EDNS0: reply OPT %v, want one advertising %d", opt, advertisedUDPSize)
	}

	// The client library does the whole dance itself: TC over UDP, then TCP.
	c := &dns.Client{Net: "udp", Timeout: 5 * time.Second}
	resp, _, err := c.Exchange(query(name, dns.TypeA), addr)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Truncated {
		resp = exchange(t, addr, "tcp", query(name, dns.TypeA))
	}
	if len(resp.Answer) != 40 {
		t.Errorf("after retrying over TCP: %d answers, want 40", len(resp.Answer))
	}
}

func TestEDNSVersionUnknown(t *testing.T) {
	_, addr := startServer(t, Config{}, fixture())
	q := query("web.default.svc.cluster.local.", dns.TypeA)
	q.SetEdns0(1232, false)
	q.IsEdns0().SetVersion(1)
	resp := exchange(t, addr, "udp", q)
	if resp.Rcode != dns.RcodeBadVers {
		t.Errorf("EDNS version 1: rcode %s, want BADVERS", dns.RcodeToString[resp.Rcode])
	}
}

// Raw packets that are not well-formed queries get FORMERR (or NOTIMP, or
// nothing when they are not worth an answer) and the server keeps serving.
func TestMalformedPackets(t *testing.T) {
	_, addr := startServer(t, Config{}, fixture())

	good := func() []byte {
		b, err := query("web.default.svc.cluster.local.", dns.TypeA).Pack()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	withHeader := func(b []byte, edit func(h []byte)) []byte {
		edit(b)
		return b
	}
	const (
		none    = -1
		formerr = dns.RcodeFormatError
		notimp  = dns.RcodeNotImplemented
	)
	tests := []struct {
		name   string
		packet []byte
		rcode  int // none: no reply expected
	}{
		{"empty", []byte{}, none},
		{"shorter than a header", []byte{0x12, 0x34, 0x01}, none},
		{"header only, one question promised", withHeader(good()[:12], func(h []byte) {}), formerr},
		{"question cut in the middle", good()[:20], formerr},
		{"two questions", withHeader(good(), func(h []byte) { h[5] = 2 }), formerr},
		{"no question", withHeader(good()[:12], func(h []byte) { h[5] = 0 }), formerr},
		{"an answer record in a query", withHeader(good(), func(h []byte) { h[7] = 1 }), formerr},
		{"label pointer loop", append(withHeader(good()[:12], func(h []byte) {}), 0xc0, 0x0c, 0x00, 0x01, 0x00, 0x01), formerr},
		{"label longer than the packet", append(withHeader(good()[:12], func(h []byte) {}), 0x3f, 'a', 'b'), formerr},
		// miekg reads the records that are there when a count overstates
		// them; the question is sound, so it is answered.
		{"additional count larger than the records", withHeader(good(), func(h []byte) { h[11] = 2 }), dns.RcodeSuccess},
		{"opcode UPDATE", withHeader(good(), func(h []byte) { h[2] |= 5 << 3 }), notimp},
		{"a response, not a query", withHeader(good(), func(h []byte) { h[2] |= 0x80 }), none},
		{"garbage with the response bit set", []byte("\xde\xad\xbe\xef\x00\x00\x00\x01\x00\x00\x00\x00\x07\xff\xfe\xfd"), none},
		{"garbage query", []byte("\xde\xad\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07\xff\xfe\xfd"), formerr},
	}
	conn, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })

	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := conn.Write(tc.packet); err != nil {
				t.Fatal(err)
			}
			wait := 2 * time.Second
			if tc.rcode == none {
				wait = 200 * time.Millisecond
			}
			buf := make([]byte, 65535)
			_ = conn.SetReadDeadline(time.Now().Add(wait))
			n, err := conn.Read(buf)
			switch {
			case tc.rcode == none && err == nil:
				t.Errorf("packet % x: got a %d-byte reply, want none", tc.packet, n)
			case tc.rcode == none:
			case err != nil:
				t.Errorf("packet % x: no reply (%v), want %s", tc.packet, err, dns.RcodeToString[tc.rcode])
			default:
				var m dns.Msg
				if err := m.Unpack(buf[:n]); err != nil {
					t.Fatalf("packet % x: reply does not unpack: %v", tc.packet, err)
				}
				if m.Rcode != tc.rcode || !m.Response || m.Id != uint16(tc.packet[0])<<8|uint16(tc.packet[1]) {
					t.Errorf("packet % x: reply rcode %s id %d response %v, want %s with the query's id",
						tc.packet, dns.RcodeToString[m.Rcode], m.Id, m.Response, dns.RcodeToString[tc.rcode])
				}
			}

			// Still alive and answering, on both transports.
			for _, network := range []string{"udp", "tcp"} {
				if resp := exchange(t, addr, network, query("web.default.svc.cluster.local.", dns.TypeA)); len(resp.Answer) != 1 {
					t.Errorf("after packet % x over %s: %d answers, want 1", tc.packet, network, len(resp.Answer))
				}
			}
		})
	}

	t.Run("garbage over tcp", func(t *testing.T) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write([]byte{0x00, 0x05, 0xff, 0xff, 0xff, 0xff, 0xff}); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		_, _ = c.Read(make([]byte, 512)) // a reply or a close; either is fine
		if resp := exchange(t, addr, "tcp", query("web.default.svc.cluster.local.", dns.TypeA)); len(resp.Answer) != 1 {
			t.Errorf("after garbage over tcp: %d answers, want 1", len(resp.Answer))
		}
	})
}

func TestRunLifecycle(t *testing.T) {
	s, err := New(Config{Listen: []string{"127.0.0.1:0", "127.0.0.1:0"}, Upstreams: []string{closedPort(t)}, Logger: testLogger(t)}, fixture())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	<-s.Ready()
	addrs := s.Addrs()
	if len(addrs) != 2 || addrs[0] == addrs[1] {
		t.Fatalf("Addrs() = %q, want two distinct addresses", addrs)
	}
	for _, a := range addrs {
		for _, network := range []string{"udp", "tcp"} {
			if resp := exchange(t, a, network, query("web.default.svc.cluster.local.", dns.TypeA)); len(resp.Answer) != 1 {
				t.Errorf("%s over %s: %d answers, want 1", a, network, len(resp.Answer))
			}
		}
	}
	if err := s.Run(ctx); err == nil {
		t.Errorf("second Run: nil error, want one")
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run after cancel: %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return within 10s of cancel")
	}
	// The sockets are closed: the same ports bind again.
	for _, a := range addrs {
		pc, l, err := listenPair(context.Background(), a)
		if err != nil {
			t.Errorf("rebind %s after Run returned: %v", a, err)
			continue
		}
		pc.Close()
		l.Close()
	}
	done <- nil // for the cleanup
}

func TestRunFailsOnBusyAddress(t *testing.T) {
	pc, l, err := listenPair(t.Context(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close(); l.Close() })
	busy := pc.LocalAddr().String()

	s, err := New(Config{Listen: []string{"127.0.0.1:0", busy}, Upstreams: []string{closedPort(t)}, Logger: testLogger(t)}, fixture())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	err = s.Run(ctx)
	if err == nil || !strings.Contains(err.Error(), busy) {
		t.Fatalf("Run on busy %s: %v, want an error naming it", busy, err)
	}
	select {
	case <-s.Ready():
		t.Errorf("Ready closed although Run failed to bind")
	default:
	}
}

// With publishNotReadyAddresses, endpoints and pods that are not ready are
// published too (StatefulSet peers find each other before they are ready).
func TestPublishNotReadyAddresses(t *testing.T) {
	src := fixture()
	for _, svc := range src.services {
		if svc != nil && svc.Name == "db" {
			svc.Spec.PublishNotReadyAddresses = true
		}
	}
	s, err := New(Config{Upstreams: []string{closedPort(t)}, Logger: testLogger(t)}, src)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ qname, want string }{
		{"db-2.db.default.svc.cluster.local.", "db-2.db.default.svc.cluster.local. 5 IN A 10.244.1.12"},
		{"sleepy.db.default.svc.cluster.local.", "sleepy.db.default.svc.cluster.local. 5 IN A 10.244.1.21"},
	}
	for _, tc := range tests {
		w := udpRecorder()
		s.ServeDNS(w, query(tc.qname, dns.TypeA))
		if len(w.packets) != 1 {
			t.Fatalf("%s: %d replies, want 1", tc.qname, len(w.packets))
		}
		var resp dns.Msg
		if err := resp.Unpack(w.packets[0]); err != nil {
			t.Fatal(err)
		}
		if got, want := rrStrings(resp.Answer), parseRRs(t, tc.want); !slices.Equal(got, want) {
			t.Errorf("%s: answer %q, want %q", tc.qname, got, want)
		}
	}
}
