package ebpf

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/skep-io/skep/agent/dataplane"
)

// emptyServices are frontends without a serving backend: TCP with a
// backend that is not ready (and Local, which must not turn the refusal
// into a drop), UDP with none.
func emptyServices() map[dataplane.ServiceKey]*dataplane.Service {
	notReady := be(ap("10.244.1.20:8080"), true)
	notReady.Ready = false
	return services(
		&dataplane.Service{Key: dataplane.ServiceKey{Namespace: "tc", Name: "empty", Protocol: dataplane.TCP},
			ClusterIP: netip.MustParseAddr("10.96.1.5"), Port: 80, NodePort: 30085, ExternalPolicyLocal: true,
			LoadBalancerIPs: []netip.Addr{emptyLBIP}, Backends: []dataplane.Backend{notReady}},
		&dataplane.Service{Key: dataplane.ServiceKey{Namespace: "tc", Name: "empty", Protocol: dataplane.UDP},
			ClusterIP: netip.MustParseAddr("10.96.1.5"), Port: 80, NodePort: 30085,
			LoadBalancerIPs: []netip.Addr{emptyLBIP}},
	)
}

var emptyLBIP = netip.MustParseAddr("198.18.100.5")

func rejectDataplane(t *testing.T) *Dataplane {
	t.Helper()
	cfg := testConfig(t)
	cfg.NodeIPs = []netip.Addr{nodeIP}
	d := newDataplane(t, cfg)
	if err := d.Sync(t.Context(), emptyServices()); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	return d
}

// tcpSegment builds a TCP segment with the given flags, sequence and
// acknowledgment numbers, TCP options and payload.
func tcpSegment(src, dst netip.AddrPort, flags uint8, seq, ack uint32, options []byte, payload string) []byte {
	b := packet(protoTCP, src, dst, "")
	hdr := append(b[:34+20:34+20], options...)
	b = append(hdr, payload...)
	binary.BigEndian.PutUint16(b[14+2:], uint16(len(b)-14))
	binary.BigEndian.PutUint16(b[14+10:], 0)
	binary.BigEndian.PutUint16(b[14+10:], checksum(b[14:34], 0))
	l4 := b[34:]
	binary.BigEndian.PutUint32(l4[4:], seq)
	binary.BigEndian.PutUint32(l4[8:], ack)
	l4[12] = byte((20+len(options))/4) << 4
	l4[13] = flags
	binary.BigEndian.PutUint16(l4[16:], l4Checksum(b))
	return b
}

const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpPSH = 0x08
	tcpACK = 0x10
)

// checkReplyFrame checks what every reply must be: addressed back to the
// sender at both layers, from the frontend, with a valid IP header.
func checkReplyFrame(t *testing.T, in, out []byte, proto uint8, wantLen int) {
	t.Helper()
	if len(out) != wantLen {
		t.Fatalf("reply of %d bytes, want %d:\n%x", len(out), wantLen, out)
	}
	if !bytes.Equal(out[0:6], in[6:12]) || !bytes.Equal(out[6:12], in[0:6]) || binary.BigEndian.Uint16(out[12:]) != 0x0800 {
		t.Errorf("Ethernet header %x, want the request's %x turned around", out[:14], in[:14])
	}
	ip := out[14:34]
	if ip[0] != 0x45 || int(binary.BigEndian.Uint16(ip[2:])) != wantLen-14 || ip[9] != proto || ip[8] == 0 ||
		binary.BigEndian.Uint16(ip[6:])&0x3fff != 0 {
		t.Errorf("IP header %x: want version 4, no options, length %d, protocol %d, a TTL, no fragment", ip, wantLen-14, proto)
	}
	if got, want := binary.BigEndian.Uint16(ip[10:]), checksumWithZero(ip, 10); got != want {
		t.Errorf("IP checksum %#04x, want %#04x", got, want)
	}
	if !bytes.Equal(ip[12:16], in[14+16:14+20]) || !bytes.Equal(ip[16:20], in[14+12:14+16]) {
		t.Errorf("reply from %v to %v, want from %v to %v", netip.AddrFrom4([4]byte(ip[12:16])), netip.AddrFrom4([4]byte(ip[16:20])),
			netip.AddrFrom4([4]byte(in[14+16:14+20])), netip.AddrFrom4([4]byte(in[14+12:14+16])))
	}
}

