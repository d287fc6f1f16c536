package apiserver_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skep-io/skep/controlplane/api"
	"github.com/skep-io/skep/controlplane/apiserver"
	"github.com/skep-io/skep/controlplane/apiserver/apiservertest"
	"github.com/skep-io/skep/controlplane/client"
)

var (
	pods     = api.MustLookup("pods")
	services = api.MustLookup("services")
	nodes    = api.MustLookup("nodes")
	quotas   = api.MustLookup("resourcequotas")
	deploys  = api.MustLookup("deployments")
)

func httpClient(t *testing.T, s *apiservertest.Server, token string) *client.HTTP {
	t.Helper()
	c, err := client.New(client.Config{Server: s.URL, CAPEM: s.CAPEM, Token: token})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func svc(name string, mutate func(*corev1.Service)) *corev1.Service {
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": name},
			Ports:    []corev1.ServicePort{{Port: 80}},
		},
	}
	if mutate != nil {
		mutate(s)
	}
	return s
}

// TestRejectsBadInput sends documents as a user writes them and checks the
// answer is a 422 or 400 naming the field and saying what is allowed.
func TestRejectsBadInput(t *testing.T) {
	s := apiservertest.StartServer(t)
	admin := httpClient(t, s, s.AdminToken)
	ctx := t.Context()
	if _, err := admin.Create(ctx, services, svc("taken", func(s *corev1.Service) {
		s.Spec.Type = corev1.ServiceTypeNodePort
		s.Spec.Ports[0].NodePort = 30080
	})); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name     string
		resource *api.Resource
		doc      string
		code     int32
		mentions []string
	}{
		{"unknown field", pods, `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"name":"c","image":"i"}],"volumns":[]}}`,
			400, []string{"spec.volumns", "unknown field"}}, // Kubernetes' strict decoding error
		{"uppercase name", pods, `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"Pod1"},"spec":{"containers":[{"name":"c","image":"i"}]}}`,
			422, []string{"metadata.name", `"Pod1"`, "lowercase RFC 1123"}},
		{"port out of range", services, `{"apiVersion":"v1","kind":"Service","metadata":{"name":"s1"},"spec":{"ports":[{"port":70000}]}}`,
			422, []string{"spec.ports[0].port", "between 1 and 65535"}},
		{"bad protocol", services, `{"apiVersion":"v1","kind":"Service","metadata":{"name":"s2"},"spec":{"ports":[{"port":80,"protocol":"ICMP"}]}}`,
			422, []string{"spec.ports[0].protocol", `"SCTP", "TCP", "UDP"`}},
		{"nodePort on ClusterIP", services, `{"apiVersion":"v1","kind":"Service","metadata":{"name":"s3"},"spec":{"ports":[{"port":80,"nodePort":31122}]}}`,
			422, []string{"spec.ports[0].nodePort", "may not be used when `type` is 'ClusterIP'"}},
		{"duplicate nodePort", services, `{"apiVersion":"v1","kind":"Service","metadata":{"name":"s4"},"spec":{"type":"NodePort","ports":[{"port":80,"nodePort":30080}]}}`,
			422, []string{"spec.ports[0].nodePort", "30080", "already allocated", "default/taken"}},
		{"nodePort out of range", services, `{"apiVersion":"v1","kind":"Service","metadata":{"name":"s5"},"spec":{"type":"NodePort","ports":[{"port":80,"nodePort":80}]}}`,
			422, []string{"spec.ports[0].nodePort", "30000-32767"}},
		{"clusterIP out of range", services, `{"apiVersion":"v1","kind":"Service","metadata":{"name":"s6"},"spec":{"clusterIP":"192.168.1.1","ports":[{"port":80}]}}`,
			422, []string{"spec.clusterIP", "10.96.0.0/12"}},
		{"selector does not match", deploys, `{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"d"},"spec":{"selector":{"matchLabels":{"app":"a"}},"template":{"metadata":{"labels":{"app":"b"}},"spec":{"containers":[{"name":"c","image":"i"}]}}}}`,
			422, []string{"spec.template.metadata.labels", "does not match"}},
		{"namespace missing", services, `{"apiVersion":"v1","kind":"Service","metadata":{"name":"s7","namespace":"dev"},"spec":{"ports":[{"port":80}]}}`,
			404, []string{`namespaces "dev" not found`}},
		{"not JSON", services, `{"apiVersion":`, 400, []string{"Service"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ns := "default"
			if strings.Contains(tc.doc, `"dev"`) {
				ns = "dev"
			}
			err := admin.Apply(ctx, tc.resource, ns, "", json.RawMessage(tc.doc), false, false)
			var se apierrors.APIStatus
			if !errorsAs(err, &se) {
				t.Fatalf("sent %s\ngot %v, want a Status error", tc.doc, err)
			}
			st := se.Status()
			if st.Code != tc.code {
				t.Errorf("sent %s\ngot code %d (%s), want %d", tc.doc, st.Code, st.Message, tc.code)
			}
			for _, m := range tc.mentions {
				if !strings.Contains(st.Message, m) {
					t.Errorf("sent %s\ngot message %q, want it to mention %q", tc.doc, st.Message, m)
				}
			}
		})
	}
	// Nothing refused was written.
	list, _, err := admin.List(ctx, services, "", client.ListOptions{})
	if err != nil || len(list) != 1 {
		t.Fatalf("services after refusals: got %d (%v), want only the one created", len(list), err)
	}
}

