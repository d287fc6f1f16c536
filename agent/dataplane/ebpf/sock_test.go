package ebpf

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf/link"
	"github.com/google/go-cmp/cmp"

	"github.com/skep-io/skep/agent/dataplane"
)

var (
	clusterIP = netip.MustParseAddr("10.96.0.10")
	tcpKey    = dataplane.ServiceKey{Namespace: "default", Name: "echo", Port: "http", Protocol: dataplane.TCP}
	udpKey    = dataplane.ServiceKey{Namespace: "default", Name: "echo", Port: "dns", Protocol: dataplane.UDP}
)

// threeBackends starts three named servers on 127.0.0.2-4:port.
func threeBackends(t *testing.T, port string) []dataplane.Backend {
	t.Helper()
	var out []dataplane.Backend
	for i, name := range []string{"b2", "b3", "b4"} {
		ap := backendServer(t, name, "127.0.0."+string(rune('2'+i))+":"+port)
		out = append(out, backend(ap))
	}
	return out
}

// backendNames counts the results by the backend that answered; a failed
// connection counts under its error, so that a test's failure shows it.
func backendNames(results []clientResult) map[string]int {
	seen := map[string]int{}
	for _, r := range results {
		if r.Err != "" {
			seen["error "+r.Err]++
			continue
		}
		seen[r.Backend]++
	}
	return seen
}

func checkResults(t *testing.T, results []clientResult, wantPeer string, wantBackends ...string) {
	t.Helper()
	for i, r := range results {
		if r.Err != "" {
			t.Fatalf("connection %d failed: %s", i, r.Err)
		}
		if r.Peer != wantPeer {
			t.Errorf("connection %d to backend %s: peer %s, want %s", i, r.Backend, r.Peer, wantPeer)
		}
	}
	seen := backendNames(results)
	for _, b := range wantBackends {
		if seen[b] == 0 {
			t.Errorf("backend %s never reached in %d connections: %v", b, len(results), seen)
		}
	}
	if len(seen) != len(wantBackends) {
		t.Errorf("reached backends %v, want exactly %v", seen, wantBackends)
	}
}

func TestClusterIP(t *testing.T) {
	cfg := testConfig(t)
	d := newDataplane(t, cfg)
	backends := threeBackends(t, "18080")
	tcp := &dataplane.Service{Key: tcpKey, ClusterIP: clusterIP, Port: 80, NodePort: 30080, Backends: backends}
	udp := &dataplane.Service{Key: udpKey, ClusterIP: clusterIP, Port: 53, Backends: backends}
	if err := d.Sync(t.Context(), services(tcp, udp)); err != nil {
		t.Fatalf("Sync: %v", err)
	}

	t.Run("tcp", func(t *testing.T) {
		res := runClients(t, cfg.CgroupPath, clientSpec{Mode: "tcp", Addr: "10.96.0.10:80", Count: 40})
		checkResults(t, res, "10.96.0.10:80", "b2", "b3", "b4")
	})
	t.Run("udp-sendmsg", func(t *testing.T) {
		res := runClients(t, cfg.CgroupPath, clientSpec{Mode: "udp", Addr: "10.96.0.10:53", Count: 40})
		checkResults(t, res, "10.96.0.10:53", "b2", "b3", "b4")
	})
	t.Run("udp-connected", func(t *testing.T) {
		res := runClients(t, cfg.CgroupPath, clientSpec{Mode: "udp-connected", Addr: "10.96.0.10:53", Count: 40})
		checkResults(t, res, "10.96.0.10:53", "b2", "b3", "b4")
	})
	t.Run("nodeport-from-node", func(t *testing.T) {
		res := runClients(t, cfg.CgroupPath, clientSpec{Mode: "tcp", Addr: "127.0.0.1:30080", Count: 30})
		checkResults(t, res, "127.0.0.1:30080", "b2", "b3", "b4")
	})
	t.Run("other-port-untouched", func(t *testing.T) {
		// A port of the ClusterIP that is no service goes where the
		// application asked: nowhere, as nothing routes 10.96.0.10.
		res := runClients(t, cfg.CgroupPath, clientSpec{Mode: "udp", Addr: "127.0.0.2:18080", Count: 1})
		checkResults(t, res, "127.0.0.2:18080", "b2")
	})
}

