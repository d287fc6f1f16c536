// Package traffic measures the service dataplane's data path on a lab
// cluster: `skep-bench dataplane` (a client pod to echo servers on another
// node, directly to the pod IPs, through an eBPF ClusterIP and through an
// iptables and an nftables ClusterIP) and `skep-bench nodeport` (from
// outside the cluster through a NodePort, backend local and remote, every
// mode), each with N other Services installed.
//
// The lab runs one dataplane mode at a time; the benchmark switches its
// agents between eBPF, iptables and nftables as the interleaved variants need it
// (lab.SwitchDataplane). The load generator (ClientMain, `skep-bench
// client`) is skep-bench itself, started with nsenter in the client's
// network namespace and in a cgroup below the client's node: the node's
// socket programs apply to it as to the node's pods, and its CPU time
// counts as the node's. It measures connections per second with one
// request per connection (crr), requests per second on kept-alive
// connections (rr), their latency, and the CPU time of given cgroups over
// its measured window, and, in eBPF mode, what the kernel counted for each
// of the nodes' eBPF programs over the same window (bpf_stats: ns per run
// and runs per connection). Samples go into a bench/report Report.
//
// All traffic stays inside the lab's namespaces: pod IPs, ClusterIPs and
// the nodes' addresses on the lab's bridge.
package traffic
