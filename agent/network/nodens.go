package network

import (
	"errors"
	"fmt"
	"os"
	"runtime"

	"github.com/vishvananda/netns"
)

// inNetNS runs f on a fresh OS thread that has entered ns. The thread is
// never handed back to the Go scheduler: the goroutine exits while still
// locked, so the runtime ends the thread and nothing else can run in the
// namespace it borrowed. Use it for what a netlink handle cannot do from
// outside: /proc/sys/net writes and exec of iptables, both of which act on the
// network namespace of the calling thread.
func inNetNS(ns netns.NsHandle, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// No UnlockOSThread, on purpose (see above).
		if err := netns.Set(ns); err != nil {
			errc <- fmt.Errorf("enter node network namespace: %w", err)
			return
		}
		errc <- f()
	}()
	return <-errc
}

// writeSysctl writes value to /proc/sys/<name> (name in slash form, e.g.
// "net/ipv4/ip_forward") in the calling thread's network namespace.
func writeSysctl(name, value string) error {
	path := "/proc/sys/" + name
	if err := os.WriteFile(path, []byte(value), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// sysctlExists reports whether /proc/sys/<name> exists in the calling
// thread's network namespace.
func sysctlExists(name string) (bool, error) {
	_, err := os.Stat("/proc/sys/" + name)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}
