package client

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// What the API server proxies to a node's agent, and the formats the
// client, the API server and the agent share: container logs
// (pods/NAME/log), commands in containers (pods/NAME/exec), and image
// import (nodes/NAME/proxy/images).

// ExecProtocol is the protocol a pods/NAME/exec request upgrades its
// HTTP/1.1 connection to (Connection: Upgrade, Upgrade: skep-exec/1;
// the answer is 101 Switching Protocols). The API server passes the
// upgraded connection through to the agent unchanged.
//
// After the upgrade both sides send frames:
//
//	+--------+-----------------------+-------------------+
//	| stream | length (uint32, big-  | payload (length   |
//	| 1 byte | endian, at most 1 MiB)| bytes)            |
//	+--------+-----------------------+-------------------+
//
// Streams: 0 stdin (client to agent; an empty payload closes the
// command's stdin), 1 stdout and 2 stderr (agent to client), 3 status
// (agent to client, last frame): a JSON metav1.Status, Success when the
// command exited 0, Failure with reason NonZeroExitCode and a cause of
// type ExitCode whose message is the code, as Kubernetes' exec error
// channel says it, or Failure with the message of what went wrong.
const ExecProtocol = "skep-exec/1"

// Exec streams.
const (
	StreamStdin  byte = 0
	StreamStdout byte = 1
	StreamStderr byte = 2
	StreamStatus byte = 3
)

// maxFrame bounds a frame's payload.
const maxFrame = 1 << 20

// WriteFrame writes one frame.
func WriteFrame(w io.Writer, stream byte, payload []byte) error {
	if len(payload) > maxFrame {
		return fmt.Errorf("write frame: %d bytes is more than %d", len(payload), maxFrame)
	}
	buf := make([]byte, 5+len(payload))
	buf[0] = stream
	binary.BigEndian.PutUint32(buf[1:5], uint32(len(payload)))
	copy(buf[5:], payload)
	_, err := w.Write(buf)
	return err
}

// ReadFrame reads one frame.
func ReadFrame(r io.Reader) (stream byte, payload []byte, err error) {
	var head [5]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(head[1:])
	if n > maxFrame {
		return 0, nil, fmt.Errorf("read frame: %d bytes is more than %d", n, maxFrame)
	}
	payload = make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		return 0, nil, fmt.Errorf("read frame: %w", io.ErrUnexpectedEOF)
	}
	return head[0], payload, nil
}