func errorsAs(err error, se *apierrors.APIStatus) bool {
	s, ok := err.(apierrors.APIStatus)
	if ok {
		*se = s
	}
	return ok
}

func TestStaleUpdateIsAConflict(t *testing.T) {
	s := apiservertest.StartServer(t)
	admin := httpClient(t, s, s.AdminToken)
	ctx := t.Context()
	created, err := admin.Create(ctx, services, svc("web", nil))
	if err != nil {
		t.Fatal(err)
	}
	first := created.DeepCopyObject().(*corev1.Service)
	first.Labels = map[string]string{"v": "1"}
	if _, err := admin.Update(ctx, services, first); err != nil {
		t.Fatalf("update with the latest resourceVersion: %v", err)
	}
	stale := created.(*corev1.Service)
	stale.Labels = map[string]string{"v": "2"}
	_, err = admin.Update(ctx, services, stale)
	if !apierrors.IsConflict(err) {
		t.Fatalf("update with resourceVersion %s after another update: got %v, want 409 Conflict", stale.ResourceVersion, err)
	}
	got, _ := admin.Get(ctx, services, "default", "web")
	if got.GetLabels()["v"] != "1" {
		t.Fatalf("the stale update was written: labels %v", got.GetLabels())
	}
	if got.(*corev1.Service).Spec.ClusterIP != created.(*corev1.Service).Spec.ClusterIP {
		t.Fatalf("the ClusterIP changed on update")
	}
}

func TestAuthentication(t *testing.T) {
	s := apiservertest.StartServer(t)
	for _, token := range []string{"", "wrong"} {
		c := httpClient(t, s, token)
		_, _, err := c.List(t.Context(), pods, "default", client.ListOptions{})
		if !apierrors.IsUnauthorized(err) {
			t.Errorf("list with token %q: got %v, want 401", token, err)
		}
	}
	resp, err := http.Get(strings.Replace(s.URL, "https", "http", 1) + "/api/v1/pods")
	if err == nil && resp.StatusCode < 400 {
		t.Errorf("plain HTTP answered %d; want TLS only", resp.StatusCode)
	}
}

