package main

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/skep-io/skep/controlplane/api"
)

// printedList is the List kubectl prints for a collection, as a script
// reading it with jq sees it.
type printedList struct {
	APIVersion string           `json:"apiVersion"`
	Kind       string           `json:"kind"`
	Metadata   map[string]any   `json:"metadata"`
	Items      []map[string]any `json:"items"`
}

// parseList reads out (json or yaml) as a List and checks its envelope.
func parseList(t *testing.T, what, out string) printedList {
	t.Helper()
	var l printedList
	if err := yaml.Unmarshal([]byte(out), &l); err != nil { // yaml reads json too
		t.Fatalf("skep %s: output is not one document: %v\n%s", what, err, out)
	}
	rv, ok := l.Metadata["resourceVersion"]
	if l.APIVersion != "v1" || l.Kind != "List" || !ok || rv != "" {
		t.Fatalf("skep %s printed apiVersion %q kind %q metadata %v; want kubectl's List (v1, List, resourceVersion \"\"):\n%s",
			what, l.APIVersion, l.Kind, l.Metadata, out)
	}
	return l
}

// itemNames is the kind/name of every item of l, in order.
func itemNames(l printedList) []string {
	var names []string
	for _, it := range l.Items {
		meta, _ := it["metadata"].(map[string]any)
		names = append(names, it["kind"].(string)+"/"+meta["name"].(string))
	}
	return names
}

func createPod(t *testing.T, p *serverProc, name string, labels map[string]string) {
	t.Helper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", Labels: labels},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "skep/echo:v1"}}},
	}
	if _, err := p.client(t).Create(t.Context(), api.MustLookup("pods"), pod); err != nil {
		t.Fatalf("create pod %s: %v", name, err)
	}
}

// TestGetPrintsListForCollections checks what `skep get -o json|yaml`
// prints, as kubectl does: a List for any collection, whatever its length
// (a script's `jq '.items[]'` must work with one match as with many), and
// the bare object only for `get KIND NAME`.
func TestGetPrintsListForCollections(t *testing.T) {
	p := startServer(t, t.TempDir())

	for _, out := range []string{"json", "yaml"} {
		l := parseList(t, "get pods -o "+out+" (no pods)", mustRun(t, p, "get", "pods", "-o", out))
		if len(l.Items) != 0 {
			t.Errorf("skep get pods -o %s with no pods: %d items, want 0", out, len(l.Items))
		}
	}
	if out := mustRun(t, p, "get", "pods", "-o", "json"); !strings.Contains(out, `"items": []`) {
		t.Errorf("skep get pods -o json with no pods: want \"items\": [] (jq's .items[] fails on null), got\n%s", out)
	}

	createPod(t, p, "web-1", map[string]string{"app": "web"})
	for _, args := range [][]string{
		{"get", "pods", "-o", "json"},
		{"get", "pods", "-o", "yaml"},
		{"get", "pods", "-l", "app=web", "-o", "json"},
		{"get", "pods", "-A", "-o", "json"},
	} {
		what := strings.Join(args, " ")
		l := parseList(t, what, mustRun(t, p, args...))
		if got := itemNames(l); len(got) != 1 || got[0] != "Pod/web-1" {
			t.Errorf("skep %s with one pod: items %v, want [Pod/web-1]", what, got)
		}
	}

	createPod(t, p, "web-2", map[string]string{"app": "web"})
	l := parseList(t, "get pods -o json", mustRun(t, p, "get", "pods", "-o", "json"))
	if got := strings.Join(itemNames(l), " "); got != "Pod/web-1 Pod/web-2" {
		t.Errorf("skep get pods -o json with two pods: items %s, want Pod/web-1 Pod/web-2", got)
	}
	l = parseList(t, "get pod web-2 web-1 -o json", mustRun(t, p, "get", "pod", "web-2", "web-1", "-o", "json"))
	if len(l.Items) != 2 {
		t.Errorf("skep get pod web-2 web-1 -o json: %d items, want 2", len(l.Items))
	}
	// Several kinds are one List, not one document per kind.
	l = parseList(t, "get pods,ns -o json", mustRun(t, p, "get", "pods,ns", "-o", "json"))
	if got := strings.Join(itemNames(l), " "); !strings.HasPrefix(got, "Pod/web-1 Pod/web-2 Namespace/") {
		t.Errorf("skep get pods,ns -o json: items %s, want the two pods then the namespaces", got)
	}

	// One name: the object itself.
	out := mustRun(t, p, "get", "pod", "web-1", "-o", "json")
	var pod corev1.Pod
	if err := json.Unmarshal([]byte(out), &pod); err != nil || pod.Kind != "Pod" || pod.Name != "web-1" || pod.Spec.Containers[0].Image != "skep/echo:v1" {
		t.Errorf("skep get pod web-1 -o json: want the Pod web-1 (err %v):\n%s", err, out)
	}
	out = mustRun(t, p, "get", "pod", "web-1", "-o", "yaml")
	if err := yaml.Unmarshal([]byte(out), &pod); err != nil || pod.Kind != "Pod" || pod.Name != "web-1" {
		t.Errorf("skep get pod web-1 -o yaml: want the Pod web-1 (err %v):\n%s", err, out)
	}

	// A name that is not there: the others are printed, the missing one
	// is an error.
	out, stderr, err := p.run("get", "pod", "web-1", "nope", "-o", "json")
	if err == nil || !strings.Contains(stderr, `pods "nope" not found`) {
		t.Errorf("skep get pod web-1 nope: %v, stderr %q; want it to fail naming nope", err, stderr)
	}
	if got := itemNames(parseList(t, "get pod web-1 nope -o json", out)); len(got) != 1 || got[0] != "Pod/web-1" {
		t.Errorf("skep get pod web-1 nope -o json: items %v, want [Pod/web-1]", got)
	}

	// Tables: a header and a row a pod, kubectl's columns (-o wide adds
	// IP, NODE, NOMINATED NODE and READINESS GATES).
	lines := strings.Split(strings.TrimSpace(mustRun(t, p, "get", "pods")), "\n")
	if len(lines) != 3 || strings.Join(strings.Fields(lines[0]), " ") != "NAME READY STATUS RESTARTS AGE" || !strings.HasPrefix(lines[1], "web-1 ") {
		t.Errorf("skep get pods: want the header and two rows, got\n%s", strings.Join(lines, "\n"))
	}
	lines = strings.Split(strings.TrimSpace(mustRun(t, p, "get", "pod", "web-2", "-o", "wide")), "\n")
	if len(lines) != 2 || strings.Join(strings.Fields(lines[0]), " ") != "NAME READY STATUS RESTARTS AGE IP NODE NOMINATED NODE READINESS GATES" || !strings.HasPrefix(lines[1], "web-2 ") {
		t.Errorf("skep get pod web-2 -o wide: want the wide header and one row, got\n%s", strings.Join(lines, "\n"))
	}
}

