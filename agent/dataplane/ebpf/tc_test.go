package ebpf

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/skep-io/skep/agent/dataplane"
	"github.com/skep-io/skep/bpf"
)

var (
	nodeIP = netip.MustParseAddr("198.18.0.1")
	lbIP   = netip.MustParseAddr("198.18.100.1")

	localBE  = netip.MustParseAddrPort("10.244.1.5:8080")
	remoteBE = netip.MustParseAddrPort("10.244.2.7:8080")
)

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

func be(a netip.AddrPort, local bool) dataplane.Backend {
	return dataplane.Backend{Addr: a.Addr(), Port: a.Port(), Local: local, Ready: true}
}

// tcServices are the services the tc tests and the fuzz target program.
func tcServices() map[dataplane.ServiceKey]*dataplane.Service {
	key := func(name string, p dataplane.Protocol) dataplane.ServiceKey {
		return dataplane.ServiceKey{Namespace: "tc", Name: name, Protocol: p}
	}
	return services(
		&dataplane.Service{Key: key("np", dataplane.TCP), ClusterIP: netip.MustParseAddr("10.96.1.1"), Port: 80,
			NodePort: 30080, LoadBalancerIPs: []netip.Addr{lbIP},
			Backends: []dataplane.Backend{be(localBE, true), be(remoteBE, false)}},
		&dataplane.Service{Key: key("np", dataplane.UDP), ClusterIP: netip.MustParseAddr("10.96.1.1"), Port: 80,
			NodePort: 30080, LoadBalancerIPs: []netip.Addr{lbIP},
			Backends: []dataplane.Backend{be(localBE, true), be(remoteBE, false)}},
		&dataplane.Service{Key: key("local", dataplane.TCP), ClusterIP: netip.MustParseAddr("10.96.1.2"), Port: 80,
			NodePort: 30081, ExternalPolicyLocal: true,
			Backends: []dataplane.Backend{be(ap("10.244.1.6:8080"), true), be(ap("10.244.2.8:8080"), false)}},
		&dataplane.Service{Key: key("affinity", dataplane.TCP), ClusterIP: netip.MustParseAddr("10.96.1.3"), Port: 80,
			NodePort: 30082, AffinityTimeout: time.Minute,
			Backends: []dataplane.Backend{be(ap("10.244.1.9:8080"), true), be(ap("10.244.2.9:8080"), false), be(ap("10.244.3.9:8080"), false)}},
		&dataplane.Service{Key: key("local-none", dataplane.TCP), ClusterIP: netip.MustParseAddr("10.96.1.4"), Port: 80,
			NodePort: 30084, ExternalPolicyLocal: true,
			Backends: []dataplane.Backend{be(ap("10.244.2.10:8080"), false)}},
	)
}

// tcDataplane loads the programs (attached nowhere: Program.Run feeds them)
// and programs tcServices.
func tcDataplane(t testing.TB) *Dataplane {
	t.Helper()
	cfg := testConfig(t)
	cfg.NodeIPs = []netip.Addr{nodeIP}
	d := newDataplane(t, cfg)
	if err := d.Sync(t.Context(), tcServices()); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	return d
}

