// Package dataplanetest makes the synthetic Services that the dataplanes'
// benchmarks and `skep-bench sync` program, so that their figures are of
// the same input.
package dataplanetest

import (
	"fmt"
	"net/netip"

	"github.com/skep-io/skep/agent/dataplane"
)

// Key is the key of the i-th synthetic Service.
func Key(i int) dataplane.ServiceKey {
	return dataplane.ServiceKey{Namespace: "bench", Name: fmt.Sprintf("svc-%05d", i), Protocol: dataplane.TCP}
}

// Services makes n ClusterIP Services (n at most 65,536) of two ready
// backends each, named bench/svc-00000 ..., with ClusterIPs in
// 10.96.0.0/16 and backends in 10.244.0.0/16 and 10.245.0.0/16.
func Services(n int) map[dataplane.ServiceKey]*dataplane.Service {
	out := make(map[dataplane.ServiceKey]*dataplane.Service, n)
	for i := range n {
		hi, lo := byte(i>>8), byte(i)
		key := Key(i)
		out[key] = &dataplane.Service{
			Key:       key,
			ClusterIP: netip.AddrFrom4([4]byte{10, 96, hi, lo}),
			Port:      80,
			Backends: []dataplane.Backend{
				{Addr: netip.AddrFrom4([4]byte{10, 244, hi, lo}), Port: 8080, Ready: true},
				{Addr: netip.AddrFrom4([4]byte{10, 245, hi, lo}), Port: 8080, Ready: true},
			},
		}
	}
	return out
}
