// Package kubectl proves that Debian's kubectl (1.32), unchanged and with
// no flag beyond --kubeconfig, works against a real `skep server`: its
// tests run kubectl as a user does, with the admin.conf the server writes,
// and check what kubectl printed (tables, messages, YAML, JSON), not only
// that it exited 0. The verbs are those of issue 13: discovery and
// explain, get in every output, create/apply/diff/edit/patch with the
// server's field validation and server-side apply, label, annotate, scale,
// rollout, set image, wait, describe, delete (dry run and cascades),
// cordon, drain, auth and the create generators.
//
// One server serves the whole package (TestMain builds cmd/skep and runs
// it); simulated nodes from controlplane/nodetest stand in for agents, so
// pods run and become ready, and Deployments Available, without
// containerd. Each test works in its own namespace, and all but the
// drain test run in parallel.
//
// The package has only tests.
package kubectl