func TestNoServingBackendRefuses(t *testing.T) {
	cfg := testConfig(t)
	d := newDataplane(t, cfg)
	backends := threeBackends(t, "18081")
	for i := range backends {
		backends[i].Ready = i != 0
		backends[i].Terminating = i != 0
	}
	for _, tc := range []struct {
		name     string
		backends []dataplane.Backend
	}{
		{"none", nil},
		{"not-ready-or-terminating", backends},
	} {
		t.Run(tc.name, func(t *testing.T) {
			svc := &dataplane.Service{Key: tcpKey, ClusterIP: clusterIP, Port: 80, Backends: tc.backends}
			if err := d.Sync(t.Context(), services(svc)); err != nil {
				t.Fatalf("Sync: %v", err)
			}
			start := time.Now()
			res := runClients(t, cfg.CgroupPath, clientSpec{Mode: "tcp", Addr: "10.96.0.10:80", Count: 3})
			for _, r := range res {
				if r.Err != "ECONNREFUSED" {
					t.Errorf("connect to a service without serving backends: got %+v, want ECONNREFUSED", r)
				}
			}
			if el := time.Since(start); el > 5*time.Second {
				t.Errorf("refusing took %v", el)
			}
		})
	}
}

func TestAffinity(t *testing.T) {
	cfg := testConfig(t)
	d := newDataplane(t, cfg)
	backends := threeBackends(t, "18082")
	svc := &dataplane.Service{Key: tcpKey, ClusterIP: clusterIP, Port: 80, Backends: backends, AffinityTimeout: time.Second}
	if err := d.Sync(t.Context(), services(svc)); err != nil {
		t.Fatalf("Sync: %v", err)
	}

	t.Run("holds", func(t *testing.T) {
		res := runClients(t, cfg.CgroupPath, clientSpec{Mode: "tcp", Addr: "10.96.0.10:80", Count: 30, Pause: 20 * time.Millisecond})
		if seen := backendNames(res); len(seen) != 1 {
			t.Errorf("with affinity one client reached %v, want one backend", seen)
		}
	})
	t.Run("expires", func(t *testing.T) {
		// Each connection comes after the 1s timeout: a fresh random
		// choice among three every time. Eight all alike would happen
		// by chance once in 2187 runs.
		res := runClients(t, cfg.CgroupPath, clientSpec{Mode: "tcp", Addr: "10.96.0.10:80", Count: 8, Pause: 1100 * time.Millisecond})
		if seen := backendNames(res); len(seen) < 2 {
			t.Errorf("after the affinity timeout every connection still reached %v", seen)
		}
	})
	t.Run("released-with-backend", func(t *testing.T) {
		res := runClients(t, cfg.CgroupPath, clientSpec{Mode: "tcp", Addr: "10.96.0.10:80", Count: 1})
		bound := res[0].Backend
		var rest []dataplane.Backend
		for _, b := range backends {
			if "b"+b.Addr.String()[len("127.0.0."):] != bound {
				rest = append(rest, b)
			}
		}
		svc2 := *svc
		svc2.Backends = rest
		if err := d.Sync(t.Context(), services(&svc2)); err != nil {
			t.Fatalf("Sync: %v", err)
		}
		res = runClients(t, cfg.CgroupPath, clientSpec{Mode: "tcp", Addr: "10.96.0.10:80", Count: 10})
		seen := backendNames(res)
		if seen[bound] != 0 || len(seen) != 1 {
			t.Errorf("after removing %s the client reached %v, want one other backend", bound, seen)
		}
	})
}

// TestRestart checks that stopping the agent leaves services answering and
// that a new Dataplane takes over the pinned links and maps without
// writing anything when nothing changed.
func TestRestart(t *testing.T) {
	cfg := testConfig(t)
	d := newDataplane(t, cfg)
	backends := threeBackends(t, "18083")
	want := services(
		&dataplane.Service{Key: tcpKey, ClusterIP: clusterIP, Port: 80, NodePort: 30083, Backends: backends,
			LoadBalancerIPs: []netip.Addr{netip.MustParseAddr("198.18.100.1")}},
		&dataplane.Service{Key: udpKey, ClusterIP: clusterIP, Port: 53, Backends: backends[:2], AffinityTimeout: 30 * time.Second,
			ExternalIPs: []netip.Addr{netip.MustParseAddr("198.18.100.2")}, ExternalPolicyLocal: true},
	)
	if err := d.Sync(t.Context(), want); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	linksBefore := pinnedLinkIDs(t, cfg)
	if err := d.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	res := runClients(t, cfg.CgroupPath, clientSpec{Mode: "tcp", Addr: "10.96.0.10:80", Count: 3})
	for _, r := range res {
		if r.Err != "" || r.Peer != "10.96.0.10:80" {
			t.Fatalf("connection while no agent runs: %+v, want success with peer 10.96.0.10:80", r)
		}
	}

	d2 := newDataplane(t, cfg)
	if got := pinnedLinkIDs(t, cfg); !slices.Equal(got, linksBefore) {
		t.Errorf("links after restart %v, want the same links %v", got, linksBefore)
	}
	if err := d2.Sync(t.Context(), want); err != nil {
		t.Fatalf("Sync after restart: %v", err)
	}
	if d2.lastWrites != 0 {
		t.Errorf("Sync of unchanged services after restart wrote %d entries, want 0", d2.lastWrites)
	}
	res = runClients(t, cfg.CgroupPath, clientSpec{Mode: "tcp", Addr: "10.96.0.10:80", Count: 20})
	checkResults(t, res, "10.96.0.10:80", "b2", "b3", "b4")

	got, err := d2.Services(t.Context())
	if err != nil {
		t.Fatalf("Services: %v", err)
	}
	var wantList []dataplane.Service
	for _, k := range []dataplane.ServiceKey{udpKey, tcpKey} {
		s := *want[k]
		for i := range s.Backends {
			s.Backends[i].Terminating = false
		}
		wantList = append(wantList, s)
	}
	if diff := cmp.Diff(wantList, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("Services() read back differs (-want +got):\n%s", diff)
	}
}

