package e2e

import (
	"context"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/skep-io/skep/controlplane/api"
	"github.com/skep-io/skep/controlplane/client"
)

// testControlPlaneDown kills the server (API, controllers and NATS at
// once) while a client keeps using a Service: the nodes keep their pods
// and dataplanes, so nothing fails; once the server is back, the agents
// resync and take new work.
func testControlPlaneDown(t *testing.T, cl *cluster) {
	url := "http://" + cl.clusterIP(t, "echo") + "/"
	node := cl.lab.Nodes()[0]
	before := map[string]bool{}
	for _, n := range cl.lab.Nodes() {
		for uid := range podUIDsOn(t, cl, n) {
			before[uid] = true
		}
	}
	result := cl.steadyClient(node, url, 12*time.Second)
	time.Sleep(time.Second)
	if err := cl.lab.KillServer(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(8 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := cl.lab.StartServer(ctx); err != nil {
		t.Fatal(err)
	}
	r := <-result
	if r.failed != 0 || r.ok < 10 {
		t.Fatalf("steady client on %s while the server was down for 8s: %d succeeded, %d failed; want none failed\n%s", node, r.ok, r.failed, r.failures)
	}
	after := map[string]bool{}
	for _, n := range cl.lab.Nodes() {
		for uid := range podUIDsOn(t, cl, n) {
			after[uid] = true
		}
	}
	for uid := range before {
		if !after[uid] {
			t.Errorf("pod %s was lost while the server was down", uid)
		}
	}
	// The agents are back on the API: a scale-up runs and is served.
	cl.skep(t, "scale", "deploy", "echo", "--replicas", "4")
	cl.waitReadyReplicas(t, 4, time.Minute)
	cl.skep(t, "scale", "deploy", "echo", "--replicas", "3")
	cl.waitReadyReplicas(t, 3, time.Minute)
	r.logSlow(t)
	t.Logf("server killed for 8s: %d requests from %s through the ClusterIP, none failed; all %d pods kept; after its restart the agents took a scale to 4 and back", r.ok, node, len(before))
}

// testPodDeletedWhileAgentAway stops a node's agent, deletes one of its
// pods at once (grace period 0: it leaves the API immediately), and starts
// the agent again: the agent removes the pod's containers and cgroup.
func testPodDeletedWhileAgentAway(t *testing.T, cl *cluster) {
	node := cl.lab.Nodes()[1]
	objs, _, err := cl.c.List(context.Background(), api.MustLookup("pods"), "default",
		client.ListOptions{LabelSelector: "app=echo", FieldSelector: "spec.nodeName=" + node})
	if err != nil || len(objs) == 0 {
		t.Fatalf("no echo pod on %s to delete: %v", node, err)
	}
	victim := objs[0].(*corev1.Pod)
	cgroup := "pod" + string(victim.UID)
	if !cgroupExists(cgroup) {
		t.Fatalf("pod %s on %s has no cgroup %s before the test", victim.Name, node, cgroup)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := cl.lab.StopAgent(ctx, node); err != nil {
		t.Fatal(err)
	}
	cl.skep(t, "delete", "pod", victim.Name, "--grace-period", "0")
	time.Sleep(time.Second)
	if !cgroupExists(cgroup) {
		t.Fatalf("pod %s's cgroup went while the agent of %s was stopped: nobody else should remove it", victim.Name, node)
	}
	if err := cl.lab.StartAgent(ctx, node); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for cgroupExists(cgroup) {
		if time.Now().After(deadline) {
			t.Fatalf("30s after the agent of %s came back, pod %s (deleted while it was away) still has its cgroup", node, victim.Name)
		}
		time.Sleep(250 * time.Millisecond)
	}
	cl.waitReadyReplicas(t, 3, time.Minute)
	t.Logf("pod %s deleted while the agent of %s was stopped: removed once it came back", victim.Name, node)
}

// cgroupExists reports whether a cgroup directory of that name exists
// anywhere in the cgroup2 hierarchy.
func cgroupExists(name string) bool {
	found := false
	_ = filepath.WalkDir("/sys/fs/cgroup/unified", func(p string, d fs.DirEntry, err error) error {
		if err != nil || found {
			return fs.SkipDir
		}
		if d.IsDir() && strings.HasSuffix(p, "/"+name) {
			found = true
			return fs.SkipAll
		}
		return nil
	})
	return found
}