// TestNodeAuthorization checks an agent's credential works like a
// kubelet's under the Node authorizer.
func TestNodeAuthorization(t *testing.T) {
	s := apiservertest.StartServer(t)
	ctx := t.Context()
	admin := httpClient(t, s, s.AdminToken)
	joiner := httpClient(t, s, s.JoinToken)
	var jr apiserver.JoinResponse
	if err := joiner.Do(ctx, http.MethodPost, "/skep/v1/join", client.JoinRequest{NodeName: "node-a", Password: "password-of-node-a"}, &jr); err != nil || jr.Token == "" {
		t.Fatalf("join: %v", err)
	}
	if _, _, err := joiner.List(ctx, pods, "", client.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("the join token listed pods: %v; want 403", err)
	}
	node := httpClient(t, s, jr.Token)
	mine := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "mine", Namespace: "default"}, Spec: corev1.PodSpec{NodeName: "node-a", Containers: []corev1.Container{{Name: "c", Image: "i"}}}}
	theirs := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "theirs", Namespace: "default"}, Spec: corev1.PodSpec{NodeName: "node-b", Containers: []corev1.Container{{Name: "c", Image: "i"}}}}
	for _, p := range []*corev1.Pod{mine, theirs} {
		if _, err := admin.Create(ctx, pods, p); err != nil {
			t.Fatal(err)
		}
	}
	steps := []struct {
		name    string
		do      func() error
		allowed bool
	}{
		{"create its own Node", func() error {
			_, err := node.Create(ctx, nodes, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a"}})
			return err
		}, true},
		{"create another Node", func() error {
			_, err := node.Create(ctx, nodes, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-b"}})
			return err
		}, false},
		{"list pods", func() error { _, _, err := node.List(ctx, pods, "", client.ListOptions{}); return err }, true},
		{"update the status of its pod", func() error {
			p, _ := admin.Get(ctx, pods, "default", "mine")
			p.(*corev1.Pod).Status.Phase = corev1.PodRunning
			_, err := node.UpdateStatus(ctx, pods, p)
			return err
		}, true},
		{"update the status of another node's pod", func() error {
			p, _ := admin.Get(ctx, pods, "default", "theirs")
			p.(*corev1.Pod).Status.Phase = corev1.PodRunning
			_, err := node.UpdateStatus(ctx, pods, p)
			return err
		}, false},
		{"change its pod's spec", func() error {
			p, _ := admin.Get(ctx, pods, "default", "mine")
			p.SetLabels(map[string]string{"x": "y"})
			_, err := node.Update(ctx, pods, p)
			return err
		}, false},
		{"create a service", func() error { _, err := node.Create(ctx, services, svc("evil", nil)); return err }, false},
		{"list resource quotas", func() error { _, _, err := node.List(ctx, quotas, "", client.ListOptions{}); return err }, false},
	}
	for _, st := range steps {
		err := st.do()
		if st.allowed && err != nil {
			t.Errorf("%s: got %v, want it allowed", st.name, err)
		}
		if !st.allowed && !apierrors.IsForbidden(err) {
			t.Errorf("%s: got %v, want 403", st.name, err)
		}
	}
}

// TestWatchResumes breaks a watch, makes changes while nobody watches, and
// resumes from the last resourceVersion seen: nothing is missed.
func TestWatchResumes(t *testing.T) {
	s := apiservertest.StartServer(t)
	admin := httpClient(t, s, s.AdminToken)
	ctx := t.Context()
	if _, err := admin.Create(ctx, services, svc("a", nil)); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	events, err := admin.Watch(wctx, services, "default", client.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ev := <-events
	if ev.Type != client.Added || ev.Object.GetName() != "a" {
		t.Fatalf("first event: got %s %s, want ADDED a", ev.Type, ev.Object.GetName())
	}
	last := ev.Object.GetResourceVersion()
	cancel() // the connection drops
	for range events {
	}
	if _, err := admin.Create(ctx, services, svc("b", nil)); err != nil {
		t.Fatal(err)
	}
	if err := admin.Delete(ctx, services, "default", "a", client.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
	defer rcancel()
	events, err = admin.Watch(rctx, services, "default", client.ListOptions{ResourceVersion: last})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []struct {
		typ  client.EventType
		name string
	}{{client.Added, "b"}, {client.Deleted, "a"}} {
		select {
		case ev := <-events:
			if ev.Type != want.typ || ev.Object.GetName() != want.name {
				t.Fatalf("resumed from %s: got %s %s, want %s %s", last, ev.Type, ev.Object.GetName(), want.typ, want.name)
			}
		case <-rctx.Done():
			t.Fatalf("resumed from %s: no %s event for %s", last, want.typ, want.name)
		}
	}
}

// TestConcurrentCreatesRaceForOneNodePort: of many creates asking for the
// same port at once, exactly one wins.
func TestConcurrentCreatesRaceForOneNodePort(t *testing.T) {
	s := apiservertest.StartServer(t)
	admin := httpClient(t, s, s.AdminToken)
	const n = 8
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = admin.Create(t.Context(), services, svc(fmt.Sprint("racer", i), func(s *corev1.Service) {
				s.Spec.Type = corev1.ServiceTypeNodePort
				s.Spec.Ports[0].NodePort = 31122
			}))
		}()
	}
	wg.Wait()
	won := 0
	for i, err := range errs {
		switch {
		case err == nil:
			won++
		case !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "already allocated"):
			t.Errorf("racer%d: got %v, want success or 422 already allocated", i, err)
		}
	}
	if won != 1 {
		t.Fatalf("%d of %d creates got node port 31122; want exactly 1", won, n)
	}
	// The port is free again once its Service is gone.
	list, _, _ := admin.List(t.Context(), services, "default", client.ListOptions{})
	if err := admin.Delete(t.Context(), services, "default", list[0].GetName(), client.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Create(t.Context(), services, svc("after", func(s *corev1.Service) {
		s.Spec.Type = corev1.ServiceTypeNodePort
		s.Spec.Ports[0].NodePort = 31122
	})); err != nil {
		t.Fatalf("node port 31122 after its holder was deleted: %v", err)
	}
}

// TestQuota: a namespace with a quota of 2 pods takes 2 of 6 racing
// creates, refuses the rest with 403 naming the quota, and frees a unit
// when a pod is deleted.
func TestQuota(t *testing.T) {
	s := apiservertest.StartServer(t)
	admin := httpClient(t, s, s.AdminToken)
	ctx := t.Context()
	q := &corev1.ResourceQuota{ObjectMeta: metav1.ObjectMeta{Name: "small", Namespace: "default"},
		Spec: corev1.ResourceQuotaSpec{Hard: corev1.ResourceList{corev1.ResourcePods: resource.MustParse("2"), corev1.ResourceRequestsMemory: resource.MustParse("1Gi")}}}
	if _, err := admin.Create(ctx, quotas, q); err != nil {
		t.Fatal(err)
	}
	pod := func(name string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}, Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name: "c", Image: "i", Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("100Mi")}}}}}}
	}
	var wg sync.WaitGroup
	errs := make([]error, 6)
	for i := range errs {
		wg.Add(1)
		go func() { defer wg.Done(); _, errs[i] = admin.Create(ctx, pods, pod(fmt.Sprint("p", i))) }()
	}
	wg.Wait()
	created := 0
	for _, err := range errs {
		if err == nil {
			created++
		} else if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "exceeded quota: small") || !strings.Contains(err.Error(), "limited: pods=2") {
			t.Errorf("got %v, want 403 exceeded quota: small ... limited: pods=2", err)
		}
	}
	if created != 2 {
		t.Fatalf("%d pods created under a quota of 2", created)
	}
	got, _ := admin.Get(ctx, quotas, "default", "small")
	used := got.(*corev1.ResourceQuota).Status.Used
	if p := used[corev1.ResourcePods]; p.Value() != 2 {
		t.Fatalf("status.used.pods = %s, want 2", p.String())
	}
	list, _, _ := admin.List(ctx, pods, "default", client.ListOptions{})
	if err := admin.Delete(ctx, pods, "default", list[0].GetName(), client.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Create(ctx, pods, pod("again")); err != nil {
		t.Fatalf("create after a delete freed a unit: %v", err)
	}
}

