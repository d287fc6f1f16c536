package runtime

import (
	"context"
	"fmt"
	"net"
	goruntime "runtime"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// bringUpLoopback sets lo up in the network namespace at nsPath. The pod
// network may do it too; doing it here means every pod has it whatever the
// Network implementation does.
func bringUpLoopback(nsPath string) error {
	ns, err := netns.GetFromPath(nsPath)
	if err != nil {
		return fmt.Errorf("open network namespace %s: %w", nsPath, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return fmt.Errorf("netlink handle in %s: %w", nsPath, err)
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo in %s: %w", nsPath, err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		return fmt.Errorf("set lo up in %s: %w", nsPath, err)
	}
	return nil
}

// dialInNetNS connects to address from inside the network namespace at
// nsPath, the way a process of the pod would. The socket is made on a
// locked OS thread that has entered the namespace, and keeps belonging to it
// after the thread goes back; probes use it so that they work whatever the
// pod network makes reachable from the node.
func dialInNetNS(ctx context.Context, nsPath, network, address string) (net.Conn, error) {
	type result struct {
		conn net.Conn
		err  error
	}
	done := make(chan result, 1)
	go func() {
		goruntime.LockOSThread()
		conn, err, restored := dialFromNS(ctx, nsPath, network, address)
		if restored {
			// Only a thread back in its own namespace may run other
			// goroutines; otherwise it ends with this goroutine.
			goruntime.UnlockOSThread()
		}
		done <- result{conn, err}
	}()
	res := <-done
	return res.conn, res.err
}

func dialFromNS(ctx context.Context, nsPath, network, address string) (conn net.Conn, err error, restored bool) {
	orig, err := netns.Get()
	if err != nil {
		return nil, fmt.Errorf("current network namespace: %w", err), false
	}
	defer orig.Close()
	target, err := netns.GetFromPath(nsPath)
	if err != nil {
		return nil, fmt.Errorf("open network namespace %s: %w", nsPath, err), true
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		return nil, fmt.Errorf("enter network namespace %s: %w", nsPath, err), true
	}
	var d net.Dialer
	conn, err = d.DialContext(ctx, network, address)
	restored = netns.Set(orig) == nil
	return conn, err, restored
}
