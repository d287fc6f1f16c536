// Package bpf holds skep's eBPF programs (C sources beside this file, built
// by bpf2go into the committed *_bpfel.go/*_bpfel.o) and loads them.
//
// sock.c balances sockets (cgroup connect4, sendmsg4, recvmsg4,
// getpeername4); tc.c balances NodePort and LoadBalancer traffic arriving
// from outside the node. Both share the maps defined in lb.h, pinned by
// name in one directory per node.
package bpf

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"
)

// Go names of the C structs in lb.h, sock.c, pkt4.h and ct4.h. bpf2go
// generates one copy per object; these pick the one callers use.
type (
	LB4Key         = SockLb4Key
	LB4Service     = SockLb4Service
	LB4Backend     = SockLb4Backend
	LB4AffinityKey = SockLb4AffinityKey
	LB4AffinityVal = SockLb4AffinityVal
	LB4SvcName     = SockLb4SvcName
	RevNATKey      = SockSock4RevnatKey
	RevNATVal      = SockSock4RevnatVal
	CT4Key         = TCCt4Key
	CT4Entry       = TCCt4Entry
)

// Flags of LB4Service (slot 0) and LB4Backend, as in lb.h.
const (
	SvcFlagNodePort = 1 << 0 // the NodePort wildcard entry (address 0)
	SvcFlagExternal = 1 << 1 // a LoadBalancer or external IP, answered from outside
	SvcFlagLocal    = 1 << 2 // externalTrafficPolicy Local
	SvcFlagExtIP    = 1 << 3 // with SvcFlagExternal: an external IP, not a LoadBalancer address

	BackendFlagLocal   = 1 << 0 // the backend runs on this node
	BackendFlagServing = 1 << 1 // ready and not terminating
)

// Conntrack directions and flags, as in pkt4.h and ct4.h.
const (
	CTDirForward = 0
	CTDirReverse = 1

	CTFlagRedirect = 1 << 0
)

// ErrIncompatiblePin is returned when a pinned map has another layout than
// the programs expect: state left by a different skep version, which
// Cleanup removes.
var ErrIncompatiblePin = errors.New("pinned map has an incompatible layout")

// Options configure one load of the programs.
type Options struct {
	// PinDir is the bpffs directory whose pinned maps are reused, or where
	// new ones are pinned. It must exist.
	PinDir string
	// ExtIfindex is the external interface: tc sends replies and
	// source-NATed flows out of it.
	ExtIfindex int
	// SNATAddr is the node address remote backends see as the source of
	// NodePort and LoadBalancer traffic.
	SNATAddr netip.Addr
}

// Objects are the programs and maps of one node's dataplane. Sock and TC
// hold separate handles on the same pinned maps.
type Objects struct {
	Sock SockObjects
	TC   TCObjects
}

// Load loads the socket and tc programs into the kernel, reusing the maps
// pinned in opts.PinDir. It fails with an error wrapping
// ErrIncompatiblePin when a pinned map does not fit, and one wrapping
// *ebpf.VerifierError when the kernel rejects a program.
func Load(opts Options) (_ *Objects, err error) {
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("remove memlock rlimit: %w", err)
	}
	if st, err := os.Stat(opts.PinDir); err != nil || !st.IsDir() {
		return nil, fmt.Errorf("pin directory %s: not a directory (is bpffs mounted?)", opts.PinDir)
	}
	collOpts := &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: opts.PinDir}}

	objs := &Objects{}
	// One cleanup for every failure below: Close skips what is not loaded.
	defer func() {
		if err != nil {
			objs.Close()
		}
	}()
	if err := LoadSockObjects(&objs.Sock, collOpts); err != nil {
		return nil, loadError("socket programs", err)
	}
	spec, err := tcSpec(opts)
	if err != nil {
		return nil, err
	}
	if err := spec.LoadAndAssign(&objs.TC, collOpts); err != nil {
		return nil, loadError("tc programs", err)
	}
	return objs, nil
}

// tcSpec is the tc programs' spec with the runtime settings of opts.
func tcSpec(opts Options) (*ebpf.CollectionSpec, error) {
	spec, err := LoadTC()
	if err != nil {
		return nil, fmt.Errorf("read tc program spec: %w", err)
	}
	var snat uint32
	if opts.SNATAddr.Is4() {
		snat = NativeEndianAddr(opts.SNATAddr.As4())
	}
	if err := spec.Variables["ext_ifindex"].Set(uint32(opts.ExtIfindex)); err != nil {
		return nil, fmt.Errorf("set ext_ifindex: %w", err)
	}
	if err := spec.Variables["snat_addr"].Set(snat); err != nil {
		return nil, fmt.Errorf("set snat_addr: %w", err)
	}
	return spec, nil
}

func loadError(what string, err error) error {
	if errors.Is(err, ebpf.ErrMapIncompatible) {
		return fmt.Errorf("load %s: %w: %w", what, ErrIncompatiblePin, err)
	}
	var verr *ebpf.VerifierError
	if errors.As(err, &verr) {
		// %+w: the whole verifier log, where Error has only its last
		// lines, and errors.As still finds it. err's message is its
		// context (which program) followed by verr's summary: keep the
		// context, the log replaces the summary.
		where, ok := strings.CutSuffix(err.Error(), verr.Error())
		if !ok {
			where = ""
		}
		return fmt.Errorf("load %s: %s%+w", what, where, verr)
	}
	return fmt.Errorf("load %s: %w", what, err)
}

// Close releases the programs and map handles; pinned maps stay.
func (o *Objects) Close() error {
	return errors.Join(o.Sock.Close(), o.TC.Close())
}

// NativeEndianAddr returns the IPv4 address b as the uint32 whose memory
// holds b in order, which is how a __be32 field reads on this
// little-endian target.
func NativeEndianAddr(b [4]byte) uint32 {
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}

// AddrFromNative is the inverse of NativeEndianAddr.
func AddrFromNative(v uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(v), byte(v >> 8), byte(v >> 16), byte(v >> 24)})
}

// NativeEndianPort returns port as the uint16 a __be16 field holds.
func NativeEndianPort(port uint16) uint16 { return port<<8 | port>>8 }

// PortFromNative is the inverse of NativeEndianPort.
func PortFromNative(v uint16) uint16 { return v<<8 | v>>8 }

// SockTermKey names a peer (backend address and port) whose connected UDP
// sockets the iterator destroys.
type SockTermKey = SockTermSock4TermKey

// LoadTerminator loads the UDP socket iterator that destroys sockets
// connected to removed backends. Its map is private to the load, not
// pinned. Requires Linux 6.5 (bpf_sock_destroy); may return an error
// wrapping ebpf.ErrNotSupported on older kernels.
func LoadTerminator() (*SockTermObjects, error) {
	objs := &SockTermObjects{}
	if err := LoadSockTermObjects(objs, nil); err != nil {
		return nil, loadError("udp socket terminator", err)
	}
	return objs, nil
}