func TestDefaults(t *testing.T) {
	s := apiservertest.StartServer(t)
	admin := httpClient(t, s, s.AdminToken)
	ctx := t.Context()
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default"}, Spec: appsv1.DeploymentSpec{
		Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
		Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "skep/echo:latest"}}}}}}
	obj, err := admin.Create(ctx, deploys, d)
	if err != nil {
		t.Fatal(err)
	}
	got := obj.(*appsv1.Deployment)
	if *got.Spec.Replicas != 1 || got.Spec.Strategy.Type != appsv1.RollingUpdateDeploymentStrategyType ||
		got.Spec.Strategy.RollingUpdate.MaxSurge.String() != "25%" || got.Spec.Strategy.RollingUpdate.MaxUnavailable.String() != "25%" {
		t.Errorf("deployment defaults: replicas %d, strategy %+v; want 1, RollingUpdate 25%%/25%%", *got.Spec.Replicas, got.Spec.Strategy)
	}
	obj, err = admin.Create(ctx, services, svc("aff", func(s *corev1.Service) {
		s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
		s.Spec.Ports[0].Port = 8080
	}))
	if err != nil {
		t.Fatal(err)
	}
	sv := obj.(*corev1.Service)
	if sv.Spec.Type != corev1.ServiceTypeClusterIP || sv.Spec.Ports[0].Protocol != corev1.ProtocolTCP || sv.Spec.Ports[0].TargetPort.IntValue() != 8080 ||
		*sv.Spec.SessionAffinityConfig.ClientIP.TimeoutSeconds != 10800 {
		t.Errorf("service defaults: %+v", sv.Spec)
	}
}

func BenchmarkCreateAndGet(b *testing.B) {
	c := apiservertest.Start(b)
	ctx := context.Background()
	pod := func(i int) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprint("p", i), Namespace: "default"}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "i"}}}}
	}
	b.Run("create", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			if _, err := c.Create(ctx, pods, pod(i)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("get", func(b *testing.B) {
		for b.Loop() {
			if _, err := c.Get(ctx, pods, "default", "p0"); err != nil {
				b.Fatal(err)
			}
		}
	})
}
