package network

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
)

// ErrNoAddress is returned by Setup when every address of the node's pod CIDR
// is taken.
var ErrNoAddress = errors.New("no free address in pod CIDR")

// lastFile remembers the address handed out last, so that allocation goes
// round the range instead of handing a just-released address to the next pod
// while peers may still hold connections (and conntrack entries) to it.
const lastFile = "last"

// ipam is a host-local address allocator that keeps its state on disk so a
// pod keeps its address across agent restarts. Each allocated address is one
// file under dir, named by the address and holding the pod ID. The file is
// the claim: it is made with link(2), which fails when the name exists, so two
// allocators on one directory never hand out one address twice.
//
// ipam is not safe for concurrent use; Network serialises calls.
type ipam struct {
	dir    string
	prefix netip.Prefix
	first  netip.Addr // first address a pod may get
	last   netip.Addr // last address a pod may get
}

// newIPAM opens (creating if needed) the allocator for prefix under dir. The
// network address, the first address (the bridge's) and the broadcast address
// are never handed out.
func newIPAM(dir string, prefix netip.Prefix) (*ipam, error) {
	if !prefix.Addr().Is4() || prefix.Bits() > 30 {
		return nil, fmt.Errorf("pod CIDR %s: want an IPv4 prefix of /30 or larger", prefix)
	}
	prefix = prefix.Masked()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create ipam directory: %w", err)
	}
	return &ipam{
		dir:    dir,
		prefix: prefix,
		first:  prefix.Addr().Next().Next(),
		last:   broadcast(prefix).Prev(),
	}, nil
}

// broadcast returns the last address of an IPv4 prefix.
func broadcast(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3]) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// records returns every allocation as pod ID → address.
func (a *ipam) records() (map[string]netip.Addr, error) {
	entries, err := os.ReadDir(a.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil // removed by Cleanup: nothing allocated
	}
	if err != nil {
		return nil, fmt.Errorf("read ipam directory: %w", err)
	}
	out := make(map[string]netip.Addr, len(entries))
	for _, e := range entries {
		addr, err := netip.ParseAddr(e.Name())
		if err != nil || !a.prefix.Contains(addr) {
			continue // temporary files, lastFile
		}
		b, err := os.ReadFile(filepath.Join(a.dir, e.Name()))
		if errors.Is(err, fs.ErrNotExist) {
			continue // released meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("read ipam record %s: %w", e.Name(), err)
		}
		out[string(b)] = addr
	}
	return out, nil
}

// lookup returns the address recorded for podID, if any.
func (a *ipam) lookup(podID string) (netip.Addr, bool, error) {
	recs, err := a.records()
	if err != nil {
		return netip.Addr{}, false, err
	}
	addr, ok := recs[podID]
	return addr, ok, nil
}

// allocate returns podID's address, claiming a free one when it has none.
// fresh reports whether the address was claimed by this call.
func (a *ipam) allocate(podID string) (addr netip.Addr, fresh bool, err error) {
	if addr, ok, err := a.lookup(podID); err != nil || ok {
		return addr, false, err
	}
	start := a.first
	if b, err := os.ReadFile(filepath.Join(a.dir, lastFile)); err == nil {
		if prev, err := netip.ParseAddr(strings.TrimSpace(string(b))); err == nil && prev.Compare(a.first) >= 0 && prev.Compare(a.last) < 0 {
			start = prev.Next()
		}
	}
	candidate := start
	for {
		claimed, err := a.claim(candidate, podID)
		if err != nil {
			return netip.Addr{}, false, err
		}
		if claimed {
			// Losing the hint only costs round-robin order, so its error is ignored.
			_ = writeFileAtomic(a.dir, lastFile, candidate.String())
			return candidate, true, nil
		}
		if candidate = candidate.Next(); candidate.Compare(a.last) > 0 {
			candidate = a.first
		}
		if candidate == start {
			return netip.Addr{}, false, fmt.Errorf("allocate address for pod %s in %s: %w", podID, a.prefix, ErrNoAddress)
		}
	}
}

// claim records addr for podID. It reports false when addr is already taken.
func (a *ipam) claim(addr netip.Addr, podID string) (bool, error) {
	if err := os.MkdirAll(a.dir, 0o700); err != nil {
		return false, fmt.Errorf("create ipam directory: %w", err)
	}
	tmp, err := writeTemp(a.dir, podID)
	if err != nil {
		return false, err
	}
	defer os.Remove(tmp)
	err = os.Link(tmp, filepath.Join(a.dir, addr.String()))
	if errors.Is(err, fs.ErrExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("claim address %s: %w", addr, err)
	}
	return true, syncDir(a.dir)
}

// release forgets podID's address. Releasing a pod with none is not an error.
func (a *ipam) release(podID string) error {
	addr, ok, err := a.lookup(podID)
	if err != nil || !ok {
		return err
	}
	if err := os.Remove(filepath.Join(a.dir, addr.String())); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("release address %s: %w", addr, err)
	}
	return syncDir(a.dir)
}

// writeTemp writes content to a new hidden file in dir, synced to disk, and
// returns its path.
func writeTemp(dir, content string) (string, error) {
	var suffix [8]byte
	if _, err := rand.Read(suffix[:]); err != nil {
		return "", fmt.Errorf("make temporary name: %w", err)
	}
	path := filepath.Join(dir, ".tmp-"+hex.EncodeToString(suffix[:]))
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", fmt.Errorf("create temporary file: %w", err)
	}
	_, werr := f.WriteString(content)
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		os.Remove(path)
		return "", fmt.Errorf("write temporary file: %w", err)
	}
	return path, nil
}

// writeFileAtomic replaces dir/name with content.
func writeFileAtomic(dir, name, content string) error {
	tmp, err := writeTemp(dir, content)
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("replace %s: %w", name, err)
	}
	return syncDir(dir)
}

// syncDir makes a directory's entries durable, so a claim made before a crash
// is still there after it.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open directory: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory: %w", err)
	}
	return nil
}
