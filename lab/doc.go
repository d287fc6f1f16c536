// Package lab builds a skep cluster on one machine: a Linux bridge plays the
// node network (198.18.<k>.0/24, a range never routed anywhere), each node is
// a network namespace with its own address, cgroup and `skep agent` (which
// runs its own containerd), the control plane is `skep server` in the host
// namespace, and a client namespace on the same bridge plays the world
// outside the cluster.
//
// Everything a lab makes is recorded in a state file before it is made, so
// Down removes it even after a crash half-way through Up. Processes are
// recognised by PID and start time, never by name.
package lab
