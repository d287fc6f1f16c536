// Package helm tests that Helm v3 and v4, unchanged, install, upgrade,
// roll back and uninstall a chart on a skep server. `make helm` builds
// both from the Go module proxy into _out/bin (make test does it first).
package helm

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/skep-io/skep/controlplane/apiserver/apiservertest"
)

const (
	ns      = "default"
	release = "web"
	chart   = "testdata/webapp"
)

func TestHelm3(t *testing.T) { testHelm(t, "helm3") }
func TestHelm4(t *testing.T) { testHelm(t, "helm4") }

// helm runs one Helm binary against one server, with its own
// configuration, cache and data directories.
type helm struct {
	t   *testing.T
	bin string
	env []string
}

func testHelm(t *testing.T, name string) {
	bin, err := filepath.Abs(filepath.Join("..", "..", "_out", "bin", name))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("%v: build it with `make helm`", err)
	}
	s := apiservertest.StartServer(t)
	cs, err := kubernetes.NewForConfig(&rest.Config{Host: s.URL, BearerToken: s.AdminToken, TLSClientConfig: rest.TLSClientConfig{CAData: s.CAPEM}})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	h := &helm{t: t, bin: bin, env: []string{
		"HOME=" + dir,
		"PATH=" + os.Getenv("PATH"),
		"KUBECONFIG=" + writeKubeconfig(t, s, dir),
		"HELM_CACHE_HOME=" + filepath.Join(dir, "cache"),
		"HELM_CONFIG_HOME=" + filepath.Join(dir, "config"),
		"HELM_DATA_HOME=" + filepath.Join(dir, "data"),
		"HELM_NAMESPACE=" + ns,
	}}
	t.Log(strings.TrimSpace(h.run("version")))
	ctx := t.Context()

	out := h.run("install", release, chart)
	wantIn(t, "install", out, "STATUS: deployed", "REVISION: 1")
	check(t, ctx, cs, "after install", "1", "hello")
	checkReleases(t, ctx, cs, 1)

	out = h.run("upgrade", release, chart, "--set", "image.tag=2", "--set", "greeting=hi")
	wantIn(t, "upgrade", out, "STATUS: deployed", "REVISION: 2")
	check(t, ctx, cs, "after upgrade", "2", "hi")

	out = h.run("rollback", release, "1")
	wantIn(t, "rollback", out, "Rollback was a success")
	check(t, ctx, cs, "after rollback", "1", "hello")
	checkHistory(t, h, []string{"superseded", "superseded", "deployed"}, "Rollback to 1")
	checkReleases(t, ctx, cs, 3)

	out = h.run("uninstall", release)
	wantIn(t, "uninstall", out, fmt.Sprintf("release %q uninstalled", release))
	checkGone(t, ctx, cs)
	checkReleases(t, ctx, cs, 0)
}

