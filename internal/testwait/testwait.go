// Package testwait is how skep's tests wait for something that happens
// asynchronously: one poll loop, after nats-server's checkFor, whose
// failure says what was still missing when the time ran out.
package testwait

import (
	"fmt"
	"testing"
	"time"
)

// For calls check every interval until it returns nil. Once total has
// passed, the test fails with check's last error, which should say what
// it still waits for.
func For(t testing.TB, total, interval time.Duration, check func() error) {
	t.Helper()
	deadline := time.Now().Add(total)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %v", total, err)
		}
		time.Sleep(interval)
	}
}

// Holds is a check for For that passes once cond holds; until then its
// error names what is awaited.
func Holds(what string, cond func() bool) func() error {
	return func() error {
		if cond() {
			return nil
		}
		return fmt.Errorf("waiting for %s", what)
	}
}
