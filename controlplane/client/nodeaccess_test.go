package client

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// TestExecFramesAndStatus round-trips the exec stream's frames and its
// final status as both ends read them.
func TestExecFramesAndStatus(t *testing.T) {
	var buf bytes.Buffer
	for _, f := range []struct {
		stream  byte
		payload string
	}{{StreamStdout, "hi\n"}, {StreamStdin, ""}, {StreamStderr, "oops"}} {
		if err := WriteFrame(&buf, f.stream, []byte(f.payload)); err != nil {
			t.Fatal(err)
		}
		stream, payload, err := ReadFrame(&buf)
		if err != nil || stream != f.stream || string(payload) != f.payload {
			t.Errorf("frame %d %q came back as %d %q (%v)", f.stream, f.payload, stream, payload, err)
		}
	}
	if _, _, err := ReadFrame(bytes.NewReader([]byte{1, 0, 0, 0, 9, 'a'})); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("a cut frame read as %v; want ErrUnexpectedEOF", err)
	}
	if _, _, err := ReadFrame(bytes.NewReader([]byte{1, 0xff, 0, 0, 0})); err == nil {
		t.Error("a frame of 4 GiB was accepted")
	}
	for _, c := range []struct {
		code    int
		err     error
		want    int
		wantErr string
	}{{0, nil, 0, ""}, {3, nil, 3, ""}, {255, nil, 255, ""}, {-1, errors.New("no such file"), -1, "no such file"}} {
		code, err := exitCode(ExecStatus(c.code, c.err))
		if code != c.want || (err == nil) != (c.wantErr == "") || err != nil && err.Error() != c.wantErr {
			t.Errorf("ExecStatus(%d, %v) read back as %d, %v; want %d, %q", c.code, c.err, code, err, c.want, c.wantErr)
		}
	}
}
