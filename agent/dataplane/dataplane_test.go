package dataplane

import (
	"strings"
	"testing"
)

func TestCheckMode(t *testing.T) {
	for _, mode := range []string{"ebpf", "iptables", "nftables"} {
		if err := CheckMode(mode); err != nil {
			t.Errorf("CheckMode(%q) = %v, want nil", mode, err)
		}
	}
	err := CheckMode("ipvs")
	if err == nil || !strings.Contains(err.Error(), `dataplane "ipvs": allowed are ebpf, iptables, nftables`) {
		t.Errorf("CheckMode(ipvs) = %v, want it to name the allowed modes", err)
	}
}
