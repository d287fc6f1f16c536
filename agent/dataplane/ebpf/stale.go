package ebpf

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"syscall"

	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/skep-io/skep/bpf"
)

// udpTerminator destroys connected UDP sockets whose peer is a removed
// backend, in every network namespace of the processes socket LB serves.
// Connected UDP sockets were pointed at a backend once, at connect(); with
// no connection state to expire, they would otherwise send to the removed
// backend for as long as the application keeps them.
type udpTerminator struct {
	objs *bpf.SockTermObjects
	iter *link.Iter
}

// newUDPTerminator loads and attaches the socket iterator. Requires Linux
// 6.5 (bpf_sock_destroy).
func newUDPTerminator() (*udpTerminator, error) {
	objs, err := bpf.LoadTerminator()
	if err != nil {
		return nil, err
	}
	iter, err := link.AttachIter(link.IterOptions{Program: objs.Sock4TerminateUdp})
	if err != nil {
		objs.Close()
		return nil, fmt.Errorf("attach udp socket iterator: %w", err)
	}
	return &udpTerminator{objs: objs, iter: iter}, nil
}

func (u *udpTerminator) Close() error {
	return errors.Join(u.iter.Close(), u.objs.Close())
}

// terminate destroys the connected UDP sockets to peers held by processes
// under cgroupPath.
func (u *udpTerminator) terminate(ctx context.Context, cgroupPath string, peers []bpf.SockTermKey) error {
	if len(peers) == 0 {
		return nil
	}
	m := u.objs.Sock4Term
	ones := make([]uint8, len(peers))
	for i := range ones {
		ones[i] = 1
	}
	if err := writeBatch(m, peers, ones); err != nil {
		return fmt.Errorf("write sockets to terminate: %w", err)
	}
	defer deleteBatch(m, peers)

	namespaces, err := netnsOfCgroup(cgroupPath)
	if err != nil {
		return err
	}
	defer func() {
		for _, f := range namespaces {
			f.Close()
		}
	}()
	return u.runIn(ctx, namespaces)
}

// runIn runs the iterator once inside each network namespace: a UDP
// iterator walks the sockets of the namespace it is opened in.
func (u *udpTerminator) runIn(ctx context.Context, namespaces []*os.File) error {
	runtime.LockOSThread()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("open own netns: %w", err)
	}
	defer orig.Close()
	var errs []error
	for _, ns := range namespaces {
		if ctx.Err() != nil {
			errs = append(errs, ctx.Err())
			break
		}
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
			errs = append(errs, fmt.Errorf("enter netns %s: %w", ns.Name(), err))
			continue
		}
		if err := u.runOnce(); err != nil {
			errs = append(errs, fmt.Errorf("iterate udp sockets of %s: %w", ns.Name(), err))
		}
	}
	if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
		// The thread stays locked and dies with this goroutine rather than
		// run other goroutines in a foreign namespace.
		return fmt.Errorf("return to own netns: %w", err)
	}
	runtime.UnlockOSThread()
	return errors.Join(errs...)
}

func (u *udpTerminator) runOnce() error {
	r, err := u.iter.Open()
	if err != nil {
		return err
	}
	defer r.Close()
	_, err = io.Copy(io.Discard, r)
	return err
}

// netnsOfCgroup opens the network namespaces of all processes in the
// cgroup tree at path, each once.
func netnsOfCgroup(path string) ([]*os.File, error) {
	seen := map[uint64]bool{}
	var out []*os.File
	err := filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // a cgroup removed while we walk
			}
			return err
		}
		if d.IsDir() || d.Name() != "cgroup.procs" {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return nil
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			nsPath := "/proc/" + sc.Text() + "/ns/net"
			st, err := os.Stat(nsPath)
			if err != nil {
				continue // the process exited
			}
			ino := st.Sys().(*syscall.Stat_t).Ino
			if seen[ino] {
				continue
			}
			ns, err := os.Open(nsPath)
			if err != nil {
				continue
			}
			seen[ino] = true
			out = append(out, ns)
		}
		return nil
	})
	if err != nil {
		for _, f := range out {
			f.Close()
		}
		return nil, fmt.Errorf("list network namespaces of cgroup %s: %w", path, err)
	}
	return out, nil
}

// stalePeers lists UDP backends, removed or no longer serving, that no
// serving backend shares an address and port with: connected sockets to
// them must be moved to a backend that is.
func stalePeers(removed map[uint32]bpf.LB4Backend, remaining map[uint32]bpf.LB4Backend) []bpf.SockTermKey {
	udp := false
	for _, b := range removed {
		udp = udp || b.Proto == protoNumber("UDP")
	}
	if !udp {
		return nil // the common case costs nothing, whatever remains
	}
	live := map[bpf.SockTermKey]bool{}
	for _, b := range remaining {
		if b.Proto == protoNumber("UDP") && b.Flags&bpf.BackendFlagServing != 0 {
			live[bpf.SockTermKey{Address: b.Address, Port: b.Port}] = true
		}
	}
	var out []bpf.SockTermKey
	for _, b := range removed {
		k := bpf.SockTermKey{Address: b.Address, Port: b.Port}
		if b.Proto == protoNumber("UDP") && !live[k] {
			live[k] = true // once
			out = append(out, k)
		}
	}
	return out
}
