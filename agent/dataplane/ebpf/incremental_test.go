package ebpf

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/skep-io/skep/agent/dataplane"
	"github.com/skep-io/skep/agent/dataplane/dataplanetest"
	"github.com/skep-io/skep/bpf"
)

// propSeed is the seed of a property test: SKEP_PROP_SEED when set (to
// replay a failure), else the clock. It is logged either way.
func propSeed(t *testing.T) int64 {
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

// TestApplyEqualsFullSync applies random sequences of per-Service changes
// incrementally and checks, after each, the maps read back from the kernel
// against two references: a twin dataplane given the whole state by Sync
// at every step (the same ids must come out, entry for entry), and the
// plan a full sync from empty maps writes (the same services, frontends,
// slots and backends, ids aside).
func TestApplyEqualsFullSync(t *testing.T) {
	seed := propSeed(t)
	ctx := t.Context()
	inc := newDataplane(t, testConfig(t))
	twin := newDataplane(t, testConfig(t))
	ch := dataplanetest.NewChanger(seed, "node-a")

	if err := inc.Apply(ctx, ch.Step()); !errors.Is(err, dataplane.ErrNeedFullSync) {
		t.Fatalf("Apply before any Sync: %v, want ErrNeedFullSync", err)
	}
	for range 6 {
		ch.Step()
	}
	for _, d := range []*Dataplane{inc, twin} {
		if err := d.Sync(ctx, ch.Snapshot()); err != nil {
			t.Fatalf("seed %d: first Sync: %v", seed, err)
		}
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	for step := range 400 {
		changed := ch.Step()
		if err := inc.Apply(ctx, changed); err != nil {
			t.Fatalf("seed %d step %d: Apply: %v", seed, step, err)
		}
		if err := twin.Sync(ctx, ch.Snapshot()); err != nil {
			t.Fatalf("seed %d step %d: Sync: %v", seed, step, err)
		}
		got := readState(t, inc)
		if want := readState(t, twin); !sameMaps(got, want) {
			t.Fatalf("seed %d step %d: after Apply(%s) the maps differ from a full Sync's:\n%s",
				seed, step, keysOf(changed), mapDiff(canonical(want), canonical(got)))
		}
		scratch := newMapState().plan(ch.State, quiet)
		if diff := mapDiff(canonical(scratch), canonical(got)); diff != "" {
			t.Fatalf("seed %d step %d: after Apply(%s) the maps differ from a full sync from scratch:\n%s",
				seed, step, keysOf(changed), diff)
		}
		if step%100 == 99 {
			// The periodic full reconcile finds nothing to correct.
			if err := inc.Sync(ctx, ch.Snapshot()); err != nil {
				t.Fatalf("seed %d step %d: periodic Sync: %v", seed, step, err)
			}
			if inc.lastWrites != 0 {
				t.Fatalf("seed %d step %d: a full Sync after Applys wrote %d entries, want 0", seed, step, inc.lastWrites)
			}
		}
	}
}

// TestApplyWritesOnlyTheChangedService changes one backend of one service
// among 10,000: the write touches that service's backend, slot and entry
// and leaves everything else as the full sync wrote it.
func TestApplyWritesOnlyTheChangedService(t *testing.T) {
	ctx := t.Context()
	d := newDataplane(t, testConfig(t))
	svcs := dataplanetest.Services(10000)
	if err := d.Sync(ctx, svcs); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	before := readState(t, d)
	key := dataplanetest.Key(4242)
	changed := *svcs[key]
	changed.Backends = []dataplane.Backend{changed.Backends[0], {Addr: netip.MustParseAddr("10.246.0.1"), Port: 8080, Ready: true}}
	if err := d.Apply(ctx, map[dataplane.ServiceKey]*dataplane.Service{key: &changed}); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	// A new backend, its slot, and the old backend deleted.
	if d.lastWrites != 3 {
		t.Errorf("Apply of one backend change wrote %d entries, want 3", d.lastWrites)
	}
	after := readState(t, d)
	id := d.index.ids[svcName(key)]
	for k, v := range before.services {
		if v.SvcId != id && after.services[k] != v {
			t.Fatalf("entry %+v of another service changed: %+v -> %+v", k, v, after.services[k])
		}
	}
	got := after.servicesOf("node-a")
	i := slices.IndexFunc(got, func(s dataplane.Service) bool { return s.Key == key })
	if i < 0 || len(got[i].Backends) != 2 || got[i].Backends[1].Addr != netip.MustParseAddr("10.246.0.1") {
		t.Fatalf("the maps hold %+v for %s, want backends 10.244.16.146 and 10.246.0.1", got[i], key)
	}

	// Removing the service removes its name, entry, slots and backends.
	if err := d.Apply(ctx, map[dataplane.ServiceKey]*dataplane.Service{key: nil}); err != nil {
		t.Fatalf("Apply removal: %v", err)
	}
	if d.lastWrites != 1+2+2+1 {
		t.Errorf("Apply of a removal wrote %d entries, want 6", d.lastWrites)
	}
	final := readState(t, d)
	if len(final.names) != 9999 || len(final.backends) != 2*9999 || len(final.services) != 3*9999 {
		t.Errorf("after removing one of 10,000 services the maps hold %d names, %d backends, %d entries",
			len(final.names), len(final.backends), len(final.services))
	}
}

func readState(t *testing.T, d *Dataplane) *mapState {
	t.Helper()
	st, err := loadMapState(d.maps())
	if err != nil {
		t.Fatalf("read maps: %v", err)
	}
	return st
}

func sameMaps(a, b *mapState) bool {
	return maps.Equal(a.services, b.services) && maps.Equal(a.backends, b.backends) && maps.Equal(a.names, b.names)
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

// canonical describes map state without its ids: each frontend with its
// service, flags, counts and the backends of its slots (the local group
// and the rest, each sorted, since slot order follows id order, which
// follows history), each backend by service and address, each name, and
// the number of slots, so that a stray one shows.
func canonical(st *mapState) []string {
	name := func(id uint32) string {
		n, ok := st.names[id]
		if !ok {
			return fmt.Sprintf("<no name for id %d>", id)
		}
		return serviceKeyOf(n).String()
	}
	be := func(id uint32) string {
		b, ok := st.backends[id]
		if !ok {
			return fmt.Sprintf("<no backend %d>", id)
		}
		return fmt.Sprintf("%s:%d/%d flags=%d of %s", bpf.AddrFromNative(b.Address), bpf.PortFromNative(b.Port), b.Proto, b.Flags, name(b.SvcId))
	}
	var out []string
	slots := 0
	for k, v := range st.services {
		if k.BackendSlot != 0 {
			slots++
			continue
		}
		var local, remote []string
		for i := uint16(1); i <= v.Count; i++ {
			sk := k
			sk.BackendSlot = i
			s, ok := st.services[sk]
			desc := "<missing slot>"
			if ok {
				desc = be(s.BackendId)
				if s.SvcId != v.SvcId {
					desc += " <slot of another service>"
				}
			}
			if i <= v.LocalCount {
				local = append(local, desc)
			} else {
				remote = append(remote, desc)
			}
		}
		slices.Sort(local)
		slices.Sort(remote)
		out = append(out, fmt.Sprintf("frontend %s:%d/%d %s flags=%d count=%d local=%d affinity=%d slots=%v|%v",
			bpf.AddrFromNative(k.Address), bpf.PortFromNative(k.Dport), k.Proto, name(v.SvcId), v.Flags, v.Count, v.LocalCount,
			v.AffinityTimeout, local, remote))
	}
	for id := range st.backends {
		out = append(out, "backend "+be(id))
	}
	for id := range st.names {
		out = append(out, "name "+name(id))
	}
	out = append(out, fmt.Sprintf("slots %d", slots))
	slices.Sort(out)
	return out
}

// mapDiff lists the lines only in want (-) and only in got (+); "" when
// equal.
func mapDiff(want, got []string) string {
	var b strings.Builder
	for _, l := range want {
		if !slices.Contains(got, l) {
			fmt.Fprintf(&b, "- %s\n", l)
		}
	}
	for _, l := range got {
		if !slices.Contains(want, l) {
			fmt.Fprintf(&b, "+ %s\n", l)
		}
	}
	return b.String()
}
