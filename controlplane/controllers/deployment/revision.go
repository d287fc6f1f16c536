package deployment

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"sort"
	"strconv"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	utilrand "k8s.io/apimachinery/pkg/util/rand"

	"github.com/skep-io/skep/controlplane/api"
	"github.com/skep-io/skep/controlplane/client"
)

// The annotations and label Kubernetes uses, so kubectl-minded users and
// tools read skep's objects the same way.
const (
	RevisionAnnotation        = "deployment.kubernetes.io/revision"
	DesiredReplicasAnnotation = "deployment.kubernetes.io/desired-replicas"
	MaxReplicasAnnotation     = "deployment.kubernetes.io/max-replicas"
	ChangeCauseAnnotation     = "kubernetes.io/change-cause"
	PodTemplateHashLabel      = appsv1.DefaultDeploymentUniqueLabelKey // "pod-template-hash"
)

var (
	deploymentsResource = api.MustLookup("deployments")
	replicaSetsResource = api.MustLookup("replicasets")
)

// TemplateHash names a pod template: ReplicaSets are called
// <deployment>-<hash> and carry the hash as the pod-template-hash label.
// collisionCount changes the hash when two templates collide.
func TemplateHash(tmpl *corev1.PodTemplateSpec, collisionCount *int32) string {
	h := fnv.New32a()
	data, _ := json.Marshal(tmpl) // map keys are sorted: stable
	h.Write(data)
	if collisionCount != nil {
		var b [4]byte
		binary.LittleEndian.PutUint32(b[:], uint32(*collisionCount))
		h.Write(b[:])
	}
	return utilrand.SafeEncodeString(fmt.Sprint(h.Sum32()))
}

// EqualIgnoreHash compares two pod templates as if neither had the
// pod-template-hash label.
func EqualIgnoreHash(a, b *corev1.PodTemplateSpec) bool {
	a, b = a.DeepCopy(), b.DeepCopy()
	delete(a.Labels, PodTemplateHashLabel)
	delete(b.Labels, PodTemplateHashLabel)
	if len(a.Labels) == 0 {
		a.Labels = nil
	}
	if len(b.Labels) == 0 {
		b.Labels = nil
	}
	return apiequality.Semantic.DeepEqual(a, b)
}

// Revision reads an object's revision annotation (0 when absent).
func Revision(annotations map[string]string) int64 {
	v, err := strconv.ParseInt(annotations[RevisionAnnotation], 10, 64)
	if err != nil {
		return 0
	}
	return v
}

// History lists the ReplicaSets a deployment controls, newest revision first.
func History(ctx context.Context, c client.Interface, d *appsv1.Deployment) ([]*appsv1.ReplicaSet, error) {
	objs, _, err := c.List(ctx, replicaSetsResource, d.Namespace, client.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list replicasets of deployment %s/%s: %w", d.Namespace, d.Name, err)
	}
	var out []*appsv1.ReplicaSet
	for _, o := range objs {
		rs := o.(*appsv1.ReplicaSet)
		if ref := controllerOf(rs); ref != nil && ref.UID == d.UID {
			out = append(out, rs)
		}
	}
	sort.Slice(out, func(i, j int) bool { return Revision(out[i].Annotations) > Revision(out[j].Annotations) })
	return out, nil
}

// Rollback sets a deployment's pod template back to the one of revision
// toRevision, or with 0 to the revision before the current one, as
// `kubectl rollout undo` does; the controller then rolls out that template
// under a new revision number. It returns the updated deployment.
func Rollback(ctx context.Context, c client.Interface, namespace, name string, toRevision int64) (*appsv1.Deployment, error) {
	obj, err := c.Get(ctx, deploymentsResource, namespace, name)
	if err != nil {
		return nil, fmt.Errorf("get deployment %s/%s: %w", namespace, name, err)
	}
	d := obj.(*appsv1.Deployment).DeepCopy()
	history, err := History(ctx, c, d)
	if err != nil {
		return nil, err
	}
	var target *appsv1.ReplicaSet
	current := Revision(d.Annotations)
	for _, rs := range history {
		rev := Revision(rs.Annotations)
		if (toRevision == 0 && rev < current) || (toRevision != 0 && rev == toRevision) {
			target = rs
			break
		}
	}
	if target == nil {
		if toRevision == 0 {
			return nil, fmt.Errorf("deployment %s/%s has no previous revision to roll back to", namespace, name)
		}
		return nil, fmt.Errorf("deployment %s/%s has no revision %d", namespace, name, toRevision)
	}
	if EqualIgnoreHash(&target.Spec.Template, &d.Spec.Template) {
		return d, nil // already running that template
	}
	tmpl := target.Spec.Template.DeepCopy()
	delete(tmpl.Labels, PodTemplateHashLabel)
	d.Spec.Template = *tmpl
	updated, err := c.Update(ctx, deploymentsResource, d)
	if err != nil {
		return nil, fmt.Errorf("roll back deployment %s/%s to revision %d: %w", namespace, name, Revision(target.Annotations), err)
	}
	return updated.(*appsv1.Deployment), nil
}

// RolloutStatus says how a deployment's rollout stands, as `kubectl
// rollout status` prints it; done is true once it has finished, and err
// is set when it has exceeded its progress deadline.
func RolloutStatus(d *appsv1.Deployment) (msg string, done bool, err error) {
	if d.Generation > d.Status.ObservedGeneration {
		return "Waiting for deployment spec update to be observed...", false, nil
	}
	for _, c := range d.Status.Conditions {
		if c.Type == appsv1.DeploymentProgressing && c.Reason == ReasonProgressDeadlineExceeded {
			return "", false, fmt.Errorf("deployment %q exceeded its progress deadline", d.Name)
		}
	}
	want := replicasOf(d)
	switch st := d.Status; {
	case st.UpdatedReplicas < want:
		return fmt.Sprintf("Waiting for deployment %q rollout to finish: %d out of %d new replicas have been updated...", d.Name, st.UpdatedReplicas, want), false, nil
	case st.Replicas > st.UpdatedReplicas:
		return fmt.Sprintf("Waiting for deployment %q rollout to finish: %d old replicas are pending termination...", d.Name, st.Replicas-st.UpdatedReplicas), false, nil
	case st.AvailableReplicas < st.UpdatedReplicas:
		return fmt.Sprintf("Waiting for deployment %q rollout to finish: %d of %d updated replicas are available...", d.Name, st.AvailableReplicas, st.UpdatedReplicas), false, nil
	}
	return fmt.Sprintf("deployment %q successfully rolled out", d.Name), true, nil
}
