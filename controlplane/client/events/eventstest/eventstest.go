// Package eventstest runs an event broadcaster for a test, so tests of
// the components that record Events can read them back from the API.
package eventstest

import (
	"context"
	"testing"

	"github.com/skep-io/skep/controlplane/client"
	"github.com/skep-io/skep/controlplane/client/events"
)

// Start runs a broadcaster writing to c until the test ends.
func Start(t testing.TB, c client.Interface, opts events.Options) *events.Broadcaster {
	t.Helper()
	b := events.NewBroadcaster(c, opts)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); b.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return b
}
