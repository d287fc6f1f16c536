// Package storetest opens a store on an embedded NATS of its own for a
// test; both go when the test ends.
package storetest

import (
	"context"
	"testing"

	"github.com/skep-io/skep/controlplane/store"
)

// Open starts an embedded NATS in a temporary directory, on a loopback
// port of the kernel's choosing, and opens the store on it.
func Open(t testing.TB) *store.Store {
	t.Helper()
	e, err := store.StartEmbedded(store.EmbeddedConfig{StoreDir: t.TempDir(), Listen: "127.0.0.1:-1", User: "skep", Password: "test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Shutdown)
	nc, err := e.Connect()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	st, err := store.Open(context.Background(), nc, store.Config{})
	if err != nil {
		t.Fatal(err)
	}
	return st
}
