package ebpf

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
)

// Verdicts of tc programs as Program.Run reports them.
const (
	actOK       = 0
	actShot     = 2
	actRedirect = 7
	actUnspec   = 0xffffffff
)

const (
	protoTCP = 6
	protoUDP = 17
)

// packet builds an Ethernet frame carrying IPv4 and TCP or UDP from src to
// dst, with correct checksums.
func packet(proto uint8, src, dst netip.AddrPort, payload string) []byte {
	l4len := 20
	if proto == protoUDP {
		l4len = 8
	}
	b := make([]byte, 14+20+l4len+len(payload))
	copy(b[0:6], []byte{2, 0, 0, 0, 0, 1})
	copy(b[6:12], []byte{2, 0, 0, 0, 0, 2})
	binary.BigEndian.PutUint16(b[12:], 0x0800)
	ip := b[14:34]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(len(b)-14))
	binary.BigEndian.PutUint16(ip[4:], 0x1234)
	ip[8] = 64
	ip[9] = proto
	s, d := src.Addr().As4(), dst.Addr().As4()
	copy(ip[12:16], s[:])
	copy(ip[16:20], d[:])
	binary.BigEndian.PutUint16(ip[10:], checksum(ip, 0))
	l4 := b[34:]
	binary.BigEndian.PutUint16(l4[0:], src.Port())
	binary.BigEndian.PutUint16(l4[2:], dst.Port())
	if proto == protoTCP {
		binary.BigEndian.PutUint32(l4[4:], 1000) // seq
		l4[12] = 5 << 4
		l4[13] = 0x02 // SYN
		binary.BigEndian.PutUint16(l4[14:], 65535)
	} else {
		binary.BigEndian.PutUint16(l4[4:], uint16(len(l4)))
	}
	copy(l4[l4len:], payload)
	binary.BigEndian.PutUint16(l4[l4CsumOff(proto):], l4Checksum(b))
	return b
}

func l4CsumOff(proto uint8) int {
	if proto == protoTCP {
		return 16
	}
	return 6
}

// checksum is the Internet checksum of b, starting from sum.
func checksum(b []byte, sum uint32) uint16 {
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// l4Checksum computes the TCP or UDP checksum of frame b from scratch,
// with the checksum field taken as zero.
func l4Checksum(b []byte) uint16 {
	ip := b[14:34]
	l4 := append([]byte{}, b[34:]...)
	off := l4CsumOff(ip[9])
	l4[off], l4[off+1] = 0, 0
	var sum uint32
	for i := 12; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	sum += uint32(ip[9]) + uint32(len(l4))
	c := checksum(l4, sum)
	if c == 0 && ip[9] == protoUDP {
		c = 0xffff
	}
	return c
}

// tuple is what a test reads back from a frame.
type tuple struct {
	proto    uint8
	src, dst netip.AddrPort
}

func (tp tuple) String() string { return fmt.Sprintf("%d %v -> %v", tp.proto, tp.src, tp.dst) }

// parseFrame reads the tuple of a frame built by packet and checks both of
// its checksums against ones computed here.
func parseFrame(t *testing.T, b []byte) tuple {
	t.Helper()
	ip := b[14:34]
	if got, want := binary.BigEndian.Uint16(ip[10:]), checksumWithZero(ip, 10); got != want {
		t.Errorf("IP checksum %#04x, want %#04x", got, want)
	}
	off := 34 + l4CsumOff(ip[9])
	got := binary.BigEndian.Uint16(b[off:])
	if !(ip[9] == protoUDP && got == 0) {
		if want := l4Checksum(b); got != want {
			t.Errorf("L4 checksum %#04x, want %#04x", got, want)
		}
	}
	return tuple{
		proto: ip[9],
		src:   netip.AddrPortFrom(netip.AddrFrom4([4]byte(ip[12:16])), binary.BigEndian.Uint16(b[34:])),
		dst:   netip.AddrPortFrom(netip.AddrFrom4([4]byte(ip[16:20])), binary.BigEndian.Uint16(b[36:])),
	}
}

func checksumWithZero(b []byte, off int) uint16 {
	c := append([]byte{}, b...)
	c[off], c[off+1] = 0, 0
	return checksum(c, 0)
}

// run passes frame through prog and returns the verdict and the frame
// after it.
func run(t testing.TB, prog *ebpf.Program, frame []byte) (uint32, []byte) {
	t.Helper()
	opts := &ebpf.RunOptions{Data: frame, DataOut: make([]byte, len(frame)+256)}
	ret, err := prog.Run(opts)
	if err != nil {
		t.Fatalf("run %s: %v", prog, err)
	}
	return ret, opts.DataOut
}
