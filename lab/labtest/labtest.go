// Package labtest has what a test needs to run on a lab cluster: build the
// skep binary, bring a lab up with its teardown registered, and check that
// the teardown left nothing behind.
package labtest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/skep-io/skep/lab"
)

// BuildSkep builds cmd/skep into dir (from the module that holds the
// current directory) and returns the binary's path. Call it from TestMain.
func BuildSkep(dir string) (string, error) {
	bin := filepath.Join(dir, "skep")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/skep-io/skep/cmd/skep")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build cmd/skep: %w\n%s", err, out)
	}
	return bin, nil
}

// BuildImages builds the test images (OCI tarballs from this repository's
// own sources, test/images) into dir, for Config.ImagesDir. It runs the go
// command rather than importing test/images, which lab code must not.
func BuildImages(dir string) error {
	cmd := exec.Command("go", "run", "github.com/skep-io/skep/test/images/build", "-out", dir)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build the test images: %w\n%s", err, out)
	}
	return nil
}

// Name makes a lab name unique to this test process, so that labs of
// tests running at the same time on one machine never meet.
func Name(prefix string) string {
	return fmt.Sprintf("%s%d", prefix, os.Getpid()%100000)
}

// Start brings a lab up and registers its teardown with t.Cleanup: Down,
// then a check that nothing of the lab is left. When the test failed, the
// end of every log of the lab goes to the test's output first. cfg.Dir
// defaults to /tmp/skep-lab-<name>: short, since containerd's socket path
// below it must stay under 108 bytes.
func Start(t testing.TB, cfg lab.Config) *lab.Lab {
	t.Helper()
	if cfg.Dir == "" {
		cfg.Dir = filepath.Join(os.TempDir(), "skep-lab-"+cfg.Name)
	}
	if cfg.Progress == nil {
		cfg.Progress = writer{t}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	l, err := lab.Up(ctx, cfg)
	if err != nil {
		t.Fatalf("lab up %s: %v", cfg.Name, err)
	}
	t.Cleanup(func() { Teardown(t, l) })
	return l
}

// Teardown is Start's cleanup: logs when the test failed, Down, and the
// check for leftovers.
func Teardown(t testing.TB, l *lab.Lab) {
	t.Helper()
	if t.Failed() {
		DumpLogs(t, l)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := l.Down(ctx); err != nil {
		t.Errorf("lab down %s: %v", l.Name(), err)
	}
	if left := l.Leftovers(); len(left) > 0 {
		t.Errorf("lab down %s left behind:\n  %s", l.Name(), strings.Join(left, "\n  "))
	}
}

// DumpLogs writes the end of the server's and every agent's log to the
// test's output.
func DumpLogs(t testing.TB, l *lab.Lab) {
	t.Helper()
	for _, n := range append([]string{"server"}, l.Nodes()...) {
		data, err := os.ReadFile(l.LogPath(n))
		if err != nil {
			continue
		}
		lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
		if len(lines) > 40 {
			lines = lines[len(lines)-40:]
		}
		t.Logf("--- end of %s's log %s:\n%s", n, l.LogPath(n), strings.Join(lines, "\n"))
	}
}

// writer sends progress lines to the test's log.
type writer struct{ t testing.TB }

func (w writer) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// Main is the TestMain of a package whose tests run labs: it builds the
// skep binary and the test images once into a temporary directory, hands
// their paths to set, runs the tests, removes the directory and exits
// with the tests' code.
func Main(m *testing.M, prefix string, set func(skepBinary, imagesDir string)) {
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := func() int {
		defer os.RemoveAll(dir)
		skep, err := BuildSkep(dir)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		images := filepath.Join(dir, "images")
		if err := BuildImages(images); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		set(skep, images)
		return m.Run()
	}()
	os.Exit(code)
}
