package ebpf

import (
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// inTestNetns runs the rest of the test on this goroutine's thread in a new
// network namespace holding a veth pair; the namespace and the
// interface vanish when the test ends.
func inTestNetns(t *testing.T, ifname string) {
	t.Helper()
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatalf("get netns: %v", err)
	}
	ns, err := netns.New()
	if err != nil {
		orig.Close()
		t.Fatalf("new netns: %v", err)
	}
	t.Cleanup(func() {
		netns.Set(orig)
		ns.Close()
		orig.Close()
		runtime.UnlockOSThread()
	})
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: ifname}, PeerName: ifname + "p"}); err != nil {
		t.Fatalf("add veth interface: %v", err)
	}
}

func TestAttachTCX(t *testing.T) {
	const ifname = "skeptc0"
	inTestNetns(t, ifname)
	cfg := testConfig(t)
	cfg.Interface = ifname
	// Registered after testConfig's, so it runs first, still in the netns.
	t.Cleanup(func() {
		if err := Cleanup(cfg); err != nil {
			t.Errorf("Cleanup: %v", err)
		}
	})
	d := newDataplane(t, cfg)
	ids := pinnedLinkIDs(t, cfg)
	var tcx int
	for _, id := range ids {
		l, err := link.NewFromID(id)
		if err != nil {
			t.Fatalf("link %d: %v", id, err)
		}
		info, _ := l.Info()
		l.Close()
		if info != nil && info.TCX() != nil {
			tcx++
		}
	}
	if tcx != 2 {
		t.Fatalf("found %d tcx links among pinned links %v, want ingress and egress", tcx, ids)
	}
	d.Close()
	d2 := newDataplane(t, cfg)
	if again := pinnedLinkIDs(t, cfg); !slices.Equal(again, ids) {
		t.Errorf("links after restart %v, want the same %v", again, ids)
	}
	if err := d2.Cleanup(t.Context()); err != nil {
		t.Fatalf("Cleanup: %v", err)
	}
	for _, id := range ids {
		if l, err := link.NewFromID(id); err == nil {
			l.Close()
			t.Errorf("link %d survived Cleanup", id)
		}
	}
}

func TestAttachClsactFallback(t *testing.T) {
	const ifname = "skeptc1"
	inTestNetns(t, ifname)
	cfg := testConfig(t)
	cfg.Interface = ifname
	cfg.forceClsact = true
	t.Cleanup(func() { Cleanup(cfg) })
	d := newDataplane(t, cfg)
	lnk, err := netlink.LinkByName(ifname)
	if err != nil {
		t.Fatalf("find %s: %v", ifname, err)
	}
	ours := func() []string {
		var names []string
		for _, parent := range []uint32{netlink.HANDLE_MIN_INGRESS, netlink.HANDLE_MIN_EGRESS} {
			filters, _ := netlink.FilterList(lnk, parent)
			for _, f := range filters {
				if bf, ok := f.(*netlink.BpfFilter); ok && strings.HasPrefix(bf.Name, clsactFilterPrefix) {
					names = append(names, bf.Name)
				}
			}
		}
		return names
	}
	if got := ours(); len(got) != 2 {
		t.Fatalf("cls_bpf filters %v, want ingress and egress", got)
	}
	d.Close()
	newDataplane(t, cfg) // replaces the filters in place
	if got := ours(); len(got) != 2 {
		t.Fatalf("after restart cls_bpf filters %v, want ingress and egress", got)
	}
	if err := Cleanup(cfg); err != nil {
		t.Fatalf("Cleanup: %v", err)
	}
	if got := ours(); len(got) != 0 {
		t.Errorf("filters %v survived Cleanup", got)
	}
	qdiscs, _ := netlink.QdiscList(lnk)
	for _, q := range qdiscs {
		if q.Type() == "clsact" {
			t.Errorf("clsact qdisc survived Cleanup")
		}
	}
}
