package node

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/cri-streaming/pkg/streaming/remotecommand"
	utilexec "k8s.io/utils/exec"

	"github.com/skep-io/skep/agent/runtime"
)

// streamer runs what cri-streaming's exec, attach and port-forward
// servers ask for in one pod, on the node's runtime.
type streamer struct {
	rt  *runtime.Runtime
	log *slog.Logger
	// noStdin: the client asked for no stdin. cri-streaming's WebSocket
	// path hands over a stream for stdin even then, which the runtime
	// must not take for one (attach refuses a stdin the container lacks).
	noStdin bool
}

func (ep *endpoint) streamer(rt *runtime.Runtime, pod *corev1.Pod) *streamer {
	return &streamer{rt: rt, log: ep.log.With("pod", pod.Namespace+"/"+pod.Name)}
}

// stdin is in, or nil when the client asked for none.
func (s *streamer) stdin(in io.Reader) io.Reader {
	if s.noStdin {
		return nil
	}
	return in
}

// ExecInContainer runs cmd; a non-zero exit code comes back as a
// utilexec.ExitError, which ServeExec sends as kubelet does (a
// NonZeroExitCode Status with the code as its cause).
func (s *streamer) ExecInContainer(ctx context.Context, _ string, uid string, container string, cmd []string, in io.Reader, out, errOut io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize, _ time.Duration) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sio := runtime.ExecIO{Stdin: s.stdin(in), TTY: tty, Resize: runtimeSizes(ctx, resize)}
	// Output no one can receive any more means the client is gone: end the
	// command rather than leave it blocked on a full pipe.
	if out != nil {
		sio.Stdout = &cancelOnError{w: out, cancel: cancel}
	}
	if errOut != nil {
		sio.Stderr = &cancelOnError{w: errOut, cancel: cancel}
	}
	code, err := s.rt.ExecWithIO(ctx, types.UID(uid), container, cmd, sio)
	log := s.log.With("container", container, "command", cmd, "tty", tty)
	if err != nil {
		log.Info("exec failed", "err", err)
		return err
	}
	log.Info("exec", "exitCode", code)
	if code != 0 {
		return utilexec.CodeExitError{Err: fmt.Errorf("command '%s' exited with %d", strings.Join(cmd, " "), code), Code: code}
	}
	return nil
}

// AttachContainer attaches to the container's own streams.
func (s *streamer) AttachContainer(ctx context.Context, _ string, uid string, container string, in io.Reader, out, errOut io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	return s.rt.Attach(ctx, types.UID(uid), container, s.stdin(in), out, errOut, tty, runtimeSizes(ctx, resize))
}

// PortForward copies between stream and port on the pod's loopback.
func (s *streamer) PortForward(ctx context.Context, _ string, uid string, port int32, stream io.ReadWriteCloser) error {
	return s.rt.PortForward(ctx, types.UID(uid), port, stream)
}

// runtimeSizes passes the client's terminal sizes on in the runtime's
// type until ctx ends; nil for nil (no terminal).
func runtimeSizes(ctx context.Context, in <-chan remotecommand.TerminalSize) <-chan runtime.TerminalSize {
	if in == nil {
		return nil
	}
	out := make(chan runtime.TerminalSize)
	go func() {
		defer close(out)
		for {
			select {
			case size, ok := <-in:
				if !ok {
					return
				}
				select {
				case out <- runtime.TerminalSize(size):
				case <-ctx.Done():
					return
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}

// cancelOnError calls cancel when a write fails.
type cancelOnError struct {
	w      io.Writer
	cancel context.CancelFunc
}

func (c *cancelOnError) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	if err != nil {
		c.cancel()
	}
	return n, err
}

// watchUpgrade returns w and r for a handler that upgrades the
// connection, with r's context ending when the upgraded connection does:
// when the client (or the API server proxying for it) goes away, or the
// idle timeout closes it. net/http stops watching a connection once it is
// hijacked, and cri-streaming runs the command with the request's
// context, so without this an exec'd process would outlive its client.
// done, called when the handler returns, ends the context and closes the
// connection: cri-streaming leaves it open when the client never created
// its streams.
func watchUpgrade(w http.ResponseWriter, r *http.Request) (_ http.ResponseWriter, _ *http.Request, done func()) {
	ctx, cancel := context.WithCancel(r.Context())
	u := &upgradeWatcher{ResponseWriter: w, gone: cancel}
	return u, r.WithContext(ctx), func() {
		cancel()
		u.mu.Lock()
		defer u.mu.Unlock()
		if u.conn != nil {
			u.conn.Close()
		}
	}
}

type upgradeWatcher struct {
	http.ResponseWriter
	gone context.CancelFunc

	// WebSocket upgrades hijack on a goroutine of their own.
	mu   sync.Mutex
	conn net.Conn // once hijacked
}

// upgradeWatcher has no Unwrap on purpose: cri-streaming's WebSocket
// paths unwrap the writer they are given (httpresponse.GetOriginal) and
// would hijack around the watch.

// Hijack hands out the connection with reads that end the request's
// context on the first error. As with net/http's, the connection is read
// through the returned reader: the bytes net/http had buffered, then the
// watched connection.
func (u *upgradeWatcher) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, rw, err := http.NewResponseController(u.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	wc := &watchedConn{Conn: conn, gone: u.gone}
	u.mu.Lock()
	u.conn = wc
	u.mu.Unlock()
	buffered, _ := rw.Reader.Peek(rw.Reader.Buffered())
	r := io.MultiReader(bytes.NewReader(bytes.Clone(buffered)), wc)
	return wc, bufio.NewReadWriter(bufio.NewReader(r), rw.Writer), nil
}

// watchedConn calls gone when a read fails or the connection is closed.
type watchedConn struct {
	net.Conn
	gone     context.CancelFunc
	goneOnce sync.Once
}

func (c *watchedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil {
		c.goneOnce.Do(c.gone)
	}
	return n, err
}

func (c *watchedConn) Close() error {
	c.goneOnce.Do(c.gone)
	return c.Conn.Close()
}
