package lab

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// DefaultImagesDir is where `make images` writes the test images for the
// skep binary bin: _out/images of the repository bin was built in
// (bin/skep → ../_out/images), or else of the current directory. Both
// `skep lab up` and the benchmarks look there, so that one `make images`
// serves both.
func DefaultImagesDir(bin string) (string, error) {
	candidates := []string{filepath.Join(filepath.Dir(filepath.Dir(bin)), "_out", "images")}
	if wd, err := os.Getwd(); err == nil {
		candidates = append(candidates, filepath.Join(wd, "_out", "images"))
	}
	for _, d := range candidates {
		if fi, err := os.Stat(d); err == nil && fi.IsDir() {
			return d, nil
		}
	}
	return "", fmt.Errorf("no test images at %s; build them with `make images`", strings.Join(candidates, " or "))
}
