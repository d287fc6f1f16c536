package images

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	_ "crypto/sha256" // registers sha256 for go-digest
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path"
	"runtime"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// epoch is the modification time of every file and the creation time of every
// image, so that the same sources give the same digests.
var epoch = time.Unix(0, 0).UTC()

// entry is one file, directory or symlink of an image's only layer.
type entry struct {
	path string // absolute, inside the image
	mode int64  // permission bits
	dir  bool
	link string // symlink target; empty for files and directories
	data []byte // file contents
}

// image is what one OCI image of this package is made of.
type image struct {
	name       string   // full name, as containerd stores it: docker.io/skep/echo:latest
	tag        string   // the ref.name annotation of OCI layouts: latest
	entrypoint []string // the config's Entrypoint
	env        []string
	files      []entry
}

// writeLayer returns the gzipped tar of files, the digest of the
// uncompressed tar (the config's diff ID) and the tar's own descriptor.
func writeLayer(files []entry) ([]byte, digest.Digest, error) {
	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	for _, f := range files {
		hdr := &tar.Header{
			Name:    f.path[1:],
			Mode:    f.mode,
			ModTime: epoch,
			Format:  tar.FormatPAX,
		}
		switch {
		case f.dir:
			hdr.Typeflag = tar.TypeDir
			hdr.Name += "/"
		case f.link != "":
			hdr.Typeflag = tar.TypeSymlink
			hdr.Linkname = f.link
		default:
			hdr.Typeflag = tar.TypeReg
			hdr.Size = int64(len(f.data))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, "", fmt.Errorf("write tar header of %s: %w", f.path, err)
		}
		if hdr.Typeflag == tar.TypeReg {
			if _, err := tw.Write(f.data); err != nil {
				return nil, "", fmt.Errorf("write %s: %w", f.path, err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, "", fmt.Errorf("close layer tar: %w", err)
	}
	diffID := digest.FromBytes(raw.Bytes())

	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	if _, err := zw.Write(raw.Bytes()); err != nil {
		return nil, "", fmt.Errorf("compress layer: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, "", fmt.Errorf("compress layer: %w", err)
	}
	return gz.Bytes(), diffID, nil
}

// blob is one content-addressed file of an OCI layout.
type blob struct {
	desc ocispec.Descriptor
	data []byte
}

func newBlob(mediaType string, data []byte) blob {
	return blob{
		desc: ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(data), Size: int64(len(data))},
		data: data,
	}
}

func jsonBlob(mediaType string, v any) (blob, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return blob{}, fmt.Errorf("encode %s: %w", mediaType, err)
	}
	return newBlob(mediaType, data), nil
}

// writeLayout writes img to w as a tar of an OCI image layout: oci-layout,
// index.json and blobs/sha256/*. The index names the manifest both the OCI
// way (ref.name: the tag) and the containerd way (io.containerd.image.name:
// the full name), so that `ctr import`, the Go client's Import and other OCI
// tools all find the name.
func writeLayout(w io.Writer, img image) error {
	layer, diffID, err := writeLayer(img.files)
	if err != nil {
		return err
	}
	layerBlob := newBlob(ocispec.MediaTypeImageLayerGzip, layer)

	created := epoch
	config, err := jsonBlob(ocispec.MediaTypeImageConfig, ocispec.Image{
		Created:  &created,
		Platform: ocispec.Platform{Architecture: runtime.GOARCH, OS: "linux"},
		Config: ocispec.ImageConfig{
			Entrypoint: img.entrypoint,
			Env:        img.env,
			WorkingDir: "/",
		},
		RootFS: ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{diffID}},
		History: []ocispec.History{{
			Created:   &created,
			CreatedBy: "skep test/images",
		}},
	})
	if err != nil {
		return err
	}

	manifest, err := jsonBlob(ocispec.MediaTypeImageManifest, ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    config.desc,
		Layers:    []ocispec.Descriptor{layerBlob.desc},
	})
	if err != nil {
		return err
	}
	manifestDesc := manifest.desc
	manifestDesc.Platform = &ocispec.Platform{Architecture: runtime.GOARCH, OS: "linux"}
	manifestDesc.Annotations = map[string]string{
		ocispec.AnnotationRefName:  img.tag,
		"io.containerd.image.name": img.name,
	}

	index, err := json.Marshal(ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageIndex,
		Manifests: []ocispec.Descriptor{manifestDesc},
	})
	if err != nil {
		return fmt.Errorf("encode index: %w", err)
	}
	layoutFile, err := json.Marshal(ocispec.ImageLayout{Version: ocispec.ImageLayoutVersion})
	if err != nil {
		return fmt.Errorf("encode oci-layout: %w", err)
	}

	tw := tar.NewWriter(w)
	add := func(name string, mode int64, data []byte) error {
		hdr := &tar.Header{Name: name, Mode: mode, ModTime: epoch, Format: tar.FormatPAX}
		if data == nil {
			hdr.Typeflag = tar.TypeDir
		} else {
			hdr.Typeflag = tar.TypeReg
			hdr.Size = int64(len(data))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
		if _, err := tw.Write(data); err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
		return nil
	}
	if err := add(ocispec.ImageLayoutFile, 0o644, layoutFile); err != nil {
		return err
	}
	if err := add(ocispec.ImageIndexFile, 0o644, index); err != nil {
		return err
	}
	for _, dir := range []string{ocispec.ImageBlobsDir + "/", ocispec.ImageBlobsDir + "/sha256/"} {
		if err := add(dir, 0o755, nil); err != nil {
			return err
		}
	}
	for _, b := range []blob{layerBlob, config, manifest} {
		name := path.Join(ocispec.ImageBlobsDir, b.desc.Digest.Algorithm().String(), b.desc.Digest.Encoded())
		if err := add(name, 0o644, b.data); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("close layout tar: %w", err)
	}
	return nil
}

// writeLayoutFile writes img as an OCI layout tarball at path.
func writeLayoutFile(path string, img image) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	if err := writeLayout(f, img); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", path, err)
	}
	return nil
}
