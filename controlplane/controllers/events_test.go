package controllers

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skep-io/skep/controlplane/api"
	"github.com/skep-io/skep/controlplane/apiserver/apiservertest"
	"github.com/skep-io/skep/controlplane/client"
	"github.com/skep-io/skep/controlplane/controllers/deployment"
	"github.com/skep-io/skep/controlplane/nodetest"
	"github.com/skep-io/skep/internal/testwait"
)

// eventLines lists the Events about one object as "Reason From: Message",
// what `kubectl describe` shows of them.
func eventLines(t *testing.T, c client.Interface, kind, ns, name string) []string {
	t.Helper()
	sel := fmt.Sprintf("involvedObject.kind=%s,involvedObject.name=%s,involvedObject.namespace=%s", kind, name, ns)
	objs, _, err := c.List(context.Background(), api.MustLookup("events"), "", client.ListOptions{FieldSelector: sel})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, o := range objs {
		e := o.(*corev1.Event)
		out = append(out, fmt.Sprintf("%s %s: %s", e.Reason, e.Source.Component, e.Message))
	}
	slices.Sort(out)
	return out
}

// TestControllersRecordEvents runs the controller manager through a
// deployment's scale up and down and a node's failure and return, and
// checks the Events kubectl describe would show on the Deployment, its
// ReplicaSet, a pod and the node.
func TestControllersRecordEvents(t *testing.T) {
	c := apiservertest.Start(t)
	k := nodetest.Start(t, c, "node-1")
	startManager(t, c, fastConfig("cm-1"))
	mustCreate(t, c, deploymentsR, deploymentOf("web", 2, "web:v1"))
	waitRolledOut(t, c, "web", 2, 20*time.Second)
	pods := activePods(t, c, "web")
	rs := "web-" + pods[0].Labels[deployment.PodTemplateHashLabel]
	updateDeployment(t, c, "web", func(d *appsv1.Deployment) { d.Spec.Replicas = ptr(int32(1)) })
	waitRolledOut(t, c, "web", 1, 20*time.Second)

	testwait.For(t, 10*time.Second, 25*time.Millisecond, func() error {
		want := []string{
			"ScalingReplicaSet deployment-controller: Scaled down replica set " + rs + " from 2 to 1",
			"ScalingReplicaSet deployment-controller: Scaled up replica set " + rs + " from 0 to 2",
		}
		if got := eventLines(t, c, "Deployment", "default", "web"); !slices.Equal(got, want) {
			return fmt.Errorf("events of deployment web: %q, want %q", got, want)
		}
		got := eventLines(t, c, "ReplicaSet", "default", rs)
		want = []string{
			"SuccessfulCreate replicaset-controller: Created pod: " + pods[0].Name,
			"SuccessfulCreate replicaset-controller: Created pod: " + pods[1].Name,
		}
		slices.Sort(want)
		creates := slices.DeleteFunc(slices.Clone(got), func(s string) bool { return !strings.HasPrefix(s, "SuccessfulCreate") })
		deletes := slices.DeleteFunc(slices.Clone(got), func(s string) bool { return !strings.HasPrefix(s, "SuccessfulDelete") })
		if !slices.Equal(creates, want) || len(deletes) != 1 || !strings.HasPrefix(deletes[0], "SuccessfulDelete replicaset-controller: Deleted pod: web-") {
			return fmt.Errorf("events of replicaset %s: %q; want %q and one SuccessfulDelete", rs, got, want)
		}
		for _, p := range pods {
			want := []string{"Scheduled default-scheduler: Successfully assigned default/" + p.Name + " to node-1"}
			if got := eventLines(t, c, "Pod", "default", p.Name); !slices.Equal(got, want) {
				return fmt.Errorf("events of pod %s: %q, want %q", p.Name, got, want)
			}
		}
		return nil
	})

	k.SetAlive("node-1", false)
	testwait.For(t, 10*time.Second, 25*time.Millisecond, func() error {
		want := []string{"NodeNotReady node-controller: Node node-1 status is now: NodeNotReady"}
		if got := eventLines(t, c, "Node", "", "node-1"); !slices.Equal(got, want) {
			return fmt.Errorf("events of node-1: %q, want %q", got, want)
		}
		return nil
	})
	k.SetAlive("node-1", true)
	testwait.For(t, 10*time.Second, 25*time.Millisecond, func() error {
		got := eventLines(t, c, "Node", "", "node-1")
		if !slices.Contains(got, "NodeReady node-controller: Node node-1 status is now: NodeReady") {
			return fmt.Errorf("events of node-1: %q, want a NodeReady", got)
		}
		return nil
	})
	objs, _, err := c.List(context.Background(), api.MustLookup("events"), "default", client.ListOptions{FieldSelector: "involvedObject.name=node-1"})
	if err != nil || len(objs) == 0 || objs[0].GetNamespace() != metav1.NamespaceDefault {
		t.Errorf("node events %v, %v; want them in the default namespace", objs, err)
	}
}