// TestTCRejectTCP sends TCP segments to frontends without serving
// backends: each is answered with the RST RFC 793 prescribes.
func TestTCRejectTCP(t *testing.T) {
	d := rejectDataplane(t)
	client := ap("198.18.10.1:46000")
	mss := []byte{2, 4, 0x05, 0xb4}
	for _, tc := range []struct {
		name     string
		frontend netip.AddrPort
		in       []byte
		seq, ack uint32
		flags    uint8
	}{
		{"syn-nodeport", netip.AddrPortFrom(nodeIP, 30085),
			tcpSegment(client, netip.AddrPortFrom(nodeIP, 30085), tcpSYN, 1000, 0, mss, ""), 0, 1001, tcpRST | tcpACK},
		{"syn-loadbalancer", netip.AddrPortFrom(emptyLBIP, 80),
			tcpSegment(client, netip.AddrPortFrom(emptyLBIP, 80), tcpSYN, 0xfffffff0, 0, nil, ""), 0, 0xfffffff1, tcpRST | tcpACK},
		// A SYN with data (TCP Fast Open) acknowledges the data too.
		{"syn-with-data", netip.AddrPortFrom(nodeIP, 30085),
			tcpSegment(client, netip.AddrPortFrom(nodeIP, 30085), tcpSYN, 5000, 0, mss, "hello"), 0, 5006, tcpRST | tcpACK},
		// A segment of a connection the node no longer knows: the RST
		// takes its sequence number from the segment's ACK.
		{"ack-with-data", netip.AddrPortFrom(nodeIP, 30085),
			tcpSegment(client, netip.AddrPortFrom(nodeIP, 30085), tcpACK|tcpPSH, 7000, 424242, nil, "data"), 424242, 0, tcpRST},
		{"fin-without-ack", netip.AddrPortFrom(nodeIP, 30085),
			tcpSegment(client, netip.AddrPortFrom(nodeIP, 30085), tcpFIN, 9000, 0, nil, "ab"), 0, 9003, tcpRST | tcpACK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ret, out := run(t, d.objs.TC.Tc4Ingress, tc.in)
			if ret != actRedirect {
				t.Fatalf("verdict %d, want TC_ACT_REDIRECT (the RST back out of the interface)", int32(ret))
			}
			checkReplyFrame(t, tc.in, out, protoTCP, 14+20+20)
			l4 := out[34:]
			if got := netip.AddrPortFrom(netip.AddrFrom4([4]byte(out[26:30])), binary.BigEndian.Uint16(l4)); got != tc.frontend {
				t.Errorf("RST from %v, want %v", got, tc.frontend)
			}
			if got := binary.BigEndian.Uint16(l4[2:]); got != client.Port() {
				t.Errorf("RST to port %d, want %d", got, client.Port())
			}
			seq, ack := binary.BigEndian.Uint32(l4[4:]), binary.BigEndian.Uint32(l4[8:])
			if seq != tc.seq || ack != tc.ack || l4[13] != tc.flags || l4[12] != 5<<4 {
				t.Errorf("RST seq %d ack %d flags %#02x data offset %d, want seq %d ack %d flags %#02x data offset 5",
					seq, ack, l4[13], l4[12]>>4, tc.seq, tc.ack, tc.flags)
			}
			if got, want := binary.BigEndian.Uint16(l4[16:]), l4Checksum(out); got != want {
				t.Errorf("TCP checksum %#04x, want %#04x", got, want)
			}
		})
	}

	t.Run("no-reply", func(t *testing.T) {
		for _, in := range [][]byte{
			// A RST is never answered.
			tcpSegment(client, netip.AddrPortFrom(nodeIP, 30085), tcpRST, 1, 0, nil, ""),
			// Nor is a sender no reply may go to.
			tcpSegment(ap("0.0.0.0:46001"), netip.AddrPortFrom(nodeIP, 30085), tcpSYN, 1, 0, nil, ""),
			tcpSegment(ap("224.0.0.9:46001"), netip.AddrPortFrom(nodeIP, 30085), tcpSYN, 1, 0, nil, ""),
		} {
			if ret, _ := run(t, d.objs.TC.Tc4Ingress, in); ret != actShot {
				t.Errorf("verdict %d, want TC_ACT_SHOT", int32(ret))
			}
		}
	})
}

