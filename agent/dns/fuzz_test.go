package dns

import (
	"testing"
	"time"

	"github.com/miekg/dns"
)

// FuzzServeDNS feeds the query handler whatever unpacks as a DNS message and
// checks that it never panics, answers every non-response exactly once, and
// answers with a packet that unpacks, carries the query's ID and fits the
// transport. Plain `go test` runs the seeds; `go test -fuzz FuzzServeDNS`
// searches further.
func FuzzServeDNS(f *testing.F) {
	up := startUpstream(f, upstreamZone)
	s, err := New(Config{Upstreams: []string{up.addr}, UpstreamTimeout: 200 * time.Millisecond, Logger: testLogger(f)}, fixture())
	if err != nil {
		f.Fatal(err)
	}

	pack := func(m *dns.Msg) []byte {
		b, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	withEDNS := func(m *dns.Msg, size uint16, version uint8) *dns.Msg {
		m.SetEdns0(size, true)
		m.IsEdns0().SetVersion(version)
		return m
	}
	names := []struct {
		name  string
		qtype uint16
	}{
		{"web.default.svc.cluster.local.", dns.TypeA},
		{"web.default.svc.cluster.local.", dns.TypeAAAA},
		{"web.default.svc.cluster.local.", dns.TypeSRV},
		{"_http._tcp.web.default.svc.cluster.local.", dns.TypeSRV},
		{"_pg._tcp.db.default.svc.cluster.local.", dns.TypeSRV},
		{"db.default.svc.cluster.local.", dns.TypeA},
		{"db-0.db.default.svc.cluster.local.", dns.TypeA},
		{"box.db.default.svc.cluster.local.", dns.TypeA},
		{"ext.default.svc.cluster.local.", dns.TypeCNAME},
		{"many.default.svc.cluster.local.", dns.TypeANY},
		{"10-244-1-5.default.pod.cluster.local.", dns.TypeA},
		{"fd00--5.default.pod.cluster.local.", dns.TypeAAAA},
		{"nope.default.svc.cluster.local.", dns.TypeA},
		{"cluster.local.", dns.TypeSOA},
		{"cluster.local.", dns.TypeAXFR},
		{"example.test.", dns.TypeA},
		{"big.example.test.", dns.TypeTXT},
		{".", dns.TypeNS},
	}
	for _, n := range names {
		f.Add(pack(query(n.name, n.qtype)), false)
		f.Add(pack(withEDNS(query(n.name, n.qtype), 4096, 0)), true)
	}
	f.Add(pack(withEDNS(query("many.default.svc.cluster.local.", dns.TypeA), 512, 0)), false)
	f.Add(pack(withEDNS(query("web.default.svc.cluster.local.", dns.TypeA), 1232, 1)), false)
	notify := new(dns.Msg).SetNotify("cluster.local.")
	f.Add(pack(notify), false)
	twoQuestions := query("web.default.svc.cluster.local.", dns.TypeA)
	twoQuestions.Question = append(twoQuestions.Question, dns.Question{Name: "example.test.", Qtype: dns.TypeA, Qclass: dns.ClassINET})
	f.Add(pack(twoQuestions), false)
	noQuestion := query("web.default.svc.cluster.local.", dns.TypeA)
	noQuestion.Question = nil
	f.Add(pack(noQuestion), true)
	response := query("web.default.svc.cluster.local.", dns.TypeA)
	response.Response = true
	f.Add(pack(response), false)
	chaos := query("version.bind.", dns.TypeTXT)
	chaos.Question[0].Qclass = dns.ClassCHAOS
	f.Add(pack(chaos), false)
	f.Add([]byte{}, false)
	f.Add([]byte("\xde\xad\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07\xff\xfe\xfd"), false)
	f.Add([]byte("\x00\x01\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xc0\x0c\x00\x01\x00\x01"), false)

	f.Fuzz(func(t *testing.T, packet []byte, overTCP bool) {
		var req dns.Msg
		if err := req.Unpack(packet); err != nil {
			// The server answers these itself (FORMERR or silence) before any
			// handler runs; TestMalformedPackets covers that path.
			return
		}
		w, limit := udpRecorder(), dns.MinMsgSize
		if opt := req.IsEdns0(); opt != nil && int(opt.UDPSize()) > limit {
			limit = int(opt.UDPSize())
		}
		if overTCP {
			w, limit = tcpRecorder(), dns.MaxMsgSize
		}

		s.ServeDNS(w, &req)

		if req.Response {
			if len(w.packets) != 0 {
				t.Fatalf("query %v with QR set: %d replies, want none", &req, len(w.packets))
			}
			return
		}
		if len(w.packets) != 1 {
			t.Fatalf("query %v: %d replies, want 1", &req, len(w.packets))
		}
		b := w.packets[0]
		var resp dns.Msg
		if err := resp.Unpack(b); err != nil {
			t.Fatalf("query %v: reply % x does not unpack: %v", &req, b, err)
		}
		if resp.Id != req.Id || !resp.Response {
			t.Fatalf("query %v: reply id %d response %v, want id %d and QR set", &req, resp.Id, resp.Response, req.Id)
		}
		if len(b) > limit {
			t.Fatalf("query %v: %d-byte reply over %s, want at most %d", &req, len(b), map[bool]string{false: "udp", true: "tcp"}[overTCP], limit)
		}
		if len(resp.Question) > 1 {
			t.Fatalf("query %v: reply has %d questions", &req, len(resp.Question))
		}
	})
}
