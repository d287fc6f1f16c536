package images

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// readLayout reads an OCI layout tarball into name → contents.
func readLayout(t *testing.T, file string) map[string][]byte {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	files := map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return files
		}
		if err != nil {
			t.Fatalf("read %s: %v", file, err)
		}
		if hdr.Typeflag != tar.TypeReg {
			continue
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatalf("read %s in %s: %v", hdr.Name, file, err)
		}
		files[hdr.Name] = data
	}
}

// layerEntries lists a gzipped layer's entries: path → symlink target ("" for
// files and directories) and the first bytes of regular files.
func layerEntries(t *testing.T, layer []byte) (map[string]string, map[string][]byte) {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(layer))
	if err != nil {
		t.Fatalf("gunzip layer: %v", err)
	}
	links, heads := map[string]string{}, map[string][]byte{}
	tr := tar.NewReader(zr)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return links, heads
		}
		if err != nil {
			t.Fatalf("read layer: %v", err)
		}
		links["/"+path.Clean(hdr.Name)] = hdr.Linkname
		if hdr.Typeflag == tar.TypeReg {
			head := make([]byte, 4)
			io.ReadFull(tr, head)
			heads["/"+path.Clean(hdr.Name)] = head
		}
	}
}

func TestBuild(t *testing.T) {
	tars, err := Build(t.Context(), t.TempDir())
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	tests := []struct {
		ref        string
		entrypoint string
		executable string   // an ELF file the image must hold
		symlinks   []string // applets that must link to busybox
	}{
		{ref: Pause, entrypoint: "/pause", executable: "/pause"},
		{ref: Echo, entrypoint: "/echo", executable: "/echo"},
		{ref: Toolbox, entrypoint: "/bin/sh", executable: "/bin/busybox",
			symlinks: []string{"/bin/sh", "/bin/wget", "/bin/nc", "/bin/nslookup", "/bin/cat", "/bin/sleep", "/bin/ls", "/bin/echo", "/bin/httpd"}},
	}
	if len(tars) != len(tests) {
		t.Errorf("Build returned %d images, want %d: %v", len(tars), len(tests), tars)
	}
	for _, tt := range tests {
		t.Run(tt.ref, func(t *testing.T) {
			file, ok := tars[tt.ref]
			if !ok {
				t.Fatalf("no tarball for %s in %v", tt.ref, tars)
			}
			files := readLayout(t, file)
			blob := func(d ocispec.Descriptor) []byte {
				t.Helper()
				data, ok := files[path.Join("blobs", d.Digest.Algorithm().String(), d.Digest.Encoded())]
				if !ok {
					t.Fatalf("blob %s missing", d.Digest)
				}
				if got := digest.FromBytes(data); got != d.Digest || int64(len(data)) != d.Size {
					t.Fatalf("blob %s: digest %s size %d, want size %d", d.Digest, got, len(data), d.Size)
				}
				return data
			}
			decode := func(data []byte, v any) {
				t.Helper()
				if err := json.Unmarshal(data, v); err != nil {
					t.Fatalf("decode %s: %v", data, err)
				}
			}

			var layout ocispec.ImageLayout
			decode(files["oci-layout"], &layout)
			if layout.Version != ocispec.ImageLayoutVersion {
				t.Errorf("oci-layout version %q, want %q", layout.Version, ocispec.ImageLayoutVersion)
			}
			var index ocispec.Index
			decode(files["index.json"], &index)
			if len(index.Manifests) != 1 {
				t.Fatalf("index has %d manifests, want 1", len(index.Manifests))
			}
			m := index.Manifests[0]
			if got, want := m.Annotations["io.containerd.image.name"], FullName(tt.ref); got != want {
				t.Errorf("io.containerd.image.name = %q, want %q", got, want)
			}
			if got := m.Annotations[ocispec.AnnotationRefName]; got != "latest" {
				t.Errorf("%s = %q, want latest", ocispec.AnnotationRefName, got)
			}
			var manifest ocispec.Manifest
			decode(blob(m), &manifest)
			var config ocispec.Image
			decode(blob(manifest.Config), &config)
			if len(config.Config.Entrypoint) != 1 || config.Config.Entrypoint[0] != tt.entrypoint {
				t.Errorf("entrypoint %v, want [%s]", config.Config.Entrypoint, tt.entrypoint)
			}
			if len(manifest.Layers) != 1 || len(config.RootFS.DiffIDs) != 1 {
				t.Fatalf("%d layers and %d diff IDs, want 1 and 1", len(manifest.Layers), len(config.RootFS.DiffIDs))
			}
			layer := blob(manifest.Layers[0])
			links, heads := layerEntries(t, layer)
			if string(heads[tt.executable]) != "\x7fELF" {
				t.Errorf("%s is not an ELF file in the layer (starts %q)", tt.executable, heads[tt.executable])
			}
			for _, l := range tt.symlinks {
				if links[l] != "busybox" {
					t.Errorf("%s links to %q, want busybox", l, links[l])
				}
			}
		})
	}
}
