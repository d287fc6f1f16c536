package kubectlstreams

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// testCp: kubectl cp of a directory tree into a pod and back out; the
// files' checksums, computed here and by sha256sum in the pod, agree.
func (s *suite) testCp(t *testing.T) {
	t.Parallel()
	s.waitReady(t, "tools")
	src := filepath.Join(t.TempDir(), "tree")
	files := map[string][]byte{
		"a.txt":                    []byte("first file\n"),
		"empty":                    nil,
		"sub/b.bin":                random(t, 3<<20+17),
		"sub/deeper/c.txt":         []byte(strings.Repeat("line\n", 1000)),
		"sub/deeper/deepest/d.bin": random(t, 64<<10),
		"other/e with space.txt":   []byte("spaces in a name\n"),
	}
	want := map[string]string{}
	for name, data := range files {
		p := filepath.Join(src, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(data)
		want[name] = hex.EncodeToString(sum[:])
	}

	s.must(t, "cp", src, "tools:/tmp/tree")
	out := s.must(t, "exec", "tools", "--", "sh", "-c", "cd /tmp/tree && find . -type f | sort | while read f; do sha256sum \"$f\"; done")
	inPod := map[string]string{}
	for _, l := range lines(out) {
		sum, name, ok := strings.Cut(l, "  ")
		if !ok {
			t.Fatalf("sha256sum in the pod printed %q", l)
		}
		inPod[strings.TrimPrefix(name, "./")] = sum
	}
	if !maps.Equal(inPod, want) {
		t.Errorf("after kubectl cp into the pod, sha256sum there:\n%s\nwant:\n%s", show(inPod), show(want))
	}

	dst := filepath.Join(t.TempDir(), "back")
	s.must(t, "cp", "tools:/tmp/tree", dst)
	back := map[string]string{}
	err := filepath.WalkDir(dst, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dst, p)
		sum := sha256.Sum256(data)
		back[rel] = hex.EncodeToString(sum[:])
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(back, want) {
		t.Errorf("after kubectl cp out of the pod, the files:\n%s\nwant:\n%s", show(back), show(want))
	}
}

func random(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// show lists name → checksum, sorted by name.
func show(m map[string]string) string {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(m)) {
		b.WriteString("  " + m[k] + "  " + k + "\n")
	}
	return b.String()
}