// TestTCRejectUDP sends UDP datagrams to frontends without serving
// backends: each is answered with an ICMP port unreachable that quotes it.
func TestTCRejectUDP(t *testing.T) {
	d := rejectDataplane(t)
	for _, tc := range []struct {
		name     string
		frontend netip.AddrPort
		payload  string
	}{
		{"nodeport", netip.AddrPortFrom(nodeIP, 30085), "q"},
		{"loadbalancer", netip.AddrPortFrom(emptyLBIP, 80), string(bytes.Repeat([]byte("long payload "), 100))},
		{"empty", netip.AddrPortFrom(nodeIP, 30085), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := packet(protoUDP, ap("198.18.11.1:47000"), tc.frontend, tc.payload)
			ret, out := run(t, d.objs.TC.Tc4Ingress, in)
			if ret != actRedirect {
				t.Fatalf("verdict %d, want TC_ACT_REDIRECT (the ICMP error back out of the interface)", int32(ret))
			}
			checkReplyFrame(t, in, out, 1, 14+20+8+28)
			icmp := out[34:]
			if icmp[0] != 3 || icmp[1] != 3 || binary.BigEndian.Uint32(icmp[4:]) != 0 {
				t.Errorf("ICMP type %d code %d rest %x, want 3 (unreachable) 3 (port) and zeros", icmp[0], icmp[1], icmp[4:8])
			}
			if got, want := binary.BigEndian.Uint16(icmp[2:]), checksumWithZero(icmp, 2); got != want {
				t.Errorf("ICMP checksum %#04x, want %#04x", got, want)
			}
			if !bytes.Equal(icmp[8:], in[14:14+28]) {
				t.Errorf("ICMP quotes %x, want the datagram's IP header and 8 bytes %x", icmp[8:], in[14:14+28])
			}
		})
	}

	t.Run("rate-limited", func(t *testing.T) {
		// The kernel's own default: 1000 a second, bursts of 50; per CPU
		// here. 400 datagrams as fast as they go must meet the limit.
		replies := 0
		for i := range 400 {
			in := packet(protoUDP, netip.AddrPortFrom(netip.MustParseAddr("198.18.11.2"), uint16(48000+i)), netip.AddrPortFrom(nodeIP, 30085), "x")
			switch ret, _ := run(t, d.objs.TC.Tc4Ingress, in); ret {
			case actRedirect:
				replies++
			case actShot:
			default:
				t.Fatalf("verdict %d, want TC_ACT_REDIRECT or TC_ACT_SHOT", int32(ret))
			}
		}
		if replies < 40 || replies == 400 {
			t.Errorf("%d of 400 datagrams answered, want the burst (50 per CPU, less what the subtests took) and not all", replies)
		}
	})
}

// TestTCLocalWithoutLocalBackendDrops keeps kube-proxy's distinction: a
// Local service that has serving backends, only elsewhere, drops instead
// of refusing (the load balancer's health check avoids such nodes).
func TestTCLocalWithoutLocalBackendDrops(t *testing.T) {
	d := tcDataplane(t)
	in := tcpSegment(ap("198.18.12.1:49000"), netip.AddrPortFrom(nodeIP, 30084), tcpSYN, 1, 0, nil, "")
	if ret, out := run(t, d.objs.TC.Tc4Ingress, in); ret != actShot || !bytes.Equal(out, in) {
		t.Errorf("verdict %d, want TC_ACT_SHOT with the packet untouched", int32(ret))
	}
}