func TestTCNodePortTranslation(t *testing.T) {
	d := tcDataplane(t)
	ingress, egress := d.objs.TC.Tc4Ingress, d.objs.TC.Tc4Egress

	for _, tc := range []struct {
		name     string
		proto    uint8
		frontend netip.AddrPort
		client   netip.Addr
	}{
		{"tcp-nodeport", protoTCP, netip.AddrPortFrom(nodeIP, 30080), netip.MustParseAddr("198.18.5.1")},
		{"udp-nodeport", protoUDP, netip.AddrPortFrom(nodeIP, 30080), netip.MustParseAddr("198.18.5.2")},
		{"tcp-loadbalancer", protoTCP, netip.AddrPortFrom(lbIP, 80), netip.MustParseAddr("198.18.5.3")},
		{"udp-loadbalancer", protoUDP, netip.AddrPortFrom(lbIP, 80), netip.MustParseAddr("198.18.5.4")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			seen := map[netip.AddrPort]int{}
			for sport := uint16(40000); sport < 40064; sport++ {
				client := netip.AddrPortFrom(tc.client, sport)
				in := packet(tc.proto, client, tc.frontend, "hello")
				ret, out := run(t, ingress, in)
				fwd := parseFrame(t, out)
				seen[fwd.dst]++

				var reply []byte
				switch fwd.dst {
				case localBE:
					// A local backend sees the client as it is; its reply
					// leaves through egress.
					if ret != actOK || fwd.src != client {
						t.Fatalf("%v to local backend: verdict %d, tuple %v; want TC_ACT_OK from %v", client, ret, fwd, client)
					}
					ret, reply = run(t, egress, packet(tc.proto, localBE, client, "world"))
				case remoteBE:
					// A remote backend sees the node: its reply comes back
					// to it and is sent on to the client.
					if ret != actRedirect || fwd.src.Addr() != nodeIP {
						t.Fatalf("%v to remote backend: verdict %d, tuple %v; want TC_ACT_REDIRECT from %v", client, ret, fwd, nodeIP)
					}
					ret, reply = run(t, ingress, packet(tc.proto, remoteBE, fwd.src, "world"))
					if ret != actRedirect {
						t.Fatalf("reply of remote backend: verdict %d, want TC_ACT_REDIRECT", ret)
					}
				default:
					t.Fatalf("%v went to %v (verdict %d), which is no backend", client, fwd, ret)
				}
				rev := parseFrame(t, reply)
				if rev.src != tc.frontend || rev.dst != client {
					t.Fatalf("reply translated to %v, want %v -> %v", rev, tc.frontend, client)
				}
				if ret != actOK && ret != actRedirect {
					t.Fatalf("reply verdict %d", ret)
				}

				// The next packet of the flow goes where the first went.
				_, again := run(t, ingress, packet(tc.proto, client, tc.frontend, "again"))
				if next := parseFrame(t, again); next != fwd {
					t.Fatalf("second packet of %v went to %v, first to %v", client, next, fwd)
				}
			}
			if seen[localBE] == 0 || seen[remoteBE] == 0 {
				t.Errorf("64 flows reached %v, want both backends", seen)
			}
		})
	}
}

func TestTCUDPZeroChecksumStaysZero(t *testing.T) {
	d := tcDataplane(t)
	for sport := uint16(41000); sport < 41016; sport++ {
		in := packet(protoUDP, netip.AddrPortFrom(netip.MustParseAddr("198.18.6.1"), sport), netip.AddrPortFrom(nodeIP, 30080), "x")
		in[34+6], in[34+7] = 0, 0
		_, out := run(t, d.objs.TC.Tc4Ingress, in)
		if c := binary.BigEndian.Uint16(out[34+6:]); c != 0 {
			t.Fatalf("UDP without checksum got checksum %#04x", c)
		}
		parseFrame(t, out) // the IP checksum must still be right
	}
}

func TestTCLocalPolicy(t *testing.T) {
	d := tcDataplane(t)
	for sport := uint16(42000); sport < 42032; sport++ {
		client := netip.AddrPortFrom(netip.MustParseAddr("198.18.7.1"), sport)
		ret, out := run(t, d.objs.TC.Tc4Ingress, packet(protoTCP, client, netip.AddrPortFrom(nodeIP, 30081), ""))
		got := parseFrame(t, out)
		want := tuple{protoTCP, client, ap("10.244.1.6:8080")}
		if ret != actOK || got != want {
			t.Fatalf("Local policy: verdict %d, %v; want TC_ACT_OK, %v (local backend, client source kept)", ret, got, want)
		}
	}
	client := ap("198.18.7.1:43000")
	in := packet(protoTCP, client, netip.AddrPortFrom(nodeIP, 30084), "")
	if ret, out := run(t, d.objs.TC.Tc4Ingress, in); ret != actShot || !bytes.Equal(out, in) {
		t.Errorf("Local policy without a local backend: verdict %d, want TC_ACT_SHOT and the packet untouched", ret)
	}
}

