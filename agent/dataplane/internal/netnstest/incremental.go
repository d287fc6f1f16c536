package netnstest

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/skep-io/skep/agent/dataplane"
	"github.com/skep-io/skep/agent/dataplane/dataplanetest"
)

// Applier is a Proxier that also takes incremental changes.
type Applier interface {
	Proxier
	Apply(ctx context.Context, changed map[dataplane.ServiceKey]*dataplane.Service) error
}

// Seed is a property test's seed: SKEP_PROP_SEED when set (to replay a
// failure), else the clock; it is logged either way.
func Seed(t testing.TB) int64 {
	t.Helper()
	seed := time.Now().UnixNano()
	if s := os.Getenv("SKEP_PROP_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseInt(s, 10, 64); err != nil {
			t.Fatalf("SKEP_PROP_SEED=%q: want an integer", s)
		}
	}
	t.Logf("seed %d (replay with SKEP_PROP_SEED=%d)", seed, seed)
	return seed
}

// CheckIncremental applies a random sequence of per-Service changes
// (dataplanetest.Changer) to a proxier in one namespace with Apply, and
// after each compares what dump reads from that namespace with what a
// proxier started from scratch in a second namespace writes for the whole
// state in one Sync. newProxier starts a proxier on a namespace; dump
// returns the namespace's rules normalised (no counters or handles), one
// item a line.
func CheckIncremental(t *testing.T, prefix string, steps int, newProxier func(ctx context.Context, ns string) (Applier, error),
	dump func(t testing.TB, ns string) string) {
	t.Helper()
	seed := Seed(t)
	ctx := t.Context()
	incNS, refNS := New(t, prefix), New(t, prefix)
	inc, err := newProxier(ctx, incNS)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { inc.Close() })
	ch := dataplanetest.NewChanger(seed, "node-a")
	if err := inc.Apply(ctx, ch.Step()); err != dataplane.ErrNeedFullSync {
		t.Fatalf("Apply before any Sync: %v, want ErrNeedFullSync", err)
	}
	for range 6 {
		ch.Step()
	}
	if err := inc.Sync(ctx, ch.Snapshot()); err != nil {
		t.Fatalf("seed %d: first Sync: %v", seed, err)
	}
	var ref Applier
	defer func() {
		if ref != nil {
			ref.Close()
		}
	}()
	for step := range steps {
		changed := ch.Step()
		if err := inc.Apply(ctx, changed); err != nil {
			t.Fatalf("seed %d step %d: Apply(%s): %v", seed, step, keysOf(changed), err)
		}
		if ref != nil {
			if err := ref.Cleanup(ctx); err != nil {
				t.Fatalf("seed %d step %d: clean the reference: %v", seed, step, err)
			}
		}
		if ref, err = newProxier(ctx, refNS); err != nil {
			t.Fatal(err)
		}
		if err := ref.Sync(ctx, ch.Snapshot()); err != nil {
			t.Fatalf("seed %d step %d: full Sync from scratch: %v", seed, step, err)
		}
		if diff := lineDiff(dump(t, refNS), dump(t, incNS)); diff != "" {
			t.Fatalf("seed %d step %d: after Apply(%s) the rules differ from a full sync from scratch (- full, + incremental):\n%s",
				seed, step, keysOf(changed), diff)
		}
	}
}

func keysOf(m map[dataplane.ServiceKey]*dataplane.Service) string {
	var out []string
	for k, s := range m {
		if s == nil {
			out = append(out, k.String()+"=removed")
		} else {
			out = append(out, k.String())
		}
	}
	slices.Sort(out)
	return strings.Join(out, ", ")
}

// lineDiff lists the lines only in want (-) and only in got (+), counting
// repeats; "" when both hold the same lines.
func lineDiff(want, got string) string {
	count := map[string]int{}
	for _, l := range strings.Split(want, "\n") {
		count[l]++
	}
	for _, l := range strings.Split(got, "\n") {
		count[l]--
	}
	var out []string
	for l, n := range count {
		switch {
		case n > 0:
			out = append(out, fmt.Sprintf("- %s (x%d)", l, n))
		case n < 0:
			out = append(out, fmt.Sprintf("+ %s (x%d)", l, -n))
		}
	}
	slices.Sort(out)
	return strings.Join(out, "\n")
}
