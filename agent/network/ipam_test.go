package network

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
)

func TestIPAMAllocateReleaseAndPersist(t *testing.T) {
	dir := t.TempDir()
	prefix := netip.MustParsePrefix("10.244.7.0/29") // pods get .2 to .6
	a, err := newIPAM(dir, prefix)
	if err != nil {
		t.Fatal(err)
	}

	got := map[string]netip.Addr{}
	for i := range 5 {
		pod := fmt.Sprintf("pod-%d", i)
		addr, fresh, err := a.allocate(pod)
		if err != nil {
			t.Fatalf("allocate(%s): %v", pod, err)
		}
		if !fresh {
			t.Errorf("allocate(%s): fresh = false for a new pod", pod)
		}
		want := netip.MustParseAddr(fmt.Sprintf("10.244.7.%d", i+2))
		if addr != want {
			t.Errorf("allocate(%s) = %s, want %s", pod, addr, want)
		}
		got[pod] = addr
	}

	if _, _, err := a.allocate("pod-extra"); !errors.Is(err, ErrNoAddress) {
		t.Fatalf("allocate on a full /29: err = %v, want ErrNoAddress", err)
	}

	again, fresh, err := a.allocate("pod-3")
	if err != nil || fresh || again != got["pod-3"] {
		t.Errorf("allocate(pod-3) again = %s, fresh %v, %v; want %s, false, nil", again, fresh, err, got["pod-3"])
	}

	// A new allocator on the same directory is an agent restart.
	b, err := newIPAM(dir, prefix)
	if err != nil {
		t.Fatal(err)
	}
	for pod, want := range got {
		addr, ok, err := b.lookup(pod)
		if err != nil || !ok || addr != want {
			t.Errorf("after restart lookup(%s) = %s, %v, %v; want %s", pod, addr, ok, err, want)
		}
	}

	if err := b.release("pod-1"); err != nil {
		t.Fatalf("release(pod-1): %v", err)
	}
	if err := b.release("pod-1"); err != nil {
		t.Fatalf("release(pod-1) twice: %v", err)
	}
	addr, _, err := b.allocate("pod-new")
	if err != nil || addr != got["pod-1"] {
		t.Errorf("allocate after release = %s, %v; want the freed %s", addr, err, got["pod-1"])
	}

	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name()[0] == '.' {
			t.Errorf("temporary file %s left in %s", e.Name(), dir)
		}
	}
}

func TestIPAMRoundRobin(t *testing.T) {
	a, err := newIPAM(t.TempDir(), netip.MustParsePrefix("10.244.8.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	first, _, err := a.allocate("a")
	if err != nil {
		t.Fatal(err)
	}
	if err := a.release("a"); err != nil {
		t.Fatal(err)
	}
	next, _, err := a.allocate("b")
	if err != nil {
		t.Fatal(err)
	}
	if next == first {
		t.Errorf("allocate right after release handed out %s again; want the next address", first)
	}
	if want := first.Next(); next != want {
		t.Errorf("allocate(b) = %s, want %s", next, want)
	}
}

func TestIPAMIgnoresForeignFiles(t *testing.T) {
	dir := t.TempDir()
	prefix := netip.MustParsePrefix("10.244.9.0/24")
	for name, content := range map[string]string{
		".tmp-123":   "half-written",
		lastFile:     "10.244.9.17",
		"10.9.9.9":   "outside the prefix",
		"not-an-ip":  "x",
		"10.244.9.5": "pod-x",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	a, err := newIPAM(dir, prefix)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := a.records()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]netip.Addr{"pod-x": netip.MustParseAddr("10.244.9.5")}
	if fmt.Sprint(recs) != fmt.Sprint(want) {
		t.Errorf("records() = %v, want %v", recs, want)
	}
	addr, _, err := a.allocate("pod-y")
	if err != nil || addr != netip.MustParseAddr("10.244.9.18") {
		t.Errorf("allocate after last=.17 = %s, %v; want 10.244.9.18", addr, err)
	}
}

func TestNewIPAMRejectsTinyOrV6Prefixes(t *testing.T) {
	for _, p := range []string{"10.244.0.0/31", "10.244.0.0/32", "fd00::/64"} {
		if _, err := newIPAM(t.TempDir(), netip.MustParsePrefix(p)); err == nil {
			t.Errorf("newIPAM(%s) succeeded; want an error", p)
		}
	}
}

func TestHostVethName(t *testing.T) {
	a, b := HostVethName("default/web-1"), HostVethName("default/web-2")
	if a == b {
		t.Errorf("two pods share veth name %s", a)
	}
	if a != HostVethName("default/web-1") {
		t.Errorf("HostVethName is not deterministic")
	}
	if len(a) != 12 || a[:4] != "veth" {
		t.Errorf("HostVethName = %q, want veth + 8 hex digits", a)
	}
}
