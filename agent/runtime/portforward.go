package runtime

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"

	"k8s.io/apimachinery/pkg/types"
)

// PortForward connects to port on the pod's loopback, from inside the
// pod's network namespace (so a server bound to 127.0.0.1 in the pod is
// reachable, as with kubelet and containerd's CRI), and copies between
// that connection and stream until the server closes its side or ctx
// ends. The client closing its side (EOF on stream) half-closes the
// connection: the server still answers what it was sent.
func (r *Runtime) PortForward(ctx context.Context, uid types.UID, port int32, stream io.ReadWriteCloser) error {
	if port < 1 || port > 65535 {
		return fmt.Errorf("port forward to pod %s: port %d: must be between 1 and 65535", uid, port)
	}
	nsPath, err := r.podNetNS(uid)
	if err != nil {
		return fmt.Errorf("port forward to pod %s: %w", uid, err)
	}
	p := strconv.Itoa(int(port))
	// IPv4 first, then IPv6, as containerd's CRI tries them.
	conn, err := dialInNetNS(ctx, nsPath, "tcp4", net.JoinHostPort("127.0.0.1", p))
	if err != nil {
		var err6 error
		if conn, err6 = dialInNetNS(ctx, nsPath, "tcp6", net.JoinHostPort("::1", p)); err6 != nil {
			return fmt.Errorf("port forward to pod %s: connect to port %d in the pod: %w", uid, port, err)
		}
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	go func() {
		io.Copy(conn, stream)
		// The client sent all it will: let the server see the end.
		if tc, ok := conn.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
	}()
	_, err = io.Copy(stream, conn)
	// The server is done. The copy from the client ends when the
	// connection (closed here) or stream (closed by the caller) does.
	conn.Close()
	if err != nil && !errors.Is(err, net.ErrClosed) && ctx.Err() == nil {
		return fmt.Errorf("port forward to pod %s port %d: %w", uid, port, err)
	}
	return nil
}

// podNetNS is the path of the pod's network namespace: its sandbox's.
func (r *Runtime) podNetNS(uid types.UID) (string, error) {
	r.mu.Lock()
	pw := r.pods[uid]
	r.mu.Unlock()
	if pw == nil {
		return "", fmt.Errorf("pod %s: %w", uid, ErrNotFound)
	}
	pw.mu.Lock()
	pid := pw.sandbox.pid
	pw.mu.Unlock()
	if pid == 0 {
		return "", fmt.Errorf("pod %s has no sandbox running", uid)
	}
	return fmt.Sprintf("/proc/%d/ns/net", pid), nil
}
