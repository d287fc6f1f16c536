package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/conversion/queryparams"
	restclient "k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"
	utilexec "k8s.io/client-go/util/exec"
	"k8s.io/streaming/pkg/httpstream"
)

// A pod's logs and commands in its containers, through the API server's
// pods/log and pods/exec, in the protocols kubectl speaks: exec is
// client-go's remotecommand (WebSocket v5, and SPDY/3.1 when the server
// refuses the WebSocket upgrade, as kubectl falls back).

// Logs streams a container's output, as `kubectl logs` asks for it. The
// caller closes the reader.
func (c *HTTP) Logs(ctx context.Context, namespace, pod string, opts *corev1.PodLogOptions) (io.ReadCloser, error) {
	q, err := queryparams.Convert(opts)
	if err != nil {
		return nil, fmt.Errorf("logs of pod %s/%s: %w", namespace, pod, err)
	}
	path := podsPath(namespace, pod) + "/log"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	return c.stream(ctx, http.MethodGet, path, nil, "")
}

// ExecOptions say what to run and where its streams go.
type ExecOptions struct {
	Container string
	Command   []string
	// Stdin, when not nil, is copied to the command's stdin, which is
	// closed at its end. Nil: the command has no stdin.
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// TTY runs the command on a terminal (its stderr is its stdout);
	// Resize, when not nil, gives the terminal's size and each change.
	TTY    bool
	Resize remotecommand.TerminalSizeQueue
}

// Exec runs a command in a container of a pod and returns its exit code.
func (c *HTTP) Exec(ctx context.Context, namespace, pod string, opts ExecOptions) (int, error) {
	if len(opts.Command) == 0 {
		return -1, errors.New("exec: no command")
	}
	q := url.Values{"command": opts.Command}
	if opts.Container != "" {
		q.Set("container", opts.Container)
	}
	set := func(k string, on bool) {
		if on {
			q.Set(k, "true")
		}
	}
	set("stdin", opts.Stdin != nil)
	set("stdout", opts.Stdout != nil)
	set("stderr", opts.Stderr != nil && !opts.TTY)
	set("tty", opts.TTY)
	u, err := url.Parse(c.base + podsPath(namespace, pod) + "/exec?" + q.Encode())
	if err != nil {
		return -1, err
	}
	exec, err := c.executor(u)
	if err != nil {
		return -1, fmt.Errorf("exec in pod %s/%s: %w", namespace, pod, err)
	}
	stream := remotecommand.StreamOptions{Stdin: opts.Stdin, Stdout: opts.Stdout, Tty: opts.TTY, TerminalSizeQueue: opts.Resize}
	if !opts.TTY {
		stream.Stderr = opts.Stderr
	}
	err = exec.StreamWithContext(ctx, stream)
	var exit utilexec.CodeExitError
	switch {
	case err == nil:
		return 0, nil
	case errors.As(err, &exit):
		return exit.Code, nil
	}
	return -1, err
}

// executor speaks WebSocket v5 first and falls back to SPDY, as kubectl.
func (c *HTTP) executor(u *url.URL) (remotecommand.Executor, error) {
	cfg := c.restConfig()
	ws, err := remotecommand.NewWebSocketExecutor(cfg, http.MethodGet, u.String())
	if err != nil {
		return nil, err
	}
	spdy, err := remotecommand.NewSPDYExecutor(cfg, http.MethodPost, u)
	if err != nil {
		return nil, err
	}
	return remotecommand.NewFallbackExecutor(ws, spdy, func(err error) bool {
		return httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)
	})
}

// restConfig is client-go's view of this client: the same server, CA and
// token.
func (c *HTTP) restConfig() *restclient.Config {
	return &restclient.Config{
		Host:            c.base,
		BearerToken:     c.Token(),
		TLSClientConfig: restclient.TLSClientConfig{CAData: c.caPEM},
	}
}
