package containerlog

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestWriterRecords(t *testing.T) {
	var out bytes.Buffer
	w := NewWriter(&out)
	at := time.Date(2026, 12, 2, 17, 0, 0, 123456789, time.FixedZone("CET", 3600))
	w.now = func() time.Time { return at }
	w.Write(Stdout, []byte("one\ntwo\npart"))
	w.Write(Stderr, []byte("\n"))
	w.Write(Stdout, []byte("ial\n"))
	long := strings.Repeat("y", MaxLine+10)
	w.Write(Stdout, []byte(long+"\n"))
	ts := "2026-12-02T16:00:00.123456789Z"
	want := ts + " stdout F one\n" +
		ts + " stdout F two\n" +
		ts + " stdout P part\n" +
		ts + " stderr F \n" +
		ts + " stdout F ial\n" +
		ts + " stdout P " + long[:MaxLine] + "\n" +
		ts + " stdout F " + long[MaxLine:] + "\n"
	if out.String() != want {
		t.Errorf("records:\n%.400q\nwant\n%.400q", out.String(), want)
	}
}

func TestCopyEndsWithItsSource(t *testing.T) {
	var out bytes.Buffer
	w := NewWriter(&out)
	if err := w.Copy(Stderr, strings.NewReader("a\nb")); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != 2 || !strings.HasSuffix(lines[0], " stderr F a") || !strings.HasSuffix(lines[1], " stderr P b") {
		t.Errorf("records %q, want a whole line and a partial one on stderr", lines)
	}
}
