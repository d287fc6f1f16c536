// Package ebpf is the eBPF implementation of dataplane.Dataplane: socket
// load balancing on the node's cgroup for ClusterIP (and NodePort from the
// node itself), and a tc program on the external interface for NodePort and
// LoadBalancer traffic from outside.
//
// Maps and links are pinned under <PinRoot>/<NodeName>/, so the programs
// keep balancing while the agent is down, and a new Dataplane on the same
// directory takes the state over without a gap.
package ebpf

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/skep-io/skep/agent/dataplane"
	"github.com/skep-io/skep/bpf"
)

// DefaultPinRoot is where nodes' pin directories live unless Config says
// otherwise.
const DefaultPinRoot = "/sys/fs/bpf/skep"

// Config says where the dataplane of one node lives.
type Config struct {
	// NodeName names the pin directory <PinRoot>/<NodeName>/.
	NodeName string
	// PinRoot is a directory on bpffs; DefaultPinRoot when empty.
	PinRoot string
	// CgroupPath is the cgroup2 directory the socket programs attach to,
	// e.g. /sys/fs/cgroup/unified/skep/<node>. Every process below it is
	// balanced.
	CgroupPath string
	// Interface is the node's external interface, where the tc program
	// balances NodePort and LoadBalancer traffic from outside; "" attaches
	// no tc program.
	Interface string
	// NodeIPs are the addresses of this node: NodePorts answer on them. The
	// first is the source address of traffic NATed to remote backends.
	NodeIPs []netip.Addr
	// ServiceCIDRs are the ranges ClusterIPs are given from (the server's
	// --service-cidr). They are made unreachable in the node's routing
	// table, so a connect to a cluster IP not programmed (yet) fails at
	// once instead of hanging; unset: no such route.
	ServiceCIDRs []netip.Prefix
	// Logger receives one line per event; slog.Default() when nil.
	Logger *slog.Logger

	// forceClsact attaches tc through clsact even where tcx works, so
	// that tests cover the fallback.
	forceClsact bool
}

func (c Config) pinDir() string {
	root := c.PinRoot
	if root == "" {
		root = DefaultPinRoot
	}
	return filepath.Join(root, c.NodeName)
}

func (c Config) logger() *slog.Logger {
	if c.Logger == nil {
		return slog.Default()
	}
	return c.Logger
}

// Dataplane programs services into the pinned eBPF maps of one node.
type Dataplane struct {
	cfg  Config
	log  *slog.Logger
	objs *bpf.Objects
	// links are the attachments this Dataplane holds handles on; they are
	// pinned (or, for clsact, owned by the qdisc) and outlive Close.
	links []attachment
	// term destroys connected UDP sockets of removed backends; nil where
	// the kernel lacks bpf_sock_destroy.
	term *udpTerminator

	mu sync.Mutex
	// state mirrors what the maps hold; Sync diffs against it.
	state *mapState
	// resync is set when a write failed: the next Sync reloads state from
	// the maps before diffing.
	resync bool
	// synced is set by the first successful Sync; until then, and while
	// resync is set, a Sync is a full one.
	synced bool
	// desired is the desired state as the last Sync gave it and Applys
	// changed it: what a full plan plans when a partial one cannot
	// decide alone.
	desired map[dataplane.ServiceKey]*dataplane.Service
	// index finds each service's entries in state, and counts the claims
	// on each frontend, so that Apply touches only the changed services;
	// built by a full sync, kept by Apply, nil when state moved without it.
	index *stateIndex
	// lastWrites counts the map writes of the last Sync or Apply.
	lastWrites int

	metrics *metrics
}

var _ dataplane.Dataplane = (*Dataplane)(nil)

