// Package images builds the images skep's tests run, from this repository's
// own sources, as OCI image-layout tarballs: no registry and no docker daemon
// are involved. `skep image import` or the runtime's ImportImage loads them.
//
//   - skep/pause:latest: the pause binary of ./pause, the first process of
//     every pod.
//   - skep/echo:latest: the echo server of ./echo (HTTP and UDP on $PORT).
//   - skep/toolbox:latest: Debian's static busybox (/bin/busybox from the
//     busybox-static package) with a symlink per applet: sh, wget, nc,
//     nslookup, httpd, sleep and the rest.
package images

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
)

// The references pod specs use; containerd stores them as docker.io/<ref>.
const (
	Pause   = "skep/pause:latest"
	Echo    = "skep/echo:latest"
	Toolbox = "skep/toolbox:latest"
)

// BusyboxPath is where Debian's busybox-static installs the static busybox.
const BusyboxPath = "/bin/busybox"

// FullName is the name containerd stores an image under, "docker.io/" + ref,
// the same normalisation a pod's image field gets.
func FullName(ref string) string { return "docker.io/" + ref }

// Build writes the three test images into outDir as OCI layout tarballs and
// returns the tarball of each reference (Pause, Echo, Toolbox). It runs
// `go build` for the pause and echo binaries (static, CGO_ENABLED=0) from the
// sources next to this file, so it needs the Go toolchain and the source tree.
func Build(ctx context.Context, outDir string) (map[string]string, error) {
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return nil, fmt.Errorf("create %s: %w", outDir, err)
	}
	srcDir, err := sourceDir()
	if err != nil {
		return nil, err
	}
	binDir, err := os.MkdirTemp(outDir, ".bin-")
	if err != nil {
		return nil, fmt.Errorf("create build dir: %w", err)
	}
	defer os.RemoveAll(binDir)

	pause, err := goBuild(ctx, srcDir, "pause", binDir)
	if err != nil {
		return nil, err
	}
	echo, err := goBuild(ctx, srcDir, "echo", binDir)
	if err != nil {
		return nil, err
	}
	toolbox, err := toolboxFiles(ctx)
	if err != nil {
		return nil, err
	}

	env := []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	imgs := map[string]image{
		Pause: {
			entrypoint: []string{"/pause"},
			env:        env,
			files:      []entry{{path: "/pause", mode: 0o755, data: pause}},
		},
		Echo: {
			entrypoint: []string{"/echo"},
			env:        env,
			files: append(baseDirs(),
				entry{path: "/echo", mode: 0o755, data: echo}),
		},
		Toolbox: {
			entrypoint: []string{"/bin/sh"},
			env:        env,
			files:      toolbox,
		},
	}

	out := make(map[string]string, len(imgs))
	for ref, img := range imgs {
		repo, tag, _ := strings.Cut(ref, ":")
		img.name = FullName(ref)
		img.tag = tag
		path := filepath.Join(outDir, strings.ReplaceAll(repo, "/", "-")+".tar")
		if err := writeLayoutFile(path, img); err != nil {
			return nil, fmt.Errorf("build %s: %w", ref, err)
		}
		out[ref] = path
	}
	return out, nil
}

// sourceDir finds this package's directory, where the pause and echo sources
// live: from the compiled-in file name when it exists (tests, go run), else
// ./test/images under the working directory (the repository root).
func sourceDir() (string, error) {
	if _, file, _, ok := runtime.Caller(0); ok {
		dir := filepath.Dir(file)
		if _, err := os.Stat(filepath.Join(dir, "pause", "main.go")); err == nil {
			return dir, nil
		}
	}
	dir, err := filepath.Abs(filepath.Join("test", "images"))
	if err != nil {
		return "", fmt.Errorf("find test/images: %w", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "pause", "main.go")); err != nil {
		return "", fmt.Errorf("find the sources of the test images: %w", err)
	}
	return dir, nil
}

// goBuild builds the command in srcDir/name as a static binary and returns it.
func goBuild(ctx context.Context, srcDir, name, binDir string) ([]byte, error) {
	bin := filepath.Join(binDir, name)
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, "./"+name)
	cmd.Dir = srcDir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build %s: %w: %s", name, err, out)
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		return nil, fmt.Errorf("read %s binary: %w", name, err)
	}
	return data, nil
}

// baseDirs are the directories a shell-using container expects; runc makes
// /proc, /dev and /sys and the bind-mount targets itself.
func baseDirs() []entry {
	return []entry{
		{path: "/bin", mode: 0o755, dir: true},
		{path: "/etc", mode: 0o755, dir: true},
		{path: "/root", mode: 0o700, dir: true},
		{path: "/tmp", mode: 0o1777, dir: true},
		{path: "/var", mode: 0o755, dir: true},
	}
}

// toolboxFiles is busybox with one symlink per applet it was built with, and
// enough of /etc for id, whoami and nslookup.
func toolboxFiles(ctx context.Context) ([]entry, error) {
	busybox, err := os.ReadFile(BusyboxPath)
	if err != nil {
		return nil, fmt.Errorf("read busybox (install Debian's busybox-static): %w", err)
	}
	list, err := exec.CommandContext(ctx, BusyboxPath, "--list").Output()
	if err != nil {
		return nil, fmt.Errorf("list busybox applets: %w", err)
	}
	files := append(baseDirs(),
		entry{path: "/bin/busybox", mode: 0o755, data: busybox},
		entry{path: "/etc/passwd", mode: 0o644, data: []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")},
		entry{path: "/etc/group", mode: 0o644, data: []byte("root:x:0:\nnogroup:x:65534:\n")},
	)
	for _, applet := range strings.Fields(string(list)) {
		if applet == "busybox" || strings.Contains(applet, "/") {
			continue
		}
		files = append(files, entry{path: "/bin/" + applet, mode: 0o777, link: "busybox"})
	}
	return files, nil
}
