// Package kubectlstreams proves that Debian's kubectl (1.32) opens its
// streams through a real skep cluster: exec (stdin, a terminal, exit
// codes, 50 MiB byte for byte, a minute of silence, the process ending
// with the client), attach, cp, port-forward of two ports under load,
// logs (follow, previous, timestamps, tail, since), run -i --rm, and a
// node's credential refused for exec, attach and port-forward. It also
// logs the throughput of kubectl exec and port-forward beside the same
// copy without the API server.
//
// One lab (lab.Up: a server and one node whose agent runs containerd,
// with the test images imported) serves the whole package; its tests
// run kubectl with the lab's admin.conf, in parallel, and the lab is
// taken down, with a check that nothing is left, when they end.
//
// The package has only tests.
package kubectlstreams