// ExecStatus is the status frame's Status for a command that exited with
// code, or failed to run with err.
func ExecStatus(code int, err error) metav1.Status {
	st := metav1.Status{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Status"}}
	switch {
	case err != nil:
		st.Status, st.Reason, st.Message = metav1.StatusFailure, metav1.StatusReasonInternalError, err.Error()
	case code == 0:
		st.Status = metav1.StatusSuccess
	default:
		st.Status, st.Reason = metav1.StatusFailure, "NonZeroExitCode"
		st.Message = fmt.Sprintf("command terminated with non-zero exit code: %d", code)
		st.Details = &metav1.StatusDetails{Causes: []metav1.StatusCause{{Type: "ExitCode", Message: strconv.Itoa(code)}}}
	}
	return st
}

// exitCode reads a status frame's Status.
func exitCode(st metav1.Status) (int, error) {
	if st.Status == metav1.StatusSuccess {
		return 0, nil
	}
	if st.Reason == "NonZeroExitCode" && st.Details != nil {
		for _, c := range st.Details.Causes {
			if c.Type == "ExitCode" {
				if code, err := strconv.Atoi(c.Message); err == nil {
					return code, nil
				}
			}
		}
	}
	return -1, errors.New(st.Message)
}

// LogOptions are the query of pods/NAME/log.
type LogOptions struct {
	Container string
	Follow    bool // until the container exits, or ctx ends
	Previous  bool // the run before the current one
	// TailLines, when not nil, is how many of the last lines to show.
	TailLines *int64
}

// Logs streams a container's output. The caller closes the reader.
func (c *HTTP) Logs(ctx context.Context, namespace, pod string, opts LogOptions) (io.ReadCloser, error) {
	q := url.Values{}
	if opts.Container != "" {
		q.Set("container", opts.Container)
	}
	if opts.Follow {
		q.Set("follow", "true")
	}
	if opts.Previous {
		q.Set("previous", "true")
	}
	if opts.TailLines != nil {
		q.Set("tailLines", strconv.FormatInt(*opts.TailLines, 10))
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
	// closed at its end. Nil: the command's stdin is empty.
	Stdin          io.Reader
	Stdout, Stderr io.Writer
}

// Exec runs a command in a container of a pod and returns its exit code.
// It upgrades an HTTP/1.1 connection to ExecProtocol.
func (c *HTTP) Exec(ctx context.Context, namespace, pod string, opts ExecOptions) (int, error) {
	q := url.Values{}
	if opts.Container != "" {
		q.Set("container", opts.Container)
	}
	for _, arg := range opts.Command {
		q.Add("command", arg)
	}
	q.Set("stdout", "true")
	q.Set("stderr", "true")
	if opts.Stdin != nil {
		q.Set("stdin", "true")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+podsPath(namespace, pod)+"/exec?"+q.Encode(), nil)
	if err != nil {
		return -1, err
	}
	if t := c.Token(); t != "" {
		req.Header.Set("Authorization", "Bearer "+t)
	}
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", ExecProtocol)
	resp, err := c.http1().Do(req)
	if err != nil {
		return -1, fmt.Errorf("exec in pod %s/%s: %w", namespace, pod, err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		defer resp.Body.Close()
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return -1, statusError(resp.StatusCode, data)
	}
	conn, ok := resp.Body.(io.ReadWriteCloser)
	if !ok {
		resp.Body.Close()
		return -1, errors.New("exec: the upgraded connection is not writable")
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	if opts.Stdin != nil {
		go copyStdin(conn, opts.Stdin)
	}
	stdout, stderr := orDiscard(opts.Stdout), orDiscard(opts.Stderr)
	for {
		stream, payload, err := ReadFrame(conn)
		if err != nil {
			if ctx.Err() != nil {
				return -1, ctx.Err()
			}
			return -1, fmt.Errorf("exec in pod %s/%s: the stream ended before the command's exit status: %w", namespace, pod, err)
		}
		switch stream {
		case StreamStdout:
			if _, err := stdout.Write(payload); err != nil {
				return -1, fmt.Errorf("write the command's stdout: %w", err)
			}
		case StreamStderr:
			if _, err := stderr.Write(payload); err != nil {
				return -1, fmt.Errorf("write the command's stderr: %w", err)
			}
		case StreamStatus:
			var st metav1.Status
			if err := json.Unmarshal(payload, &st); err != nil {
				return -1, fmt.Errorf("exec: decode the exit status: %w", err)
			}
			return exitCode(st)
		}
	}
}

// copyStdin sends stdin as frames, and an empty one at its end. It stops
// when the connection closes.
func copyStdin(conn io.Writer, stdin io.Reader) {
	buf := make([]byte, 32<<10)
	for {
		n, err := stdin.Read(buf)
		if n > 0 {
			if WriteFrame(conn, StreamStdin, buf[:n]) != nil {
				return
			}
		}
		if err != nil {
			WriteFrame(conn, StreamStdin, nil)
			return
		}
	}
}

func orDiscard(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}

// http1 is a client that speaks HTTP/1.1 only: an HTTP/2 connection
// cannot be upgraded.
func (c *HTTP) http1() *http.Client {
	tr := c.hc.Transport.(*http.Transport).Clone()
	tr.ForceAttemptHTTP2 = false
	tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	tr.TLSClientConfig.NextProtos = []string{"http/1.1"}
	return &http.Client{Transport: tr}
}

// ImportResult is what an agent answers an image import with.
type ImportResult struct {
	Node   string   `json:"node"`
	Images []string `json:"images"`
}

// ImportImage loads an image archive (OCI layout or docker-archive tar)
// onto a node's containerd, through the API server and the node's agent.
func (c *HTTP) ImportImage(ctx context.Context, node string, archive io.Reader) (ImportResult, error) {
	body, err := c.stream(ctx, http.MethodPost, "/api/v1/nodes/"+url.PathEscape(node)+"/proxy/images", archive, "application/x-tar")
	if err != nil {
		return ImportResult{}, err
	}
	defer body.Close()
	var res ImportResult
	if err := json.NewDecoder(body).Decode(&res); err != nil {
		return ImportResult{}, fmt.Errorf("import image on node %s: decode the answer: %w", node, err)
	}
	return res, nil
}

// stream sends a request with a raw body and returns the answer's body
// when it is a success; an error answer becomes a StatusError.
func (c *HTTP) stream(ctx context.Context, method, path string, body io.Reader, contentType string) (io.ReadCloser, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, err
	}
	if t := c.Token(); t != "" {
		req.Header.Set("Authorization", "Bearer "+t)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, c.base+path, err)
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return nil, statusError(resp.StatusCode, data)
	}
	return resp.Body, nil
}

func podsPath(namespace, pod string) string {
	return "/api/v1/namespaces/" + url.PathEscape(namespace) + "/pods/" + url.PathEscape(pod)
}

// ServingCertificatePath is where an agent, with its node credential,
// asks the API server to sign its serving certificate.
const ServingCertificatePath = "/skep/v1/serving-certificate"

// ServingCertificateRequest carries a request made by
// pki.NewServingRequest.
type ServingCertificateRequest struct {
	CSR string `json:"csr"`
}

// ServingCertificateResponse carries the signed certificate and the CA
// that signed it, which is also the CA of the API server's client
// certificate: the only client the agent serves.
type ServingCertificateResponse struct {
	Certificate string `json:"certificate"`
	CA          string `json:"ca"`
}