// New loads the programs, reusing the maps and links pinned for this node,
// attaches what is not attached yet and reads the maps back so that the
// first Sync writes only differences. A link found pinned is switched to
// the newly loaded program in place, so balancing never stops.
//
// New fails when bpffs is not mounted under PinRoot, or with an error
// wrapping bpf.ErrIncompatiblePin when the pins were made by an
// incompatible version (Cleanup removes them).
func New(ctx context.Context, cfg Config) (*Dataplane, error) {
	if cfg.NodeName == "" {
		return nil, errors.New("new ebpf dataplane: empty node name")
	}
	if cfg.CgroupPath == "" {
		return nil, errors.New("new ebpf dataplane: empty cgroup path")
	}
	log := cfg.logger().With("node", cfg.NodeName)
	dir := cfg.pinDir()
	if err := checkBPFFS(filepath.Dir(dir)); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create pin directory: %w", err)
	}

	opts := bpf.Options{PinDir: dir}
	var ifindex int
	if cfg.Interface != "" {
		iface, err := net.InterfaceByName(cfg.Interface)
		if err != nil {
			return nil, fmt.Errorf("find external interface: %w", err)
		}
		ifindex = iface.Index
		opts.ExtIfindex = ifindex
	}
	for _, a := range cfg.NodeIPs {
		if a.Is4() {
			opts.SNATAddr = a
			break
		}
	}
	objs, err := bpf.Load(opts)
	if err != nil {
		return nil, fmt.Errorf("new ebpf dataplane: %w", err)
	}
	d := &Dataplane{cfg: cfg, log: log, objs: objs}
	d.metrics = newMetrics(d)
	if err := d.writeNodeIPs(); err != nil {
		d.Close()
		return nil, err
	}
	if err := d.attachSock(); err != nil {
		d.Close()
		return nil, err
	}
	if cfg.Interface != "" {
		if err := d.attachTC(ifindex); err != nil {
			d.Close()
			return nil, err
		}
	}
	// After the socket programs: from here on they translate every
	// programmed cluster IP before the kernel looks up this route.
	if err := ensureServiceRoutes(cfg.ServiceCIDRs); err != nil {
		d.Close()
		return nil, err
	}
	if d.term, err = newUDPTerminator(); err != nil {
		log.Warn("connected UDP sockets of removed backends will not be terminated", "error", err)
	}
	st, err := loadMapState(d.maps())
	if err != nil {
		d.Close()
		return nil, err
	}
	d.state = st
	// A connection counted while an earlier run removed its backend can
	// leave a count behind; an id handed out again must start from zero.
	if err := dropConnections(d.maps().conns, func(id uint32) bool {
		_, ok := st.backends[id]
		return !ok
	}); err != nil {
		log.Warn("drop connection counters of removed backends", "error", err)
	}
	log.Info("ebpf dataplane ready", "pin_dir", dir, "cgroup", cfg.CgroupPath,
		"interface", cfg.Interface, "services", len(st.names), "backends", len(st.backends))
	return d, nil
}

// maps are the maps Sync writes.
func (d *Dataplane) maps() lbMaps {
	return lbMaps{
		services: d.objs.Sock.Lb4Services,
		backends: d.objs.Sock.Lb4Backends,
		names:    d.objs.Sock.Lb4SvcNames,
		affinity: d.objs.Sock.Lb4Affinity,
		ct:       d.objs.TC.Lb4Ct,
		conns:    d.objs.Sock.Lb4BeConns,
	}
}

// writeNodeIPs makes lb4_nodeips hold exactly the configured addresses.
func (d *Dataplane) writeNodeIPs() error {
	m := d.objs.Sock.Lb4Nodeips
	want := map[uint32]bool{}
	for _, a := range d.cfg.NodeIPs {
		if a.Is4() {
			want[bpf.NativeEndianAddr(a.As4())] = true
		}
	}
	var (
		k     uint32
		v     uint8
		stale []uint32
	)
	it := m.Iterate()
	for it.Next(&k, &v) {
		if !want[k] {
			stale = append(stale, k)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read node addresses: %w", err)
	}
	for _, k := range stale {
		if err := m.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete node address: %w", err)
		}
	}
	for k := range want {
		if err := m.Put(k, uint8(1)); err != nil {
			return fmt.Errorf("write node address: %w", err)
		}
	}
	return nil
}

// Close releases this process's handles. Programs stay attached and maps
// stay pinned, so services keep answering.
func (d *Dataplane) Close() error {
	var errs []error
	for _, l := range d.links {
		errs = append(errs, l.Close())
	}
	d.links = nil
	if d.term != nil {
		errs = append(errs, d.term.Close())
		d.term = nil
	}
	if d.objs != nil {
		errs = append(errs, d.objs.Close())
		d.objs = nil
	}
	return errors.Join(errs...)
}

// Cleanup detaches the programs and removes every pin of this node, then
// closes d.
func (d *Dataplane) Cleanup(ctx context.Context) error {
	err := d.Close()
	return errors.Join(err, Cleanup(d.cfg))
}

// checkBPFFS fails unless dir (or its nearest existing parent) is on bpffs.
func checkBPFFS(dir string) error {
	for p := dir; ; p = filepath.Dir(p) {
		var st unix.Statfs_t
		err := unix.Statfs(p, &st)
		if errors.Is(err, os.ErrNotExist) && p != "/" {
			continue
		}
		if err != nil {
			return fmt.Errorf("check bpffs at %s: %w", p, err)
		}
		if st.Type != unix.BPF_FS_MAGIC {
			return fmt.Errorf("%s is not on bpffs: mount it with `mount -t bpf bpf /sys/fs/bpf`", dir)
		}
		return nil
	}
}
