package main

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestNodeBinaryIsLean lists the packages built into skep, the binary
// every node runs, and fails on those that belong in skep-bench or in
// tests: plotting, LaTeX, PDF and fonts (tens of MB), the benchmarks
// themselves, the testing package and the repository's test helpers
// (packages named ...test).
func TestNodeBinaryIsLean(t *testing.T) {
	cmd := exec.Command("go", "list", "-deps", ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0") // as the Makefile builds it
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	banned := []string{"gonum.org/v1/plot", "codeberg.org/go-latex/", "codeberg.org/go-pdf/", "codeberg.org/go-fonts/",
		"golang.org/x/image/font", "github.com/skep-io/skep/bench/"}
	for _, pkg := range strings.Fields(string(out)) {
		bad := pkg == "testing" || strings.HasPrefix(pkg, "testing/") ||
			strings.HasPrefix(pkg, "github.com/skep-io/skep/") && strings.HasSuffix(pkg, "test")
		for _, b := range banned {
			bad = bad || strings.HasPrefix(pkg, b)
		}
		if bad {
			t.Errorf("skep depends on %s, which nodes should not carry", pkg)
		}
	}
}
