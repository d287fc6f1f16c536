package ebpf

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/skep-io/skep/bpf"
)

// attachment is a handle on an attached program; closing it leaves the
// program attached (pinned links, clsact filters).
type attachment = io.Closer

// Pins of links in the node's pin directory. Maps are pinned beside them
// under their C names.
const (
	linkPinPrefix = "link_"
	pinTCIngress  = linkPinPrefix + "tc_ingress"
	pinTCEgress   = linkPinPrefix + "tc_egress"
)

// clsact filters carry this name prefix (and the node name) so that Cleanup
// finds its own among others'.
const clsactFilterPrefix = "skep_lb4_"

// clsactPriority is the filter priority skep's cls_bpf filters use.
const clsactPriority = 0x5e

type sockAttach struct {
	pin    string
	attach ebpf.AttachType
	prog   func(*bpf.Objects) *ebpf.Program
}

var sockAttaches = []sockAttach{
	{linkPinPrefix + "connect4", ebpf.AttachCGroupInet4Connect, func(o *bpf.Objects) *ebpf.Program { return o.Sock.Sock4Connect }},
	{linkPinPrefix + "sendmsg4", ebpf.AttachCGroupUDP4Sendmsg, func(o *bpf.Objects) *ebpf.Program { return o.Sock.Sock4Sendmsg }},
	{linkPinPrefix + "recvmsg4", ebpf.AttachCGroupUDP4Recvmsg, func(o *bpf.Objects) *ebpf.Program { return o.Sock.Sock4Recvmsg }},
	{linkPinPrefix + "getpeername4", ebpf.AttachCgroupInet4GetPeername, func(o *bpf.Objects) *ebpf.Program { return o.Sock.Sock4Getpeername }},
}

// attachSock attaches the socket programs to the configured cgroup through
// pinned bpf_links, or switches links pinned by an earlier run to the
// programs just loaded.
func (d *Dataplane) attachSock() error {
	st, err := os.Stat(d.cfg.CgroupPath)
	if err != nil {
		return fmt.Errorf("open cgroup: %w", err)
	}
	cgroupID := st.Sys().(*syscall.Stat_t).Ino
	for _, a := range sockAttaches {
		path := filepath.Join(d.cfg.pinDir(), a.pin)
		prog := a.prog(d.objs)
		l, err := reusePinnedLink(path, prog, func(info *link.Info) bool {
			cg := info.Cgroup()
			return cg != nil && cg.CgroupId == cgroupID
		})
		if err != nil {
			return err
		}
		if l == nil {
			l, err = link.AttachCgroup(link.CgroupOptions{Path: d.cfg.CgroupPath, Attach: a.attach, Program: prog})
			if err != nil {
				return fmt.Errorf("attach %s to cgroup %s: %w", a.pin, d.cfg.CgroupPath, err)
			}
			if err := l.Pin(path); err != nil {
				l.Close()
				return fmt.Errorf("pin link to %s: %w", path, err)
			}
		}
		d.links = append(d.links, l)
	}
	return nil
}

// reusePinnedLink loads the link pinned at path and, when matches says it is
// attached where it should be, points it at prog: the kernel swaps programs
// atomically, so no connection misses balancing. A link attached elsewhere
// is detached and removed. It returns nil when there is nothing to reuse.
func reusePinnedLink(path string, prog *ebpf.Program, matches func(*link.Info) bool) (link.Link, error) {
	l, err := link.LoadPinnedLink(path, nil)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("load pinned link %s: %w", path, err)
	}
	info, err := l.Info()
	if err == nil && matches(info) {
		if err := l.Update(prog); err != nil {
			l.Close()
			return nil, fmt.Errorf("update pinned link %s: %w", path, err)
		}
		return l, nil
	}
	// Detached (its cgroup or interface went away) or attached elsewhere.
	_ = l.Detach()
	if err := l.Unpin(); err != nil {
		l.Close()
		return nil, fmt.Errorf("unpin stale link %s: %w", path, err)
	}
	l.Close()
	return nil, nil
}

// attachTC attaches the tc programs to the external interface: tcx links,
// pinned, where the kernel has tcx, and clsact with cls_bpf filters
// otherwise.
func (d *Dataplane) attachTC(ifindex int) error {
	if d.cfg.forceClsact {
		return d.attachClsact(ifindex)
	}
	for _, a := range []struct {
		pin    string
		attach ebpf.AttachType
		prog   *ebpf.Program
	}{
		{pinTCIngress, ebpf.AttachTCXIngress, d.objs.TC.Tc4Ingress},
		{pinTCEgress, ebpf.AttachTCXEgress, d.objs.TC.Tc4Egress},
	} {
		path := filepath.Join(d.cfg.pinDir(), a.pin)
		l, err := reusePinnedLink(path, a.prog, func(info *link.Info) bool {
			tcx := info.TCX()
			return tcx != nil && int(tcx.Ifindex) == ifindex
		})
		if err != nil {
			return err
		}
		if l == nil {
			l, err = link.AttachTCX(link.TCXOptions{Interface: ifindex, Program: a.prog, Attach: a.attach})
			if errors.Is(err, link.ErrNotSupported) {
				d.log.Info("tcx not supported, attaching with clsact", "interface", d.cfg.Interface)
				return d.attachClsact(ifindex)
			}
			if err != nil {
				return fmt.Errorf("attach tcx to %s: %w", d.cfg.Interface, err)
			}
			if err := l.Pin(path); err != nil {
				l.Close()
				return fmt.Errorf("pin link to %s: %w", path, err)
			}
		}
		d.links = append(d.links, l)
	}
	return nil
}

