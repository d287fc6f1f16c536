// Command build writes skep's test images as OCI layout tarballs:
//
//	go run ./test/images/build -out DIR
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"sort"

	"github.com/skep-io/skep/test/images"
)

func main() {
	out := flag.String("out", "images", "directory to write the image tarballs to")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	dir, err := filepath.Abs(*out)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	tars, err := images.Build(ctx, dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "build test images:", err)
		os.Exit(1)
	}
	refs := make([]string, 0, len(tars))
	for ref := range tars {
		refs = append(refs, ref)
	}
	sort.Strings(refs)
	for _, ref := range refs {
		fmt.Printf("%s\t%s\n", ref, tars[ref])
	}
}