func TestTCAffinity(t *testing.T) {
	d := tcDataplane(t)
	frontend := netip.AddrPortFrom(nodeIP, 30082)
	var bound netip.AddrPort
	for sport := uint16(44000); sport < 44032; sport++ {
		_, out := run(t, d.objs.TC.Tc4Ingress, packet(protoTCP, netip.AddrPortFrom(netip.MustParseAddr("198.18.8.1"), sport), frontend, ""))
		got := parseFrame(t, out).dst
		if bound.IsValid() && got != bound {
			t.Fatalf("client with affinity reached %v after %v", got, bound)
		}
		bound = got
	}
	seen := map[netip.AddrPort]bool{}
	for i := byte(2); i < 34; i++ {
		_, out := run(t, d.objs.TC.Tc4Ingress, packet(protoTCP, netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18, 8, i}), 44000), frontend, ""))
		seen[parseFrame(t, out).dst] = true
	}
	if len(seen) < 2 {
		t.Errorf("32 clients all reached %v", seen)
	}

	// Removing the bound backend releases the affinity and its flows.
	svcs := tcServices()
	for _, s := range svcs {
		if s.NodePort == 30082 {
			var rest []dataplane.Backend
			for _, b := range s.Backends {
				if netip.AddrPortFrom(b.Addr, b.Port) != bound {
					rest = append(rest, b)
				}
			}
			s.Backends = rest
		}
	}
	if err := d.Sync(t.Context(), svcs); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	checkNoneName(t, d, bound)
	_, out := run(t, d.objs.TC.Tc4Ingress, packet(protoTCP, ap("198.18.8.1:44000"), frontend, ""))
	if got := parseFrame(t, out).dst; got == bound {
		t.Errorf("an existing flow still reaches removed backend %v", bound)
	}
}

// checkNoneName fails when an affinity or conntrack entry still names a
// backend at addr.
func checkNoneName(t *testing.T, d *Dataplane, addr netip.AddrPort) {
	t.Helper()
	m := d.maps()
	var (
		ak bpf.LB4AffinityKey
		av bpf.LB4AffinityVal
	)
	live := map[uint32]bool{}
	for id := range d.state.backends {
		live[id] = true
	}
	it := m.affinity.Iterate()
	for it.Next(&ak, &av) {
		if !live[av.BackendId] {
			t.Errorf("affinity entry %+v names removed backend %d", ak, av.BackendId)
		}
	}
	var (
		ck bpf.CT4Key
		cv bpf.CT4Entry
	)
	it = m.ct.Iterate()
	for it.Next(&ck, &cv) {
		if !live[cv.BackendId] {
			t.Errorf("conntrack entry %+v names removed backend %d (%v)", ck, cv.BackendId, addr)
		}
	}
}

// nonServiceFrames are packets tc must pass untouched.
func nonServiceFrames() [][]byte {
	client := ap("198.18.9.1:45000")
	arp := make([]byte, 42)
	binary.BigEndian.PutUint16(arp[12:], 0x0806)
	ipv6 := make([]byte, 74)
	binary.BigEndian.PutUint16(ipv6[12:], 0x86dd)
	ipv6[14] = 0x60
	icmp := packet(protoTCP, client, netip.AddrPortFrom(nodeIP, 30080), "")
	icmp[14+9] = 1
	frag := packet(protoUDP, client, netip.AddrPortFrom(nodeIP, 30080), "fragment")
	frag[14+6] = 0x20 // more fragments
	later := packet(protoUDP, client, netip.AddrPortFrom(nodeIP, 30080), "fragment")
	later[14+7] = 0x10 // offset
	short := packet(protoTCP, client, netip.AddrPortFrom(nodeIP, 30080), "")[:14+20+2]
	return [][]byte{
		packet(protoTCP, client, netip.AddrPortFrom(nodeIP, 22), ""),
		packet(protoUDP, client, netip.AddrPortFrom(nodeIP, 53), "q"),
		packet(protoTCP, client, ap("10.96.1.1:80"), ""),           // ClusterIP: not reachable from outside
		packet(protoTCP, client, ap("198.18.0.2:30080"), ""),       // NodePort of another address
		packet(protoTCP, client, netip.AddrPortFrom(lbIP, 81), ""), // LB address, other port
		packet(protoUDP, localBE, client, "a reply of no flow"),
		arp, ipv6, icmp, frag, later, short,
	}
}

