// Package network builds a node's pod network: one Linux bridge carrying the
// first address of the node's pod CIDR, one veth pair per pod with an address
// from that CIDR, a route to every other node's pod CIDR via that node's
// InternalIP, and masquerade for pod traffic leaving the cluster.
//
// It talks to the kernel through github.com/vishvananda/netlink and
// github.com/vishvananda/netns directly rather than through CNI plugins and
// libcni: the agent is one long-running process, so a pod's network costs a
// few netlink messages instead of an exec of three plugin binaries per pod;
// failures come back as typed Go errors (netlink.LinkNotFoundError, errno
// values) rather than JSON on a plugin's stdout; and the address allocator's
// state lives in the agent's own data directory, next to the rest of its
// state, where Cleanup can find and remove it.
//
// # Network namespaces
//
// Everything acts on the network namespace that was current on the thread
// that called New: the agent of a lab node runs inside its node's namespace,
// and a test may call New from a thread it moved into one. Network keeps a
// netlink handle opened in that namespace, so later calls may come from any
// goroutine. Sysctls under /proc/sys/net and the iptables commands are
// per-namespace too; they are done from a locked, throw-away OS thread that
// has entered the node's namespace, so no other goroutine ever runs in a
// borrowed namespace.
//
// # Bridged traffic and iptables
//
// Traffic between two pods of one node is switched by the bridge and never
// reaches iptables unless net.bridge.bridge-nf-call-iptables is 1. The
// iptables dataplane needs it: a pod that connects to a ClusterIP whose chosen
// backend is another pod on the same bridge gets its reply switched straight
// back, bypassing the conntrack entry that would undo the DNAT. New sets it to
// 1 when the br_netfilter module is present (the sysctl exists, per network
// namespace since Linux 5.3) and logs a warning when it is absent; the eBPF
// dataplane does not need it, because it rewrites the destination at
// connect() time, before any packet exists. Hairpin mode is on for every pod's
// bridge port so that a pod whose Service sends it back to itself gets its
// packets back out of the port they came in on.
//
// # What it leaves on the node
//
// A bridge (default "skep0"), host-side veths named "veth" plus 8 hex digits
// of a hash of the pod ID, routes tagged with RouteProtocol, the nat chain
// SKEP-POD-MASQ jumped to from POSTROUTING, the filter chain SKEP-POD-FWD
// appended to FORWARD (accepting pod traffic on hosts whose FORWARD policy is
// DROP), and address records under <DataDir>/ipam. Cleanup removes all of it.
// It turns net.ipv4.ip_forward on and leaves it on: other software on the node
// may rely on it.
package network
