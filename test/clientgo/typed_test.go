package clientgo

import (
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	corev1apply "k8s.io/client-go/applyconfigurations/core/v1"
)

const protobuf = "application/vnd.kubernetes.protobuf"

func deployment(name string) *appsv1.Deployment {
	replicas := int32(1)
	labels := map[string]string{"app": name}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{
					{Name: "web", Image: "registry.example/web:1"},
					{Name: "sidecar", Image: "registry.example/sidecar:1"},
				}},
			},
		},
	}
}

// TestTypedClientsWrite writes through client-go's typed clients as they
// come: protobuf bodies and answers for create and update, each patch type
// kubectl and controllers send, and delete.
func TestTypedClientsWrite(t *testing.T) {
	_, cs, log := start(t)
	ctx := t.Context()
	deploys := cs.AppsV1().Deployments(ns)

	created, err := deploys.Create(ctx, deployment("web"), metav1.CreateOptions{})
	must(t, "create", err)
	if created.UID == "" || created.ResourceVersion == "" {
		t.Errorf("create answered %+v without a UID and resourceVersion", created.ObjectMeta)
	}

	created.Spec.Template.Annotations = map[string]string{"rev": "2"}
	updated, err := deploys.Update(ctx, created, metav1.UpdateOptions{})
	must(t, "update", err)
	if updated.Spec.Template.Annotations["rev"] != "2" || updated.ResourceVersion == created.ResourceVersion {
		t.Errorf("update answered annotations %v at resourceVersion %s (was %s), want rev=2 at a new version",
			updated.Spec.Template.Annotations, updated.ResourceVersion, created.ResourceVersion)
	}
	// A stale update is a conflict.
	if _, err := deploys.Update(ctx, created, metav1.UpdateOptions{}); !apierrors.IsConflict(err) {
		t.Errorf("update at the old resourceVersion: %v, want a 409 Conflict", err)
	}
	checkProtobuf(t, log, "POST", "/deployments")
	checkProtobuf(t, log, "PUT", "/deployments/web")

	// Strategic merge merges containers by name: the sidecar stays.
	smp := `{"spec":{"template":{"spec":{"containers":[{"name":"web","image":"registry.example/web:2"}]}}}}`
	patched, err := deploys.Patch(ctx, "web", types.StrategicMergePatchType, []byte(smp), metav1.PatchOptions{})
	must(t, "strategic merge patch", err)
	if got := images(patched); got != "web=registry.example/web:2 sidecar=registry.example/sidecar:1" {
		t.Errorf("after the strategic merge patch the containers are %s, want web's image changed and the sidecar kept", got)
	}

	// A JSON patch whose test fails changes nothing and is refused.
	bad := `[{"op":"test","path":"/spec/replicas","value":5},{"op":"replace","path":"/spec/replicas","value":3}]`
	if _, err := deploys.Patch(ctx, "web", types.JSONPatchType, []byte(bad), metav1.PatchOptions{}); err == nil {
		t.Error("a JSON patch whose test op fails was accepted")
	}
	good := `[{"op":"test","path":"/spec/replicas","value":1},{"op":"replace","path":"/spec/replicas","value":3}]`
	patched, err = deploys.Patch(ctx, "web", types.JSONPatchType, []byte(good), metav1.PatchOptions{})
	must(t, "JSON patch", err)
	if *patched.Spec.Replicas != 3 {
		t.Errorf("after the JSON patch replicas are %d, want 3", *patched.Spec.Replicas)
	}

	merge := `{"metadata":{"labels":{"team":"a"}}}`
	patched, err = deploys.Patch(ctx, "web", types.MergePatchType, []byte(merge), metav1.PatchOptions{})
	must(t, "merge patch", err)
	if patched.Labels["team"] != "a" {
		t.Errorf("after the merge patch the labels are %v, want team=a", patched.Labels)
	}
	for _, e := range log.find("PATCH", "/deployments/web") {
		if e.Status == 200 && !strings.HasPrefix(e.RespContentType, protobuf) {
			t.Errorf("PATCH answered %s, want protobuf (client-go asked for it)", e.RespContentType)
		}
	}

	must(t, "delete", deploys.Delete(ctx, "web", metav1.DeleteOptions{}))
	if _, err := deploys.Get(ctx, "web", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("get after delete: %v, want 404 NotFound", err)
	}
	checkProtobuf(t, log, "DELETE", "/deployments/web")
}