func TestTCNonServiceUntouched(t *testing.T) {
	d := tcDataplane(t)
	for i, in := range nonServiceFrames() {
		for _, prog := range []*struct {
			name string
			run  func() (uint32, []byte)
		}{
			{"ingress", func() (uint32, []byte) { return run(t, d.objs.TC.Tc4Ingress, in) }},
			{"egress", func() (uint32, []byte) { return run(t, d.objs.TC.Tc4Egress, in) }},
		} {
			ret, out := prog.run()
			if ret != actUnspec || !bytes.Equal(out, in) {
				t.Errorf("frame %d through %s: verdict %d, changed %v; want TC_ACT_UNSPEC and unchanged", i, prog.name, int32(ret), !bytes.Equal(out, in))
			}
		}
	}
}

// FuzzTCNonService feeds arbitrary frames to both tc programs: whatever is
// not addressed to an external frontend, and is no reply of a flow they
// created, must come out unchanged with TC_ACT_UNSPEC.
func FuzzTCNonService(f *testing.F) {
	for _, fr := range nonServiceFrames() {
		f.Add(fr)
	}
	f.Add(packet(protoTCP, ap("198.18.9.2:45001"), netip.AddrPortFrom(nodeIP, 30080), ""))
	f.Add(packet(protoUDP, ap("198.18.9.3:45002"), netip.AddrPortFrom(lbIP, 80), "x"))
	d := tcDataplane(f)
	frontends := map[[2]any]bool{}
	for _, s := range tcServices() {
		p := protoNumber(s.Key.Protocol)
		frontends[[2]any{p, netip.AddrPortFrom(nodeIP, s.NodePort)}] = true
		for _, a := range s.LoadBalancerIPs {
			frontends[[2]any{p, netip.AddrPortFrom(a, s.Port)}] = true
		}
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		if len(frame) < 14 || len(frame) > 1500 {
			return // the kernel refuses to run these
		}
		tp, ok := frameTuple(frame)
		for _, dir := range []string{"ingress", "egress"} {
			prog := d.objs.TC.Tc4Ingress
			if dir == "egress" {
				prog = d.objs.TC.Tc4Egress
			}
			if ok && (isReply(d, tp) || dir == "ingress" && frontends[[2]any{tp.proto, tp.dst}]) {
				continue
			}
			opts := &ebpf.RunOptions{Data: frame, DataOut: make([]byte, len(frame)+256)}
			ret, err := prog.Run(opts)
			if errors.Is(err, unix.EINVAL) {
				return // the kernel refuses frames it cannot make an skb of (an IP ethertype without an IP header)
			}
			if err != nil {
				t.Fatalf("run %s: %v", prog, err)
			}
			out := opts.DataOut
			if ret != actUnspec || !bytes.Equal(out, frame) {
				t.Fatalf("non-service frame through %s: verdict %d, changed %v\nin  %x\nout %x", dir, int32(ret), !bytes.Equal(out, frame), frame, out)
			}
		}
	})
}

// frameTuple parses frame the way tc.c does.
func frameTuple(b []byte) (tuple, bool) {
	if len(b) < 34 || binary.BigEndian.Uint16(b[12:]) != 0x0800 {
		return tuple{}, false
	}
	ip := b[14:]
	ihl := int(ip[0]&0xf) * 4
	if ip[0]>>4 != 4 || ihl < 20 || binary.BigEndian.Uint16(ip[6:])&0x3fff != 0 {
		return tuple{}, false
	}
	if ip[9] != protoTCP && ip[9] != protoUDP || len(b) < 14+ihl+4 {
		return tuple{}, false
	}
	l4 := b[14+ihl:]
	return tuple{
		proto: ip[9],
		src:   netip.AddrPortFrom(netip.AddrFrom4([4]byte(ip[12:16])), binary.BigEndian.Uint16(l4)),
		dst:   netip.AddrPortFrom(netip.AddrFrom4([4]byte(ip[16:20])), binary.BigEndian.Uint16(l4[2:])),
	}, true
}

// isReply reports whether tp is the reply of a flow in lb4_ct.
func isReply(d *Dataplane, tp tuple) bool {
	key := bpf.CT4Key{
		Saddr: bpf.NativeEndianAddr(tp.src.Addr().As4()),
		Daddr: bpf.NativeEndianAddr(tp.dst.Addr().As4()),
		Sport: bpf.NativeEndianPort(tp.src.Port()),
		Dport: bpf.NativeEndianPort(tp.dst.Port()),
		Proto: tp.proto,
		Dir:   bpf.CTDirReverse,
	}
	var v bpf.CT4Entry
	return d.maps().ct.Lookup(&key, &v) == nil
}
