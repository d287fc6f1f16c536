// Package dataplane is what the agent programs so that Services answer: the
// Dataplane interface, the Service model both implementations take, and the
// translation from Kubernetes Services and Endpoints into that model.
//
// Three implementations sit behind the interface, chosen once by
// `skep agent --dataplane=ebpf|iptables|nftables`: agent/dataplane/ebpf,
// agent/dataplane/iptables and agent/dataplane/nftables. No other code
// knows which one runs.
package dataplane

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// Modes are the implementations as `--dataplane` names them; the first is
// the default.
var Modes = []string{"ebpf", "iptables", "nftables"}

// CheckMode says what is wrong with a dataplane name, or nil.
func CheckMode(mode string) error {
	if slices.Contains(Modes, mode) {
		return nil
	}
	return fmt.Errorf("dataplane %q: allowed are %s", mode, strings.Join(Modes, ", "))
}

// Protocol is the L4 protocol of a service port.
type Protocol string

const (
	TCP Protocol = "TCP"
	UDP Protocol = "UDP"
)

// ServiceKey names one port of one Service: the unit a dataplane programs,
// as kube-proxy's ServicePortName is.
type ServiceKey struct {
	Namespace string
	Name      string
	Port      string // the port's name; "" for a single unnamed port
	Protocol  Protocol
}

func (k ServiceKey) String() string {
	if k.Port == "" {
		return fmt.Sprintf("%s/%s:%s", k.Namespace, k.Name, k.Protocol)
	}
	return fmt.Sprintf("%s/%s:%s/%s", k.Namespace, k.Name, k.Port, k.Protocol)
}

// Service is one service port with everything a dataplane needs to answer it.
type Service struct {
	Key ServiceKey

	ClusterIP netip.Addr // invalid for headless services, which are never programmed
	Port      uint16     // the service port clients address on ClusterIP and LB IPs

	// NodePort is the port answered on every node address; 0 when the
	// Service has none.
	NodePort uint16

	// LoadBalancerIPs are the addresses of status.loadBalancer.ingress.
	LoadBalancerIPs []netip.Addr

	// ExternalIPs are spec.externalIPs, answered like LoadBalancer addresses.
	ExternalIPs []netip.Addr

	// ExternalPolicyLocal is externalTrafficPolicy: Local: traffic from
	// outside the node goes only to backends on this node and keeps its
	// source address.
	ExternalPolicyLocal bool

	// AffinityTimeout is sessionAffinity: ClientIP's timeout; 0 means no
	// affinity.
	AffinityTimeout time.Duration

	// Backends are all endpoints of the port, ready or not. Only Ready ones
	// that are not Terminating receive new connections.
	Backends []Backend
}

// Backend is one endpoint of a service port.
type Backend struct {
	Addr        netip.Addr
	Port        uint16
	NodeName    string
	Local       bool // runs on this node
	Ready       bool
	Terminating bool
}

// Serving reports whether the backend may take new connections.
func (b Backend) Serving() bool { return b.Ready && !b.Terminating }

// ServingBackends returns the backends that may take new connections, in order.
func (s *Service) ServingBackends() []Backend {
	var out []Backend
	for _, b := range s.Backends {
		if b.Serving() {
			out = append(out, b)
		}
	}
	return out
}

// Dataplane programs services into the node's kernel.
//
// The desired state arrives in two ways. Sync is a full reconcile: it is
// given the complete desired state and makes the kernel carry exactly that,
// whatever it held before (at start, periodically, after an error). Apply
// is an incremental change: it is given only the service ports that
// changed, each with its new state or nil for a removed one, and writes
// those ports' entries and nothing else, so one change among thousands of
// services costs one service. One changed Service (all its ports) is one
// Apply, the unit a per-Service change message (from informers or NATS)
// carries.
//
// The first Sync after start (or after a restart that found state left by
// an earlier run) must converge without a window where a programmed service
// has no backends. After any sequence of Sync and Apply calls the kernel
// holds what one Sync of the accumulated desired state would write.
type Dataplane interface {
	// Sync makes the dataplane carry exactly services.
	Sync(ctx context.Context, services map[ServiceKey]*Service) error
	// Apply changes the service ports in changed to their new state (nil:
	// removed) and leaves every other port as it is. Apply before the
	// first Sync returns ErrNeedFullSync; after a failed Sync or Apply the
	// caller should Sync the complete state (Apply may also return
	// ErrNeedFullSync when it cannot tell what the kernel holds).
	Apply(ctx context.Context, changed map[ServiceKey]*Service) error
	// Services reports what the dataplane holds now, read back from the
	// kernel (maps or rules), for `skep dataplane services`.
	Services(ctx context.Context) ([]Service, error)
	// Close releases user-space resources and leaves the programmed state in
	// place, so traffic flows while the agent restarts.
	Close() error
	// Cleanup removes everything the implementation ever made on this node.
	Cleanup(ctx context.Context) error
}

// ErrNeedFullSync is returned by Apply when only a full Sync can go on:
// none has been made yet, or a failed write left the kernel in a state the
// dataplane cannot vouch for.
var ErrNeedFullSync = errors.New("dataplane: a full sync is needed first")
