package nftables

import (
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"

	"github.com/skep-io/skep/agent/dataplane"
)

// DefaultTable is the table every rule lives in unless Config.Table says
// otherwise: kube-proxy's own, so that `nft list table ip kube-proxy` shows
// users what they know. skep replaces kube-proxy on its nodes, so the two
// never share one.
const DefaultTable = "kube-proxy"

// The fixed chains, maps and sets, named as kube-proxy names them. Being in
// a table of their own they need no prefix.
const (
	servicesChain       = "services"          // nat: dispatch by the two maps below
	serviceIPsMap       = "service-ips"       // cluster, external and load balancer address . proto . port -> chain
	serviceNodePortsMap = "service-nodeports" // proto . node port -> external chain
	nodePortIPsSet      = "nodeport-ips"      // where node ports answer, when Config.NodeIPs is set
	clusterIPsSet       = "cluster-ips"       // every programmed ClusterIP, for cluster-ips-check

	serviceEndpointsCheckChain  = "service-endpoints-check"  // filter: @no-endpoint-services
	nodePortEndpointsCheckChain = "nodeport-endpoints-check" // filter: @no-endpoint-nodeports
	noEndpointServicesMap       = "no-endpoint-services"     // address . proto . port -> reject or drop
	noEndpointNodePortsMap      = "no-endpoint-nodeports"    // proto . node port -> reject or drop
	rejectChain                 = "reject-chain"             // a verdict map cannot say reject: it goes here
	clusterIPsCheckChain        = "cluster-ips-check"        // filter: what nat left addressed to the service range

	forwardChain = "forward" // filter: drops what conntrack finds invalid

	markMasqChain     = "mark-for-masquerade"
	masqueradingChain = "masquerading"
)

// The prefixes of per-service chains and sets, kube-proxy's.
const (
	clusterChainPrefix  = "service-"  // dispatch to all serving endpoints
	localChainPrefix    = "local-"    // dispatch to this node's serving endpoints (Local policy)
	externalChainPrefix = "external-" // NodePort, LoadBalancer and external IP traffic
	endpointChainPrefix = "endpoint-" // one endpoint: hairpin masquerade, affinity record, DNAT
	affinitySetPrefix   = "affinity-" // one endpoint's ClientIP affinity: source addresses with a timeout
)

// masqueradeMark is kube-proxy's default mark (bit 14) for packets that the
// masquerading chain must source-NAT.
const masqueradeMark = "0x4000"

// nameLengthMax is the longest name nftables accepts for a chain or set
// (NFT_NAME_MAXLEN less the NUL); baseLengthMax leaves room for the
// longest prefix, so that no prefix ever has to be cut.
const (
	nameLengthMax = 256 - 1
	baseLengthMax = nameLengthMax - 16
)

var tablePattern = regexp.MustCompile(`^[a-z][a-z0-9-]{0,63}$`)

// validTable reports why a table name cannot be used, or nil.
func validTable(name string) error {
	if !tablePattern.MatchString(name) {
		return fmt.Errorf("table %q: must be 1 to 64 lower-case letters, digits and '-', starting with a letter", name)
	}
	return nil
}

// hashedName is kube-proxy's hashAndTruncate: 8 characters of the base32
// SHA-256 of base in front of base. The hash tells apart at a glance chains
// whose names differ in one digit far to the right (two endpoints of one
// service), and keeps names unique should base ever be cut.
func hashedName(base string) string {
	sum := sha256.Sum256([]byte(base))
	name := base32.StdEncoding.EncodeToString(sum[:])[:8] + "-" + base
	if len(name) > baseLengthMax {
		name = name[:baseLengthMax-3] + "..."
	}
	return name
}

// portBase is "namespace/name/protocol/port", as kube-proxy builds it: the
// parts can hold only [a-z0-9-], so "/" separates them unambiguously and is
// allowed in nftables names.
func portBase(k dataplane.ServiceKey) string {
	return k.Namespace + "/" + k.Name + "/" + protoLower(k.Protocol) + "/" + k.Port
}

// serviceChain names a per-service chain (clusterChainPrefix,
// localChainPrefix, externalChainPrefix).
func serviceChain(prefix string, k dataplane.ServiceKey) string {
	return prefix + hashedName(portBase(k))
}

// endpointBase is the base of an endpoint's chain and affinity set:
// the service's base, "__", and the endpoint's "ip/port".
func endpointBase(k dataplane.ServiceKey, ep netip.AddrPort) string {
	return hashedName(portBase(k) + "__" + ep.Addr().String() + "/" + strconv.Itoa(int(ep.Port())))
}

func endpointChain(k dataplane.ServiceKey, ep netip.AddrPort) string {
	return endpointChainPrefix + endpointBase(k, ep)
}

func affinitySet(k dataplane.ServiceKey, ep netip.AddrPort) string {
	return affinitySetPrefix + endpointBase(k, ep)
}

// isServiceChain: per-service chains are the only ones with a "/" (the
// fixed ones have none), which is how a full sync finds leftovers.
func isServiceChain(name string) bool { return strings.Contains(name, "/") }

func isAffinitySet(name string) bool { return strings.HasPrefix(name, affinitySetPrefix) }

// parseChainKey reads the service port back from a per-service chain's
// name ("service-HASH-ns/name/tcp/port").
func parseChainKey(chain string) (dataplane.ServiceKey, bool) {
	_, rest, ok := strings.Cut(chain, "-")
	if !ok {
		return dataplane.ServiceKey{}, false
	}
	_, base, ok := strings.Cut(rest, "-") // the hash
	if !ok {
		return dataplane.ServiceKey{}, false
	}
	base, _, _ = strings.Cut(base, "__") // an endpoint's part
	parts := strings.Split(base, "/")
	if len(parts) != 4 || parts[0] == "" || parts[1] == "" {
		return dataplane.ServiceKey{}, false
	}
	return dataplane.ServiceKey{Namespace: parts[0], Name: parts[1], Port: parts[3],
		Protocol: dataplane.Protocol(strings.ToUpper(parts[2]))}, true
}

// portName is kube-proxy's ServicePortName.String(): "ns/name:port", or
// "ns/name" for an unnamed port; the comment of no-endpoint elements.
func portName(k dataplane.ServiceKey) string {
	if k.Port == "" {
		return k.Namespace + "/" + k.Name
	}
	return k.Namespace + "/" + k.Name + ":" + k.Port
}

// parsePortName reads a portName and a protocol back into a key.
func parsePortName(name, proto string) (dataplane.ServiceKey, bool) {
	ns, rest, ok := strings.Cut(name, "/")
	if !ok || ns == "" || rest == "" {
		return dataplane.ServiceKey{}, false
	}
	svc, port, _ := strings.Cut(rest, ":")
	return dataplane.ServiceKey{Namespace: ns, Name: svc, Port: port, Protocol: dataplane.Protocol(strings.ToUpper(proto))}, true
}

func protoLower(p dataplane.Protocol) string { return strings.ToLower(string(p)) }
