package dns

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
)

// Name is the DNS name of svc in the cluster domain (DefaultDomain when
// empty), without the trailing dot: "<svc>.<ns>.svc.<domain>".
func Name(svc *corev1.Service, domain string) string {
	ns := svc.Namespace
	if ns == "" {
		ns = corev1.NamespaceDefault
	}
	return svc.Name + "." + ns + ".svc." + domainOrDefault(domain)
}

// ResolvConf is the /etc/resolv.conf a pod of namespace gets: the node's
// resolver (an IP address; resolv.conf has no port, so a ":53" given with it
// is dropped), the Kubernetes search path and ndots:5, so that "web",
// "web.ns" and "web.ns.svc" all reach the service through the search list.
func ResolvConf(nameserver string, namespace string, domain string) []byte {
	if host, _, err := net.SplitHostPort(nameserver); err == nil {
		nameserver = host
	}
	domain = domainOrDefault(domain)
	search := []string{"svc." + domain, domain}
	if namespace != "" {
		search = append([]string{namespace + ".svc." + domain}, search...)
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "nameserver %s\n", nameserver)
	fmt.Fprintf(&b, "search %s\n", strings.Join(search, " "))
	b.WriteString("options ndots:5\n")
	return b.Bytes()
}

func domainOrDefault(domain string) string {
	d := strings.ToLower(strings.TrimSuffix(strings.TrimSpace(domain), "."))
	if d == "" {
		return DefaultDomain
	}
	return d
}

// resolvConfUpstreams reads the nameservers of a resolv.conf file as
// "ip:port".
func resolvConfUpstreams(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read upstreams from %s: %w", path, err)
	}
	defer f.Close()
	cc, err := dns.ClientConfigFromReader(f)
	if err != nil {
		return nil, fmt.Errorf("read upstreams from %s: %w", path, err)
	}
	var out []string
	for _, server := range cc.Servers {
		out = append(out, net.JoinHostPort(server, cc.Port))
	}
	return out, nil
}
