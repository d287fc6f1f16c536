package deployment

import (
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func template(image string) *corev1.PodTemplateSpec {
	return &corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: image}}},
	}
}

func TestTemplateHash(t *testing.T) {
	a, b := TemplateHash(template("nginx:1"), nil), TemplateHash(template("nginx:1"), nil)
	if a != b {
		t.Fatalf("equal templates hash to %s and %s", a, b)
	}
	if c := TemplateHash(template("nginx:2"), nil); c == a {
		t.Fatalf("different images hash alike: %s", a)
	}
	one := int32(1)
	if c := TemplateHash(template("nginx:1"), &one); c == a {
		t.Fatalf("collisionCount does not change the hash: %s", a)
	}
	for _, r := range a {
		if !strings.ContainsRune("bcdfghjklmnpqrstvwxz2456789", r) {
			t.Fatalf("hash %s has %q, which is not in Kubernetes' safe alphabet", a, r)
		}
	}
}

func TestEqualIgnoreHash(t *testing.T) {
	withHash := template("nginx:1")
	withHash.Labels[PodTemplateHashLabel] = "abc"
	if !EqualIgnoreHash(withHash, template("nginx:1")) {
		t.Fatal("templates differing only in pod-template-hash compare unequal")
	}
	if EqualIgnoreHash(withHash, template("nginx:2")) {
		t.Fatal("templates with different images compare equal")
	}
	if _, ok := withHash.Labels[PodTemplateHashLabel]; !ok {
		t.Fatal("EqualIgnoreHash changed its argument")
	}
}

func TestSurgeAndUnavailable(t *testing.T) {
	mk := func(replicas int32, surge, unavail intstr.IntOrString) *appsv1.Deployment {
		return &appsv1.Deployment{Spec: appsv1.DeploymentSpec{Replicas: &replicas, Strategy: appsv1.DeploymentStrategy{
			Type: appsv1.RollingUpdateDeploymentStrategyType, RollingUpdate: &appsv1.RollingUpdateDeployment{MaxSurge: &surge, MaxUnavailable: &unavail}}}}
	}
	tests := []struct {
		d                  *appsv1.Deployment
		surge, unavailable int32
	}{
		{mk(4, intstr.FromString("25%"), intstr.FromString("25%")), 1, 1},
		{mk(3, intstr.FromString("25%"), intstr.FromString("25%")), 1, 0}, // surge rounds up, unavailable down
		{mk(10, intstr.FromInt32(0), intstr.FromInt32(0)), 0, 1},          // never both zero
		{mk(2, intstr.FromInt32(3), intstr.FromInt32(5)), 3, 2},           // no more unavailable than replicas
	}
	for i, tt := range tests {
		s, u := surgeAndUnavailable(tt.d)
		if s != tt.surge || u != tt.unavailable {
			t.Errorf("case %d: surge, unavailable = %d, %d; want %d, %d", i, s, u, tt.surge, tt.unavailable)
		}
	}
}

func TestRolloutStatus(t *testing.T) {
	three := int32(3)
	mk := func(gen, observed int64, st appsv1.DeploymentStatus) *appsv1.Deployment {
		st.ObservedGeneration = observed
		return &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "web", Generation: gen}, Spec: appsv1.DeploymentSpec{Replicas: &three}, Status: st}
	}
	tests := []struct {
		d       *appsv1.Deployment
		want    string
		done    bool
		wantErr bool
	}{
		{mk(2, 1, appsv1.DeploymentStatus{}), "Waiting for deployment spec update to be observed...", false, false},
		{mk(2, 2, appsv1.DeploymentStatus{Replicas: 4, UpdatedReplicas: 1}), `Waiting for deployment "web" rollout to finish: 1 out of 3 new replicas have been updated...`, false, false},
		{mk(2, 2, appsv1.DeploymentStatus{Replicas: 4, UpdatedReplicas: 3}), `Waiting for deployment "web" rollout to finish: 1 old replicas are pending termination...`, false, false},
		{mk(2, 2, appsv1.DeploymentStatus{Replicas: 3, UpdatedReplicas: 3, AvailableReplicas: 2}), `Waiting for deployment "web" rollout to finish: 2 of 3 updated replicas are available...`, false, false},
		{mk(2, 2, appsv1.DeploymentStatus{Replicas: 3, UpdatedReplicas: 3, AvailableReplicas: 3}), `deployment "web" successfully rolled out`, true, false},
		{mk(2, 2, appsv1.DeploymentStatus{Conditions: []appsv1.DeploymentCondition{{Type: appsv1.DeploymentProgressing, Reason: ReasonProgressDeadlineExceeded}}}), "", false, true},
	}
	for i, tt := range tests {
		msg, done, err := RolloutStatus(tt.d)
		if msg != tt.want || done != tt.done || (err != nil) != tt.wantErr {
			t.Errorf("case %d: RolloutStatus = %q, %v, %v; want %q, %v, error %v", i, msg, done, err, tt.want, tt.done, tt.wantErr)
		}
	}
}
