package client

// The agent's side of skep's own exec framing, until the agent serves
// the Kubernetes streaming protocols (it goes then).

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strconv"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

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

