package main

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

func TestParseSizes(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    []int
		wantErr bool
	}{
		{in: "1000,10000,30000", want: []int{1000, 10000, 30000}},
		{in: " 1_000 , 10000,", want: []int{1000, 10000}},
		{in: "100,0", wantErr: true},
		{in: "ten", wantErr: true},
		{in: ",", wantErr: true},
	} {
		got, err := parseSizes("sizes", tc.in)
		if (err != nil) != tc.wantErr || !slices.Equal(got, tc.want) {
			t.Errorf("parseSizes(%q) = %v, %v; want %v, error %v", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestFindSkep(t *testing.T) {
	dir := t.TempDir()
	self := filepath.Join(dir, "skep-bench")
	skep := filepath.Join(dir, "skep")
	other := filepath.Join(t.TempDir(), "my-skep")
	notExec := filepath.Join(dir, "notes")
	for p, mode := range map[string]os.FileMode{self: 0o755, other: 0o755, notExec: 0o644} {
		if err := os.WriteFile(p, []byte("#!/bin/sh\n"), mode); err != nil {
			t.Fatal(err)
		}
	}

	// No skep next to skep-bench yet: the error says how to get one.
	if _, err := findSkep("", self); err == nil || !strings.Contains(err.Error(), "make build") || !strings.Contains(err.Error(), "--skep PATH") {
		t.Errorf("findSkep with no skep beside it: error %v; want one that names make build and --skep PATH", err)
	}
	if err := os.WriteFile(skep, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if got, err := findSkep("", self); err != nil || got != skep {
		t.Errorf("findSkep(\"\", %s) = %q, %v; want %s, the skep beside it", self, got, err, skep)
	}
	if got, err := findSkep(other, self); err != nil || got != other {
		t.Errorf("findSkep(%s) = %q, %v; want the --skep given", other, got, err)
	}
	for _, bad := range []string{notExec, filepath.Join(dir, "missing"), dir} {
		if _, err := findSkep(bad, self); err == nil || !strings.Contains(err.Error(), "--skep "+bad) {
			t.Errorf("findSkep(%s): error %v; want one naming --skep %s", bad, err, bad)
		}
	}
}

// TestLabBenchesNeedSkep runs each benchmark that starts a lab or a
// server with a --skep that is not there: each must stop before it starts
// anything, naming the flag.
func TestLabBenchesNeedSkep(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "skep")
	for _, bench := range []string{"propagation", "pods", "dataplane", "nodeport"} {
		app := newApp()
		var out bytes.Buffer
		app.Writer, app.ErrWriter = &out, &out
		err := app.Run([]string{"skep-bench", bench, "--skep", missing, "--out", t.TempDir()})
		if err == nil || !strings.Contains(err.Error(), "--skep "+missing) {
			t.Errorf("skep-bench %s --skep %s: error %v; want one naming --skep", bench, missing, err)
		}
	}
}

// TestCommands checks that every benchmark of the README is a verb, and
// that the load generator the traffic benchmarks start is one too.
func TestCommands(t *testing.T) {
	app := newApp()
	for _, name := range []string{"sync", "propagation", "pods", "dataplane", "nodeport", clientCommand} {
		if app.Command(name) == nil {
			t.Errorf("skep-bench %s: no such verb", name)
		}
	}
}

// TestImagesBesideSkep checks that, with no --images, the benchmarks find
// the images `make images` wrote in the repository of the skep binary
// they run (bin/skep → _out/images), from any working directory.
func TestImagesBesideSkep(t *testing.T) {
	repo := t.TempDir()
	skep := filepath.Join(repo, "bin", "skep")
	images := filepath.Join(repo, "_out", "images")
	for _, d := range []string{filepath.Dir(skep), images} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Chdir(t.TempDir())
	app := newApp()
	app.Commands = append(app.Commands, &cli.Command{Name: "probe", Flags: []cli.Flag{&cli.StringFlag{Name: "images"}},
		Action: func(c *cli.Context) error {
			got, err := imagesDir(c, skep)
			if err != nil || got != images {
				t.Errorf("imagesDir(%s) = %q, %v; want %s", skep, got, err, images)
			}
			if err := os.RemoveAll(images); err != nil {
				t.Fatal(err)
			}
			if _, err := imagesDir(c, skep); err == nil || !strings.Contains(err.Error(), "make images") || !strings.Contains(err.Error(), "--images DIR") {
				t.Errorf("imagesDir with no images: error %v; want one naming make images and --images DIR", err)
			}
			return nil
		}})
	if err := app.Run([]string{"skep-bench", "probe"}); err != nil {
		t.Fatal(err)
	}
}