// writeKubeconfig writes what `skep server` gives its admin: the server,
// its CA and the admin token.
func writeKubeconfig(t *testing.T, s *apiservertest.Server, dir string) string {
	t.Helper()
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["skep"] = &clientcmdapi.Cluster{Server: s.URL, CertificateAuthorityData: s.CAPEM}
	cfg.AuthInfos["admin"] = &clientcmdapi.AuthInfo{Token: s.AdminToken}
	cfg.Contexts["skep"] = &clientcmdapi.Context{Cluster: "skep", AuthInfo: "admin", Namespace: ns}
	cfg.CurrentContext = "skep"
	path := filepath.Join(dir, "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// run runs Helm with args and returns its standard output; the test
// stops if Helm fails, with what it printed.
func (h *helm) run(args ...string) string {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, h.bin, args...)
	cmd.Env = h.env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		h.t.Fatalf("%s %s: %v\nstdout:\n%s\nstderr:\n%s", filepath.Base(h.bin), strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

func wantIn(t *testing.T, what, out string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("helm %s printed no %q:\n%s", what, w, out)
		}
	}
}

// check checks the chart's objects as the release's values made them:
// the Deployment's image tag, the ConfigMap's greeting, and the others
// present.
func check(t *testing.T, ctx context.Context, cs kubernetes.Interface, when, tag, greeting string) {
	t.Helper()
	d, err := cs.AppsV1().Deployments(ns).Get(ctx, release, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("%s: %v", when, err)
	}
	if got, want := d.Spec.Template.Spec.Containers[0].Image, "registry.example/web:"+tag; got != want {
		t.Errorf("%s: the Deployment's image is %s, want %s", when, got, want)
	}
	if got := d.Spec.Template.Spec.ServiceAccountName; got != release {
		t.Errorf("%s: the Deployment's pods run as service account %q, want %q", when, got, release)
	}
	cm, err := cs.CoreV1().ConfigMaps(ns).Get(ctx, release+"-config", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("%s: %v", when, err)
	}
	if cm.Data["greeting"] != greeting {
		t.Errorf("%s: the ConfigMap's greeting is %q, want %q", when, cm.Data["greeting"], greeting)
	}
	sec, err := cs.CoreV1().Secrets(ns).Get(ctx, release+"-secret", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("%s: %v", when, err)
	}
	if string(sec.Data["password"]) != "s3cret" {
		t.Errorf("%s: the Secret's password is %q, want the chart's value (stringData folded into data)", when, sec.Data["password"])
	}
	if _, err := cs.CoreV1().ServiceAccounts(ns).Get(ctx, release, metav1.GetOptions{}); err != nil {
		t.Errorf("%s: %v", when, err)
	}
	svc, err := cs.CoreV1().Services(ns).Get(ctx, release, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("%s: %v", when, err)
	}
	if svc.Spec.ClusterIP == "" {
		t.Errorf("%s: the Service has no ClusterIP", when)
	}
}

// checkGone checks that uninstall deleted every object of the chart.
func checkGone(t *testing.T, ctx context.Context, cs kubernetes.Interface) {
	t.Helper()
	gets := map[string]func() error{
		"deployment": func() error {
			_, err := cs.AppsV1().Deployments(ns).Get(ctx, release, metav1.GetOptions{})
			return err
		},
		"service": func() error {
			_, err := cs.CoreV1().Services(ns).Get(ctx, release, metav1.GetOptions{})
			return err
		},
		"configmap": func() error {
			_, err := cs.CoreV1().ConfigMaps(ns).Get(ctx, release+"-config", metav1.GetOptions{})
			return err
		},
		"secret": func() error {
			_, err := cs.CoreV1().Secrets(ns).Get(ctx, release+"-secret", metav1.GetOptions{})
			return err
		},
		"serviceaccount": func() error {
			_, err := cs.CoreV1().ServiceAccounts(ns).Get(ctx, release, metav1.GetOptions{})
			return err
		},
	}
	for kind, get := range gets {
		if err := get(); !apierrors.IsNotFound(err) {
			t.Errorf("after uninstall, get %s: %v, want 404 NotFound", kind, err)
		}
	}
}

// checkReleases checks that Helm keeps n revisions of the release, each
// in a Secret of its own (its default storage driver).
func checkReleases(t *testing.T, ctx context.Context, cs kubernetes.Interface, n int) {
	t.Helper()
	list, err := cs.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{LabelSelector: "owner=helm,name=" + release})
	if err != nil {
		t.Fatalf("list Helm's release secrets: %v", err)
	}
	if len(list.Items) != n {
		var names []string
		for _, s := range list.Items {
			names = append(names, s.Name)
		}
		t.Errorf("Helm's release secrets are %v, want %d", names, n)
	}
}

// checkHistory checks the statuses of the release's revisions, oldest
// first, and the last one's description.
func checkHistory(t *testing.T, h *helm, statuses []string, lastDescription string) {
	t.Helper()
	var history []struct {
		Revision    int    `json:"revision"`
		Status      string `json:"status"`
		Description string `json:"description"`
	}
	out := h.run("history", release, "-o", "json")
	if err := json.Unmarshal([]byte(out), &history); err != nil {
		t.Fatalf("helm history -o json: %v\n%s", err, out)
	}
	var got []string
	for _, r := range history {
		got = append(got, r.Status)
	}
	if strings.Join(got, ",") != strings.Join(statuses, ",") {
		t.Errorf("helm history: statuses %v, want %v\n%s", got, statuses, out)
	}
	if len(history) > 0 && history[len(history)-1].Description != lastDescription {
		t.Errorf("helm history: the last revision is %q, want %q", history[len(history)-1].Description, lastDescription)
	}
}
