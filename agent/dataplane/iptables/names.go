package iptables

import (
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/skep-io/skep/agent/dataplane"
)

// DefaultChainPrefix is the prefix of every chain the proxier makes unless
// Config.ChainPrefix says otherwise: kube-proxy's own.
const DefaultChainPrefix = "KUBE"

// maxChainNameLen is the longest chain name iptables accepts
// (XT_EXTENSION_MAXNAMELEN less the terminating NUL).
const maxChainNameLen = 28

// The longest suffixes a prefix is joined to: "-EXTERNAL-SERVICES" among the
// fixed chains, and "-SVC-" plus a 16 character hash among the per-service
// ones. A prefix longer than maxPrefixLen would make names iptables refuses.
const maxPrefixLen = maxChainNameLen - len("-SVC-") - hashLen

// hashLen is how much of the base32 SHA-256 a chain name keeps, as kube-proxy:
// 16 characters of base32 are 80 bits, enough that two service ports of one
// cluster never collide in practice, and short enough to read.
const hashLen = 16

var prefixPattern = regexp.MustCompile(`^[A-Z][A-Z0-9]*$`)

// validPrefix reports why a chain prefix cannot be used, or nil.
func validPrefix(prefix string) error {
	if !prefixPattern.MatchString(prefix) {
		return fmt.Errorf("chain prefix %q: must be upper-case letters and digits, starting with a letter", prefix)
	}
	if len(prefix) > maxPrefixLen {
		return fmt.Errorf("chain prefix %q: at most %d characters, so that chain names stay within %d", prefix, maxPrefixLen, maxChainNameLen)
	}
	return nil
}

// chainNames are the fixed chains of one proxier, all named from its prefix.
type chainNames struct {
	prefix string

	services         string // nat and filter: entry from PREROUTING/OUTPUT (nat), FORWARD/OUTPUT (filter)
	externalServices string // filter: rejects external traffic to services without endpoints
	forward          string // filter: accepts forwarded service traffic
	nodePorts        string // nat: node ports, the last jump of services
	postrouting      string // nat: masquerades marked packets
	markMasq         string // nat: marks packets for masquerade
	canary           string // mangle: empty chain whose disappearance means someone flushed the tables
}

func newChainNames(prefix string) chainNames {
	return chainNames{
		prefix:           prefix,
		services:         prefix + "-SERVICES",
		externalServices: prefix + "-EXTERNAL-SERVICES",
		forward:          prefix + "-FORWARD",
		nodePorts:        prefix + "-NODEPORTS",
		postrouting:      prefix + "-POSTROUTING",
		markMasq:         prefix + "-MARK-MASQ",
		canary:           prefix + "-PROXY-CANARY",
	}
}

// Per-service chain kinds, as kube-proxy names them.
const (
	kindSVC = "-SVC-" // dispatch to all serving endpoints (Cluster policy)
	kindSVL = "-SVL-" // dispatch to local serving endpoints (Local policy)
	kindEXT = "-EXT-" // external traffic (NodePort, LoadBalancer, external IPs)
	kindSEP = "-SEP-" // one endpoint: masquerade hairpin, DNAT
	kindFW  = "-FW-"  // kube-proxy's loadBalancerSourceRanges chain; never made here, but cleaned up
)

// isServiceChain reports whether a chain is one of the per-service chains of
// this prefix (the ones a sync deletes when they are no longer used).
func (c chainNames) isServiceChain(chain string) bool {
	if !strings.HasPrefix(chain, c.prefix) {
		return false
	}
	rest := chain[len(c.prefix):]
	for _, kind := range []string{kindSVC, kindSVL, kindEXT, kindSEP, kindFW} {
		if strings.HasPrefix(rest, kind) {
			return true
		}
	}
	return false
}

// isOwnChain reports whether a chain of the given table was made by a proxier
// with this prefix: the fixed ones and the per-service ones.
func (c chainNames) isOwnChain(table, chain string) bool {
	switch table {
	case "nat":
		return chain == c.services || chain == c.nodePorts || chain == c.postrouting ||
			chain == c.markMasq || chain == c.canary || c.isServiceChain(chain)
	case "filter":
		return chain == c.services || chain == c.externalServices || chain == c.forward ||
			chain == c.nodePorts || chain == c.canary || chain == c.prefix+"-PROXY-FIREWALL"
	case "mangle":
		return chain == c.canary
	}
	return false
}

// portName is kube-proxy's ServicePortName.String(): "ns/name:port", or
// "ns/name" for an unnamed port. Comments and hashes are built from it.
func portName(k dataplane.ServiceKey) string {
	if k.Port == "" {
		return k.Namespace + "/" + k.Name
	}
	return k.Namespace + "/" + k.Name + ":" + k.Port
}

// protoLower is the protocol as iptables and kube-proxy's hashes spell it.
func protoLower(p dataplane.Protocol) string { return strings.ToLower(string(p)) }

// hashName is base32(sha256(parts...)) cut to hashLen, kube-proxy's
// portProtoHash and servicePortEndpointChainName, so the same service gets
// the same chain name from kube-proxy and from skep.
func hashName(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write([]byte(p))
	}
	encoded := base32.StdEncoding.EncodeToString(h.Sum(nil))
	return encoded[:hashLen]
}

// serviceChain names a per-service chain (kindSVC, kindSVL, kindEXT).
func (c chainNames) serviceChain(kind string, k dataplane.ServiceKey) string {
	return c.prefix + kind + hashName(portName(k), protoLower(k.Protocol))
}

// endpointChain names the KUBE-SEP- chain of one endpoint of a service port;
// endpoint is "ip:port".
func (c chainNames) endpointChain(k dataplane.ServiceKey, endpoint string) string {
	return c.prefix + kindSEP + hashName(portName(k), protoLower(k.Protocol), endpoint)
}

// probability is the --probability of the i-th of n remaining endpoints,
// printed as kube-proxy prints it.
func probability(n int) string {
	return strconv.FormatFloat(1.0/float64(n), 'f', 10, 64)
}