// TestTypedClientApply is server-side apply through the typed client's
// Apply: it creates, it records each manager's fields, a second manager
// setting a field the first owns is a conflict unless it forces, and a
// manager dropping a field it alone owns removes it.
func TestTypedClientApply(t *testing.T) {
	_, cs, _ := start(t)
	ctx := t.Context()
	cms := cs.CoreV1().ConfigMaps(ns)

	first := corev1apply.ConfigMap("settings", ns).WithData(map[string]string{"color": "blue", "size": "m"})
	cm, err := cms.Apply(ctx, first, metav1.ApplyOptions{FieldManager: "alice"})
	must(t, "apply (create)", err)
	if cm.Data["color"] != "blue" || managers(cm) != "alice" {
		t.Errorf("apply created data %v managed by %q, want color=blue managed by alice", cm.Data, managers(cm))
	}

	second := corev1apply.ConfigMap("settings", ns).WithData(map[string]string{"color": "red"})
	_, err = cms.Apply(ctx, second, metav1.ApplyOptions{FieldManager: "bob"})
	if !apierrors.IsConflict(err) || !strings.Contains(err.Error(), "alice") {
		t.Fatalf("bob applying alice's field: %v, want a 409 conflict naming alice", err)
	}
	cm, err = cms.Apply(ctx, second, metav1.ApplyOptions{FieldManager: "bob", Force: true})
	must(t, "forced apply", err)
	if cm.Data["color"] != "red" || managers(cm) != "alice,bob" {
		t.Errorf("forced apply left data %v managed by %q, want color=red, managers alice and bob", cm.Data, managers(cm))
	}

	// alice stops applying size, which she alone owned: it goes.
	third := corev1apply.ConfigMap("settings", ns).WithData(map[string]string{})
	cm, err = cms.Apply(ctx, third, metav1.ApplyOptions{FieldManager: "alice"})
	must(t, "apply without size", err)
	if _, ok := cm.Data["size"]; ok || cm.Data["color"] != "red" {
		t.Errorf("after alice dropped size the data are %v, want only color=red", cm.Data)
	}

	must(t, "delete", cms.Delete(ctx, "settings", metav1.DeleteOptions{}))
}

// checkProtobuf checks that every request method sent to path went as
// protobuf and was answered so: client-go's typed clients prefer it for
// Kubernetes' own types.
func checkProtobuf(t *testing.T, log *requestLog, method, path string) {
	t.Helper()
	es := log.find(method, path)
	if len(es) == 0 {
		t.Fatalf("no %s %s was sent", method, path)
	}
	for _, e := range es {
		if method != "DELETE" && !strings.HasPrefix(e.ContentType, protobuf) {
			t.Errorf("%s %s sent %q, want %s", method, e.Path, e.ContentType, protobuf)
		}
		if !strings.HasPrefix(e.RespContentType, protobuf) {
			t.Errorf("%s %s: answered %d %q, want %s", method, e.Path, e.Status, e.RespContentType, protobuf)
		}
	}
}

func images(d *appsv1.Deployment) string {
	var out []string
	for _, c := range d.Spec.Template.Spec.Containers {
		out = append(out, c.Name+"="+c.Image)
	}
	return strings.Join(out, " ")
}

// managers lists the managers of an object's fields, in order.
func managers(obj metav1.Object) string {
	var out []string
	for _, m := range obj.GetManagedFields() {
		out = append(out, m.Manager)
	}
	return strings.Join(out, ",")
}
