package programming

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/skep-io/skep/agent/dataplane/dataplanetest"
	"github.com/skep-io/skep/bench/report"
)

// TestRun measures 100 services in every mode once and checks that every
// metric was sampled with a plausible value and that nothing is left behind.
func TestRun(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{Sizes: []int{100}, Rounds: 1, PinRoot: "/sys/fs/bpf", CgroupRoot: "/sys/fs/cgroup/unified"}
	var progress bytes.Buffer
	cfg.Progress = &progress
	rep := &report.Report{Reference: "ebpf"}
	if err := Run(t.Context(), cfg, rep); err != nil {
		t.Fatalf("Run: %v\n%s", err, progress.String())
	}
	got := map[string]float64{}
	for _, s := range rep.Samples {
		if s.Bench != Bench || s.N != 100 || s.Round != 0 {
			t.Errorf("unexpected sample %+v", s)
		}
		got[s.Variant+" "+s.Metric] = s.Value
	}
	for _, tc := range []struct {
		key      string
		min, max float64
	}{
		{"ebpf sync_s", 1e-4, 30},
		{"iptables sync_s", 1e-3, 30},
		{"ebpf change_ms", 1e-3, 5000},
		{"iptables change_ms", 1e-2, 5000},
		// The incremental change writes three entries, whatever N.
		{"ebpf apply_ms", 1e-4, 5},
		{"iptables apply_ms", 1e-2, 5000},
		{"nftables apply_ms", 1e-2, 5000},
		{"ebpf heap_MiB", 1e-3, 100},
		{"iptables heap_MiB", 1e-4, 100},
		{"ebpf bpf_map_MiB", 0.1, 4096},
		// Per service: a KUBE-SERVICES jump, a SVC chain of two SEP jumps
		// and two SEPs of a DNAT and a mark each, and more.
		{"iptables iptables_rules", 700, 2000},
		{"nftables sync_s", 1e-3, 30},
		{"nftables change_ms", 1e-2, 5000},
		{"nftables heap_MiB", 1e-4, 100},
		// Per service: a cluster chain of one rule (the numgen dispatch;
		// no cluster CIDR, so no masquerade rule), two endpoint chains of
		// two rules each; and the fixed chains' score.
		{"nftables nft_rules", 500, 550},
		// Per service: its address in @service-ips and @cluster-ips.
		{"nftables nft_elements", 200, 200},
	} {
		v, ok := got[tc.key]
		if !ok {
			t.Errorf("no sample of %s; got %v", tc.key, got)
			continue
		}
		if v < tc.min || v > tc.max {
			t.Errorf("%s = %v, want between %v and %v", tc.key, v, tc.min, tc.max)
		}
	}
	if err := rep.Write(dir); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"sync.csv", "sync.md", "sync-sync_s.png"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Error(err)
		}
	}

	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns list: %v: %s", err, out)
	}
	if strings.Contains(string(out), "skep-bench-") {
		t.Errorf("network namespaces left: %s", out)
	}
	for _, pattern := range []string{"/sys/fs/bpf/skep-bench-*", "/sys/fs/cgroup/unified/skep-bench-*"} {
		if left, _ := filepath.Glob(pattern); len(left) > 0 {
			t.Errorf("left behind: %v", left)
		}
	}
}

func TestWithOneChange(t *testing.T) {
	svcs := dataplanetest.Services(10)
	changed := withOneChange(svcs)
	differ := 0
	for k, v := range svcs {
		if changed[k] != v {
			differ++
			if k != changedKey(10) || changed[k].Backends[1].Addr.String() != "10.246.0.1" || v.Backends[1].Addr.String() == "10.246.0.1" {
				t.Errorf("%s changed to %+v from %+v", k, changed[k], v)
			}
		}
	}
	if differ != 1 || len(changed) != 10 {
		t.Errorf("%d of %d services differ, want 1 of 10", differ, len(changed))
	}
}
