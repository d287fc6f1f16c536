package bpf

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// pinDir makes a directory on bpffs for one test's pinned maps.
func pinDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("/sys/fs/bpf", "skep-bpf-test-")
	if err != nil {
		t.Fatalf("make pin directory (needs root and bpffs at /sys/fs/bpf, see make deps): %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// openFDs counts this process's open file descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(fds)
}

// TestLoadErrorKeepsVerifierError: a program the verifier rejects, loaded
// from a collection as Load does, gives an error that errors.As finds the
// *ebpf.VerifierError in, and whose message names the program and carries
// the whole log, not just its last lines.
func TestLoadErrorKeepsVerifierError(t *testing.T) {
	spec := &ebpf.CollectionSpec{Programs: map[string]*ebpf.ProgramSpec{
		// Exit without setting R0: the verifier refuses ("R0 !read_ok").
		"bad_exit": {
			Name:         "bad_exit",
			Type:         ebpf.SchedCLS,
			License:      "MIT",
			Instructions: asm.Instructions{asm.Mov.Imm(asm.R2, 1), asm.Mov.Imm(asm.R3, 2), asm.Return()},
		},
	}}
	var objs struct {
		Prog *ebpf.Program `ebpf:"bad_exit"`
	}
	err := spec.LoadAndAssign(&objs, nil)
	var want *ebpf.VerifierError
	if !errors.As(err, &want) {
		if err == nil {
			objs.Prog.Close()
		}
		t.Fatalf("load a program that exits without setting R0: %v, want a verifier error (needs root)", err)
	}
	err = loadError("tc programs", err)

	var got *ebpf.VerifierError
	if !errors.As(err, &got) {
		t.Fatalf("loadError(verifier error) = %v: errors.As finds no *ebpf.VerifierError", err)
	}
	msg := err.Error()
	if !strings.HasPrefix(msg, "load tc programs: ") {
		t.Errorf("message %q does not say what failed to load", msg)
	}
	if !strings.Contains(msg, "program bad_exit: ") {
		t.Errorf("message %q does not name the rejected program", msg)
	}
	if len(want.Log) < 2 {
		t.Fatalf("verifier log has %d lines, want at least 2 to tell the whole log from its summary", len(want.Log))
	}
	for _, line := range want.Log {
		if !strings.Contains(msg, line) {
			t.Errorf("message lacks verifier log line %q:\n%s", line, msg)
		}
	}
}

// TestLoadFailureClosesEverything: when the tc programs fail to load (here
// on a pinned lb4_ct of another layout), the socket programs and maps
// loaded before them are closed, and the error says why.
func TestLoadFailureClosesEverything(t *testing.T) {
	dir := pinDir(t)
	ct, err := ebpf.NewMapWithOptions(&ebpf.MapSpec{
		Name: "lb4_ct", Type: ebpf.Hash, KeySize: 4, ValueSize: 4, MaxEntries: 1, Pinning: ebpf.PinByName,
	}, ebpf.MapOptions{PinPath: dir})
	if err != nil {
		t.Fatalf("pin an lb4_ct of another layout: %v", err)
	}
	ct.Close()

	before := openFDs(t)
	objs, err := Load(Options{PinDir: dir})
	if err == nil {
		objs.Close()
		t.Fatal("Load over an incompatible pinned lb4_ct succeeded")
	}
	if !errors.Is(err, ErrIncompatiblePin) {
		t.Errorf("Load: %v, want an error wrapping ErrIncompatiblePin", err)
	}
	if after := openFDs(t); after != before {
		t.Errorf("open file descriptors: %d before a failed Load, %d after", before, after)
	}
}
