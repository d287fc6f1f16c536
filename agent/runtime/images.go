package runtime

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	containerd "github.com/containerd/containerd"
	"github.com/containerd/containerd/errdefs"
	"github.com/distribution/reference"
	corev1 "k8s.io/api/core/v1"
)

// pullTimeout bounds one pull; a failed pull is retried with back-off.
const pullTimeout = 2 * time.Minute

// Sentinels a container's waiting reason is derived from.
var (
	// errImageNeverPull: the image is missing and imagePullPolicy is Never.
	errImageNeverPull = errors.New("image is not present and imagePullPolicy is Never")
)

// ImportImage loads images from an OCI image-layout or docker-archive tar
// stream into containerd and unpacks them into the overlayfs snapshotter. It
// returns the names of the images imported (docker.io/skep/echo:latest).
func (r *Runtime) ImportImage(ctx context.Context, rd io.Reader) ([]string, error) {
	ctx = r.nsCtx(ctx)
	imgs, err := r.client.Import(ctx, rd,
		// An OCI layout may name a manifest only by tag in ref.name; such
		// a name is no image reference and is skipped.
		containerd.WithImageRefTranslator(func(name string) string {
			if _, err := reference.ParseDockerRef(name); err != nil || !hasRepository(name) {
				return ""
			}
			return name
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("import image: %w", err)
	}
	if len(imgs) == 0 {
		return nil, errors.New("import image: the archive names no image (set io.containerd.image.name or a full ref.name)")
	}
	names := make([]string, 0, len(imgs))
	for _, img := range imgs {
		image := containerd.NewImage(r.client, img)
		if err := image.Unpack(ctx, snapshotter); err != nil {
			return nil, fmt.Errorf("unpack image %s: %w", img.Name, err)
		}
		names = append(names, img.Name)
		r.log.Info("image imported", "image", img.Name, "digest", img.Target.Digest)
	}
	return names, nil
}

func hasRepository(name string) bool {
	for _, c := range name {
		if c == '/' || c == ':' || c == '@' {
			return true
		}
	}
	return false
}

// normalizeImage turns a pod's image field into the name containerd stores:
// "skep/echo" → "docker.io/skep/echo:latest".
func normalizeImage(ref string) (string, error) {
	named, err := reference.ParseDockerRef(ref)
	if err != nil {
		return "", fmt.Errorf("parse image reference %q: %w", ref, err)
	}
	return named.String(), nil
}

// ensureImage returns the image a container runs, pulling it when missing,
// and how long the pull took (0: the image was present).
//
// An image already present is used whatever imagePullPolicy says: skep
// nodes often have no registry to ask (images are imported), so Always is
// honoured only as "pull if missing" there; Never fails on a missing image.
func (r *Runtime) ensureImage(ctx context.Context, ref string, policy corev1.PullPolicy) (containerd.Image, time.Duration, error) {
	name, err := normalizeImage(ref)
	if err != nil {
		return nil, 0, err
	}
	img, err := r.client.GetImage(ctx, name)
	if err == nil {
		if unpacked, err := img.IsUnpacked(ctx, snapshotter); err == nil && !unpacked {
			if err := img.Unpack(ctx, snapshotter); err != nil {
				return nil, 0, fmt.Errorf("unpack image %s: %w", name, err)
			}
		}
		return img, 0, nil
	}
	if !errdefs.IsNotFound(err) {
		return nil, 0, fmt.Errorf("look up image %s: %w", name, err)
	}
	if policy == corev1.PullNever {
		return nil, 0, fmt.Errorf("%s: %w", name, errImageNeverPull)
	}
	pullCtx, cancel := context.WithTimeout(ctx, pullTimeout)
	defer cancel()
	r.log.Info("pulling image", "image", name)
	start := time.Now()
	img, err = r.client.Pull(pullCtx, name, containerd.WithPullUnpack, containerd.WithPullSnapshotter(snapshotter))
	if err != nil {
		return nil, 0, fmt.Errorf("pull image %s: %w", name, err)
	}
	return img, max(time.Since(start), time.Nanosecond), nil
}