// TestGetWatchPrintsObjects checks `skep get pods -w -o json`: as kubectl,
// a stream of bare objects (those there at the start, then each change),
// never a List.
func TestGetWatchPrintsObjects(t *testing.T) {
	p := startServer(t, t.TempDir())
	createPod(t, p, "first", nil)

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, skepBinary, "get", "pods", "-w", "-o", "json")
	cmd.Env = append(os.Environ(), "SKEPCONFIG="+p.config, "HOME=/nonexistent")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); _ = cmd.Wait() })
	dec := json.NewDecoder(bufio.NewReader(stdout))
	next := func() map[string]any {
		t.Helper()
		var v map[string]any
		if err := dec.Decode(&v); err != nil {
			t.Fatalf("skep get pods -w -o json: reading the next object: %v", err)
		}
		return v
	}
	name := func(v map[string]any) string {
		meta, _ := v["metadata"].(map[string]any)
		n, _ := meta["name"].(string)
		return n
	}
	if v := next(); v["kind"] != "Pod" || name(v) != "first" {
		t.Fatalf("skep get pods -w -o json started with kind %v name %q; want the Pod first by itself", v["kind"], name(v))
	}
	createPod(t, p, "second", nil)
	if v := next(); v["kind"] != "Pod" || name(v) != "second" {
		t.Fatalf("skep get pods -w -o json after a create printed kind %v name %q; want the Pod second", v["kind"], name(v))
	}
}