// attachClsact adds a clsact qdisc (if missing) and replaces skep's
// cls_bpf filters on it; a filter replace is atomic, so a restarted agent
// swaps programs without a gap as with tcx.
func (d *Dataplane) attachClsact(ifindex int) error {
	qdisc := &netlink.GenericQdisc{
		QdiscAttrs: netlink.QdiscAttrs{
			LinkIndex: ifindex,
			Handle:    netlink.MakeHandle(0xffff, 0),
			Parent:    netlink.HANDLE_CLSACT,
		},
		QdiscType: "clsact",
	}
	if err := netlink.QdiscAdd(qdisc); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("add clsact qdisc to %s: %w", d.cfg.Interface, err)
	}
	for _, f := range []struct {
		parent uint32
		dir    string
		prog   *ebpf.Program
	}{
		{netlink.HANDLE_MIN_INGRESS, "ingress", d.objs.TC.Tc4Ingress},
		{netlink.HANDLE_MIN_EGRESS, "egress", d.objs.TC.Tc4Egress},
	} {
		filter := &netlink.BpfFilter{
			FilterAttrs: netlink.FilterAttrs{
				LinkIndex: ifindex,
				Parent:    f.parent,
				Handle:    1,
				Protocol:  unix.ETH_P_ALL,
				Priority:  clsactPriority,
			},
			Fd:           f.prog.FD(),
			Name:         clsactFilterName(d.cfg.NodeName, f.dir),
			DirectAction: true,
		}
		if err := netlink.FilterReplace(filter); err != nil {
			return fmt.Errorf("add cls_bpf %s filter to %s: %w", f.dir, d.cfg.Interface, err)
		}
	}
	return nil
}

func clsactFilterName(node, dir string) string {
	return clsactFilterPrefix + dir + "_" + node
}

// Cleanup removes every program, link, pin and map the dataplane of
// cfg.NodeName ever made, whether or not a Dataplane is open: links are
// detached (also from processes still holding them), pins removed, and the
// maps freed once no program uses them.
func Cleanup(cfg Config) error {
	var errs []error
	dir := cfg.pinDir()
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("read pin directory: %w", err))
	}
	for _, e := range entries {
		path := filepath.Join(dir, e.Name())
		if strings.HasPrefix(e.Name(), linkPinPrefix) {
			if l, err := link.LoadPinnedLink(path, nil); err == nil {
				if err := l.Detach(); err != nil && !errors.Is(err, link.ErrNotSupported) {
					errs = append(errs, fmt.Errorf("detach link %s: %w", path, err))
				}
				l.Close()
			}
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove pin: %w", err))
		}
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("remove pin directory: %w", err))
	}
	// The root is shared by nodes; it goes only when the last one went.
	_ = os.Remove(filepath.Dir(dir))
	if err := removeServiceRoutes(cfg.ServiceCIDRs); err != nil {
		errs = append(errs, err)
	}
	if cfg.Interface != "" {
		if err := removeClsactFilters(cfg); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// removeClsactFilters deletes the cls_bpf filters of this node from the
// external interface; the clsact qdisc goes with them when nothing else
// uses it.
func removeClsactFilters(cfg Config) error {
	lnk, err := netlink.LinkByName(cfg.Interface)
	if err != nil {
		var notFound netlink.LinkNotFoundError
		if errors.As(err, &notFound) {
			return nil
		}
		return fmt.Errorf("find external interface: %w", err)
	}
	remaining := 0
	for _, parent := range []uint32{netlink.HANDLE_MIN_INGRESS, netlink.HANDLE_MIN_EGRESS} {
		filters, err := netlink.FilterList(lnk, parent)
		if err != nil {
			// No clsact qdisc: nothing of ours there.
			continue
		}
		for _, f := range filters {
			bf, ok := f.(*netlink.BpfFilter)
			if !ok || !strings.HasPrefix(bf.Name, clsactFilterPrefix) || !strings.HasSuffix(bf.Name, "_"+cfg.NodeName) {
				remaining++
				continue
			}
			if err := netlink.FilterDel(bf); err != nil {
				return fmt.Errorf("delete cls_bpf filter %s: %w", bf.Name, err)
			}
		}
	}
	if remaining > 0 {
		return nil
	}
	qdiscs, err := netlink.QdiscList(lnk)
	if err != nil {
		return fmt.Errorf("list qdiscs of %s: %w", cfg.Interface, err)
	}
	for _, q := range qdiscs {
		if q.Type() == "clsact" {
			if err := netlink.QdiscDel(q); err != nil {
				return fmt.Errorf("delete clsact qdisc of %s: %w", cfg.Interface, err)
			}
		}
	}
	return nil
}
