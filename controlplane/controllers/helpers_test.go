package controllers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/util/retry"

	"github.com/skep-io/skep/controlplane/api"
	"github.com/skep-io/skep/controlplane/api/conditions"
	"github.com/skep-io/skep/controlplane/client"
	"github.com/skep-io/skep/controlplane/controllers/podstate"
	"github.com/skep-io/skep/internal/testwait"
)

var (
	podsR        = api.MustLookup("pods")
	nodesR       = api.MustLookup("nodes")
	leasesR      = api.MustLookup("leases")
	deploymentsR = api.MustLookup("deployments")
	replicaSetsR = api.MustLookup("replicasets")
	servicesR    = api.MustLookup("services")
	endpointsR   = api.MustLookup("endpoints")

	replicationControllersR = api.MustLookup("replicationcontrollers")
)

type object = api.Object

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("SKEP_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// fastConfig shortens every timer so node failure and leader failover
// happen within seconds.
func fastConfig(identity string) Config {
	return Config{
		Identity:               identity,
		NodeMonitorGracePeriod: 2 * time.Second,
		PodEvictionTimeout:     2 * time.Second,
		NodeMonitorPeriod:      200 * time.Millisecond,
		EndpointsBatchPeriod:   100 * time.Millisecond,
		LeaseDuration:          3 * time.Second,
		RenewDeadline:          2 * time.Second,
		RenewPeriod:            500 * time.Millisecond,
		RetryPeriod:            200 * time.Millisecond,
	}
}

// startManager runs a controller manager until stop or the test's end.
func startManager(t *testing.T, c client.Interface, cfg Config) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := Run(ctx, c, cfg, testLogger(t)); err != nil {
			t.Errorf("controllers.Run: %v", err)
		}
	}()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return stop
}

func mustCreate(t *testing.T, c client.Interface, r *api.Resource, obj api.Object) api.Object {
	t.Helper()
	out, err := c.Create(context.Background(), r, obj)
	if err != nil {
		t.Fatalf("create %s %s: %v", r.Kind, obj.GetName(), err)
	}
	return out
}

func ptr[T any](v T) *T { return &v }

func deploymentOf(name string, replicas int32, image string) *appsv1.Deployment {
	labels := map[string]string{"app": name}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: name, Image: image,
					Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}}}},
			},
		},
	}
}

func serviceOf(name string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": name},
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http")}}},
	}
}

func getDeployment(t *testing.T, c client.Interface, name string) *appsv1.Deployment {
	t.Helper()
	o, err := c.Get(context.Background(), deploymentsR, "default", name)
	if err != nil {
		t.Fatalf("get deployment %s: %v", name, err)
	}
	return o.(*appsv1.Deployment)
}

// updateDeployment applies change to the latest deployment, retrying on
// conflicts with the controller's writes.
func updateDeployment(t *testing.T, c client.Interface, name string, change func(d *appsv1.Deployment)) {
	t.Helper()
	err := retry.RetryOnConflict(retry.DefaultBackoff, func() error {
		d := getDeployment(t, c, name)
		change(d)
		_, err := c.Update(context.Background(), deploymentsR, d)
		return err
	})
	if err != nil {
		t.Fatalf("update deployment %s: %v", name, err)
	}
}

// activePods lists the pods of app that are not terminating.
func activePods(t *testing.T, c client.Interface, app string) []*corev1.Pod {
	t.Helper()
	objs, _, err := c.List(context.Background(), podsR, "default", client.ListOptions{LabelSelector: "app=" + app})
	if err != nil {
		t.Fatalf("list pods: %v", err)
	}
	var out []*corev1.Pod
	for _, o := range objs {
		if p := o.(*corev1.Pod); podstate.Active(p) {
			out = append(out, p)
		}
	}
	return out
}

// waitRolledOut waits until the deployment reports a finished rollout with
// every pod ready.
func waitRolledOut(t *testing.T, c client.Interface, name string, replicas int, timeout time.Duration) {
	t.Helper()
	testwait.For(t, timeout, 25*time.Millisecond, func() error {
		d := getDeployment(t, c, name)
		msg, done, err := deploymentRolloutStatus(d)
		if err != nil {
			t.Fatalf("rollout of %s: %v", name, err)
		}
		if !done {
			return errors.New(msg)
		}
		pods := activePods(t, c, name)
		ready := 0
		for _, p := range pods {
			if conditions.PodReady(p) {
				ready++
			}
		}
		if len(pods) != replicas || ready != replicas {
			return fmt.Errorf("deployment %s: %d active pods, %d ready; want %d", name, len(pods), ready, replicas)
		}
		return nil
	})
}