// TestDeleteDryRun checks kubectl's --dry-run spellings on `skep delete`:
// server and client print what would be deleted and delete nothing; a
// value it does not know is refused, naming the ones it does.
func TestDeleteDryRun(t *testing.T) {
	p := startServer(t, t.TempDir())
	c := p.client(t)
	configmaps := api.MustLookup("configmaps")
	if _, err := c.Create(t.Context(), configmaps, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "keep", Namespace: "default"}}); err != nil {
		t.Fatal(err)
	}
	stillThere := func(what string) {
		t.Helper()
		if _, err := c.Get(t.Context(), configmaps, "default", "keep"); err != nil {
			t.Fatalf("after skep %s: configmap keep: %v; want it still there", what, err)
		}
	}

	for _, mode := range []struct{ flag, says string }{
		{"--dry-run=server", `ConfigMap "keep" deleted (server dry run)`},
		{"--dry-run=client", `ConfigMap "keep" deleted (dry run)`},
	} {
		out := mustRun(t, p, "delete", "cm", "keep", mode.flag)
		if strings.TrimSpace(out) != mode.says {
			t.Errorf("skep delete cm keep %s printed %q; want %q", mode.flag, out, mode.says)
		}
		stillThere("delete cm keep " + mode.flag)
	}

	for _, flag := range []string{"--dry-run=server", "--dry-run=client"} {
		_, stderr, err := p.run("delete", "cm", "nope", flag)
		if err == nil || !strings.Contains(stderr, `configmaps "nope" not found`) {
			t.Errorf("skep delete cm nope %s: %v, stderr %q; want not found", flag, err, stderr)
		}
	}

	_, stderr, err := p.run("delete", "cm", "keep", "--dry-run=bogus")
	if err == nil || !strings.Contains(stderr, `--dry-run "bogus": allowed are none, server, client`) {
		t.Errorf("skep delete --dry-run=bogus: %v, stderr %q; want it refused naming none, server, client", err, stderr)
	}
	stillThere("delete cm keep --dry-run=bogus")

	// Orphaning would first write a finalizer: a dry run must not.
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default"},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "skep/echo:v1"}}},
			},
		},
	}
	deployments := api.MustLookup("deployments")
	if _, err := c.Create(t.Context(), deployments, d); err != nil {
		t.Fatal(err)
	}
	out := mustRun(t, p, "delete", "deploy", "web", "--cascade=orphan", "--dry-run=server")
	if !strings.Contains(out, `Deployment "web" deleted (server dry run)`) {
		t.Errorf("skep delete deploy web --cascade=orphan --dry-run=server printed %q", out)
	}
	got, err := c.Get(t.Context(), deployments, "default", "web")
	if err != nil || got.GetDeletionTimestamp() != nil || len(got.GetFinalizers()) != 0 {
		t.Errorf("after a dry-run orphaning delete: deployment web %v (err %v); want it untouched, no finalizer", got, err)
	}

	// --dry-run=none is a delete.
	if out := mustRun(t, p, "delete", "cm", "keep", "--dry-run=none"); strings.TrimSpace(out) != `ConfigMap "keep" deleted` {
		t.Errorf("skep delete cm keep --dry-run=none printed %q", out)
	}
	if _, err := c.Get(t.Context(), configmaps, "default", "keep"); err == nil {
		t.Error("skep delete cm keep --dry-run=none left the configmap")
	}
}

// TestApplyDryRun checks `skep apply|create --dry-run`: server has the
// server check every document and writes nothing; client sends no write;
// both print kubectl's line with its dry-run note.
func TestApplyDryRun(t *testing.T) {
	p := startServer(t, t.TempDir())
	c := p.client(t)
	configmaps := api.MustLookup("configmaps")
	dir := t.TempDir()
	cm := func(name, value string) string {
		return writeFile(t, dir, name+".yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: "+name+"\ndata:\n  k: "+value+"\n")
	}
	absent := func(what, name string) {
		t.Helper()
		if _, err := c.Get(t.Context(), configmaps, "default", name); err == nil {
			t.Errorf("after skep %s: configmap %s exists; a dry run must write nothing", what, name)
		}
	}

	for _, tc := range []struct{ args, says string }{
		{"apply --dry-run=server", "configmap/fresh created (server dry run)"},
		{"apply --dry-run=client", "configmap/fresh created (dry run)"},
		{"create --dry-run=server", "configmap/fresh created (server dry run)"},
	} {
		args := append(strings.Fields(tc.args), "-f", cm("fresh", "v1"))
		if out := mustRun(t, p, args...); strings.TrimSpace(out) != tc.says {
			t.Errorf("skep %s printed %q; want %q", tc.args, out, tc.says)
		}
		absent(tc.args, "fresh")
	}

	// The server still checks what a server dry run sends.
	bad := writeFile(t, dir, "bad.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: Bad_Name\n")
	_, stderr, err := p.run("apply", "--dry-run=server", "-f", bad)
	if err == nil || !strings.Contains(stderr, `metadata.name: Invalid value: "Bad_Name"`) {
		t.Errorf("skep apply --dry-run=server of an invalid name: %v, stderr %q; want the server's refusal", err, stderr)
	}

	// An object that exists is configured, and keeps its data.
	mustRun(t, p, "apply", "-f", cm("old", "v1"))
	if out := mustRun(t, p, "apply", "--dry-run=server", "-f", cm("old", "v2")); strings.TrimSpace(out) != "configmap/old configured (server dry run)" {
		t.Errorf("skep apply --dry-run=server of a changed configmap printed %q", out)
	}
	got, err := c.Get(t.Context(), configmaps, "default", "old")
	if err != nil || got.(*corev1.ConfigMap).Data["k"] != "v1" {
		t.Errorf("after skep apply --dry-run=server: configmap old %v (err %v); want data k=v1 unchanged", got, err)
	}

	_, stderr, err = p.run("apply", "--dry-run=bogus", "-f", cm("fresh", "v1"))
	if err == nil || !strings.Contains(stderr, `--dry-run "bogus": allowed are none, server, client`) {
		t.Errorf("skep apply --dry-run=bogus: %v, stderr %q; want it refused naming the allowed values", err, stderr)
	}
	absent("apply --dry-run=bogus", "fresh")
}
