// Package containerlog writes a container's output in the CRI log format
// kubelet reads, one line per record:
//
//	2026-12-02T17:00:00.123456789Z stdout F a whole line
//	2026-12-02T17:00:00.123456789Z stderr P part of a longer line
//
// F ends a line; P is a piece of a line that goes on in the next record of
// the same stream. The writer runs as a logging process of containerd's
// shim (see Driver), so that a container's output keeps reaching its log
// while the agent is down or restarting.
package containerlog

import (
	"bytes"
	"io"
	"sync"
	"time"
)

// Streams, as the CRI log format names them.
const (
	Stdout = "stdout"
	Stderr = "stderr"
)

// MaxLine is the longest record written: a longer line is split into P
// records of at most this size, as containerd's CRI plugin does (16 KiB).
const MaxLine = 16 * 1024

// Writer writes CRI log records to one file from several streams. Its
// methods may be called concurrently.
type Writer struct {
	mu  sync.Mutex
	w   io.Writer
	buf []byte
	now func() time.Time
}

// NewWriter returns a Writer appending to w.
func NewWriter(w io.Writer) *Writer {
	return &Writer{w: w, now: time.Now}
}

// Copy writes what src yields as stream's records until src ends. Output
// is written as soon as it is read: a piece without a newline becomes a P
// record at once rather than waiting for the rest of its line, so that a
// shell's prompt reaches an attached terminal.
func (w *Writer) Copy(stream string, src io.Reader) error {
	buf := make([]byte, MaxLine)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if werr := w.Write(stream, buf[:n]); werr != nil {
				return werr
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// Write writes p as stream's records, all with the same timestamp, in one
// write to the file.
func (w *Writer) Write(stream string, p []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	ts := w.now().UTC().Format(time.RFC3339Nano)
	out := w.buf[:0]
	for len(p) > 0 {
		line, tag := p, "P"
		if i := bytes.IndexByte(p, '\n'); i >= 0 {
			line, tag = p[:i], "F"
		}
		if len(line) > MaxLine {
			line, tag = line[:MaxLine], "P"
		}
		out = append(out, ts...)
		out = append(out, ' ')
		out = append(out, stream...)
		out = append(out, ' ')
		out = append(out, tag...)
		out = append(out, ' ')
		out = append(out, line...)
		out = append(out, '\n')
		p = p[len(line):]
		if tag == "F" {
			p = p[1:]
		}
	}
	w.buf = out
	_, err := w.w.Write(out)
	return err
}