func pinnedLinkIDs(t *testing.T, cfg Config) []link.ID {
	t.Helper()
	paths, _ := filepath.Glob(filepath.Join(cfg.pinDir(), linkPinPrefix+"*"))
	if len(paths) == 0 {
		t.Fatalf("no pinned links in %s", cfg.pinDir())
	}
	var ids []link.ID
	for _, p := range paths {
		l, err := link.LoadPinnedLink(p, nil)
		if err != nil {
			t.Fatalf("load pinned link: %v", err)
		}
		info, err := l.Info()
		l.Close()
		if err != nil {
			t.Fatalf("link info: %v", err)
		}
		ids = append(ids, info.ID)
	}
	return ids
}

// TestBackendChangeNeverEmpty flips a service between backend sets while a
// client connects as fast as it can: not one connection may fail.
func TestBackendChangeNeverEmpty(t *testing.T) {
	cfg := testConfig(t)
	d := newDataplane(t, cfg)
	backends := threeBackends(t, "18084")
	sets := [][]dataplane.Backend{backends[:2], backends[2:], backends[1:], backends[:1]}
	svc := &dataplane.Service{Key: tcpKey, ClusterIP: clusterIP, Port: 80, Backends: sets[0]}
	if err := d.Sync(t.Context(), services(svc)); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	syncs := 0
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			syncs = i
			select {
			case <-stop:
				return
			default:
			}
			s := *svc
			s.Backends = sets[i%len(sets)]
			if err := d.Sync(t.Context(), services(&s)); err != nil {
				t.Errorf("Sync: %v", err)
				return
			}
		}
	}()
	res := runClients(t, cfg.CgroupPath, clientSpec{Mode: "tcp", Addr: "10.96.0.10:80", Count: 300})
	close(stop)
	wg.Wait()
	if syncs < 20 {
		t.Errorf("only %d backend changes happened during the connections; the test proves nothing", syncs)
	}
	t.Logf("%d connections during %d backend changes", len(res), syncs)
	for i, r := range res {
		if r.Err != "" {
			t.Fatalf("connection %d during backend changes failed: %s", i, r.Err)
		}
	}
}

func TestCleanupRemovesEverything(t *testing.T) {
	cfg := testConfig(t)
	d := newDataplane(t, cfg)
	backends := threeBackends(t, "18085")
	if err := d.Sync(t.Context(), services(&dataplane.Service{Key: tcpKey, ClusterIP: clusterIP, Port: 80, Backends: backends})); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	ids := pinnedLinkIDs(t, cfg)
	if err := d.Cleanup(t.Context()); err != nil {
		t.Fatalf("Cleanup: %v", err)
	}
	if _, err := os.Stat(cfg.pinDir()); !os.IsNotExist(err) {
		t.Errorf("pin directory still there after Cleanup: %v", err)
	}
	for _, id := range ids {
		if l, err := link.NewFromID(id); err == nil {
			info, _ := l.Info()
			l.Close()
			t.Errorf("link %d still exists after Cleanup: %+v", id, info)
		}
	}
	// The client connects where it asked: 10.96.0.10 is routed nowhere.
	res := runClients(t, cfg.CgroupPath, clientSpec{Mode: "udp", Addr: "127.0.0.2:18085", Count: 1})
	checkResults(t, res, "127.0.0.2:18085", "b2")
}
