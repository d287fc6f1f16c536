// Package deployment rolls Deployments out through ReplicaSets, one per
// pod template (named <deployment>-<pod-template-hash>): RollingUpdate
// within maxSurge and maxUnavailable, counting only available pods, or
// Recreate; it reports status and the Available and Progressing
// conditions, and keeps revisionHistoryLimit old ReplicaSets for rollback.
package deployment

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/skep-io/skep/controlplane/api"
	"github.com/skep-io/skep/controlplane/client"
	"github.com/skep-io/skep/controlplane/client/events"
	"github.com/skep-io/skep/controlplane/controllers/gc"
	"github.com/skep-io/skep/controlplane/controllers/podstate"
	"github.com/skep-io/skep/controlplane/queue"
)

// Condition reasons, as Kubernetes spells them.
const (
	ReasonNewRSAvailable           = "NewReplicaSetAvailable"
	ReasonRSUpdated                = "ReplicaSetUpdated"
	ReasonNewRSCreated             = "NewReplicaSetCreated"
	ReasonProgressDeadlineExceeded = "ProgressDeadlineExceeded"
	ReasonMinimumAvailable         = "MinimumReplicasAvailable"
	ReasonMinimumUnavailable       = "MinimumReplicasUnavailable"
)

// Controller reconciles Deployments.
type Controller struct {
	c           client.Interface
	deployments *client.Informer
	replicaSets *client.Informer
	pods        *client.Informer
	queue       *queue.Queue
	logger      *slog.Logger
	now         func() time.Time
	events      *events.Recorder
}

// New returns the Deployment controller; it registers handlers on the
// informers, which the caller runs. rec records ScalingReplicaSet on the
// Deployments (nil records none).
func New(c client.Interface, deployments, replicaSets, pods *client.Informer, rec *events.Recorder, logger *slog.Logger) *Controller {
	dc := &Controller{
		c: c, deployments: deployments, replicaSets: replicaSets, pods: pods, events: rec,
		queue: queue.New(), logger: logger.With("controller", "deployments"), now: time.Now,
	}
	enqueue := func(obj api.Object) { dc.queue.Add(client.KeyOf(obj)) }
	deployments.AddHandlers(client.Handlers{OnAdd: enqueue, OnUpdate: func(_, o api.Object) { enqueue(o) }, OnDelete: enqueue})
	rsChanged := func(obj api.Object) { dc.rsChanged(obj.(*appsv1.ReplicaSet)) }
	replicaSets.AddHandlers(client.Handlers{OnAdd: rsChanged, OnUpdate: func(_, o api.Object) { rsChanged(o) }, OnDelete: rsChanged})
	// Availability is read from pods, so their readiness moves rollouts on.
	podChanged := func(obj api.Object) { dc.podChanged(obj.(*corev1.Pod)) }
	pods.AddHandlers(client.Handlers{OnAdd: podChanged, OnUpdate: func(_, o api.Object) { podChanged(o) }, OnDelete: podChanged})
	return dc
}

// Run reconciles until ctx ends.
func (dc *Controller) Run(ctx context.Context, workers int) {
	if !client.WaitForSync(ctx, dc.deployments, dc.replicaSets, dc.pods) {
		return
	}
	queue.Run(ctx, dc.queue, workers, dc.sync, dc.logger)
}

func controllerOf(obj metav1.Object) *metav1.OwnerReference { return podstate.ControllerOf(obj) }

func (dc *Controller) rsChanged(rs *appsv1.ReplicaSet) {
	if ref := controllerOf(rs); ref != nil {
		if ref.Kind == "Deployment" {
			dc.queue.Add(client.Key(rs.Namespace, ref.Name))
		}
		return
	}
	for _, o := range dc.deployments.ListNamespace(rs.Namespace) {
		d := o.(*appsv1.Deployment)
		if sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector); err == nil && !sel.Empty() && sel.Matches(labels.Set(rs.Labels)) {
			dc.queue.Add(client.KeyOf(d))
		}
	}
}

func (dc *Controller) podChanged(p *corev1.Pod) {
	ref := controllerOf(p)
	if ref == nil || ref.Kind != "ReplicaSet" {
		return
	}
	if rs, ok := dc.replicaSets.Get(p.Namespace, ref.Name); ok {
		if dref := controllerOf(rs); dref != nil && dref.Kind == "Deployment" {
			dc.queue.Add(client.Key(p.Namespace, dref.Name))
		}
	}
}

// replicaSet is a ReplicaSet with what this sync knows of its pods.
type replicaSet struct {
	rs        *appsv1.ReplicaSet
	available int32 // active pods available for minReadySeconds
	pods      int   // pods of any state, terminating included
}

func (r *replicaSet) replicas() int32 { return replicasOfRS(r.rs) }

// safeAvailable is what stays available once the ReplicaSet has reached
// its spec: it deletes unavailable pods first, so min(spec, available).
func (r *replicaSet) safeAvailable() int32 { return min(r.replicas(), r.available) }

func replicasOf(d *appsv1.Deployment) int32 {
	if d.Spec.Replicas == nil {
		return 1
	}
	return *d.Spec.Replicas
}

func replicasOfRS(rs *appsv1.ReplicaSet) int32 {
	if rs.Spec.Replicas == nil {
		return 1
	}
	return *rs.Spec.Replicas
}

func (dc *Controller) sync(ctx context.Context, key string) error {
	ns, name := splitKey(key)
	obj, ok := dc.deployments.Get(ns, name)
	if !ok || obj.GetDeletionTimestamp() != nil || gc.Orphaning(obj) {
		return nil
	}
	d := obj.(*appsv1.Deployment).DeepCopy()
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil || sel.Empty() {
		dc.logger.Warn("deployment selects nothing or everything; skipped", "deployment", key, "err", err)
		return nil
	}
	all, err := dc.claimReplicaSets(ctx, d, sel)
	if err != nil {
		return err
	}
	newRS, old := findNewRS(d, all)
	s := &rollout{dc: dc, d: d, newRS: newRS, old: old, created: false}
	switch {
	case d.Spec.Paused:
		err = s.scaleOnly(ctx)
	case d.Spec.Strategy.Type == appsv1.RecreateDeploymentStrategyType:
		err = s.recreate(ctx)
	default:
		err = s.rollingUpdate(ctx)
	}
	if err != nil {
		return errors.Join(err, s.syncStatus(ctx))
	}
	return errors.Join(s.cleanup(ctx), s.syncStatus(ctx))
}

// claimReplicaSets returns the ReplicaSets the deployment controls, with
// their pods counted, adopting orphans its selector matches.
func (dc *Controller) claimReplicaSets(ctx context.Context, d *appsv1.Deployment, sel labels.Selector) ([]*replicaSet, error) {
	var out []*replicaSet
	byUID := map[types.UID]*replicaSet{}
	var mayAdopt *bool // asked of the API once, at the first orphan
	for _, o := range dc.replicaSets.ListNamespace(d.Namespace) {
		rs := o.(*appsv1.ReplicaSet)
		ref := controllerOf(rs)
		if ref == nil && rs.DeletionTimestamp == nil && sel.Matches(labels.Set(rs.Labels)) {
			if mayAdopt == nil {
				ok, err := gc.Recheck(ctx, dc.c, deploymentsResource, d)
				if err != nil {
					return nil, err
				}
				mayAdopt = &ok
			}
			if !*mayAdopt {
				continue
			}
			adopted := rs.DeepCopy()
			yes := true
			adopted.OwnerReferences = append(adopted.OwnerReferences, metav1.OwnerReference{
				APIVersion: "apps/v1", Kind: "Deployment", Name: d.Name, UID: d.UID, Controller: &yes, BlockOwnerDeletion: &yes})
			updated, err := dc.c.Update(ctx, replicaSetsResource, adopted)
			if err != nil {
				return nil, fmt.Errorf("adopt replicaset %s: %w", client.KeyOf(rs), err)
			}
			dc.logger.Info("replicaset adopted", "deployment", client.KeyOf(d), "replicaset", rs.Name)
			rs, ref = updated.(*appsv1.ReplicaSet), controllerOf(updated)
		}
		if ref == nil || ref.UID != d.UID {
			continue
		}
		r := &replicaSet{rs: rs}
		out = append(out, r)
		byUID[rs.UID] = r
	}
	now := dc.now()
	for _, o := range dc.pods.ListNamespace(d.Namespace) {
		p := o.(*corev1.Pod)
		ref := controllerOf(p)
		if ref == nil {
			continue
		}
		if r, ok := byUID[ref.UID]; ok {
			r.pods++
			if podstate.Active(p) && podstate.Available(p, d.Spec.MinReadySeconds, now) {
				r.available++
			}
		}
	}
	return out, nil
}

// findNewRS splits the ReplicaSets into the one running the deployment's
// current template (nil if none yet) and the old ones, oldest first.
func findNewRS(d *appsv1.Deployment, all []*replicaSet) (*replicaSet, []*replicaSet) {
	sort.Slice(all, func(i, j int) bool {
		ti, tj := all[i].rs.CreationTimestamp, all[j].rs.CreationTimestamp
		if !ti.Equal(&tj) {
			return ti.Before(&tj)
		}
		return all[i].rs.Name < all[j].rs.Name
	})
	var newRS *replicaSet
	var old []*replicaSet
	for _, r := range all {
		if newRS == nil && EqualIgnoreHash(&r.rs.Spec.Template, &d.Spec.Template) {
			newRS = r
			continue
		}
		old = append(old, r)
	}
	return newRS, old
}

// rollout is one sync of one deployment.
type rollout struct {
	dc      *Controller
	d       *appsv1.Deployment
	newRS   *replicaSet
	old     []*replicaSet
	created bool // this sync created newRS
}

func (s *rollout) all() []*replicaSet {
	out := append([]*replicaSet(nil), s.old...)
	if s.newRS != nil {
		out = append(out, s.newRS)
	}
	return out
}

func sumReplicas(rss []*replicaSet) int32 {
	var n int32
	for _, r := range rss {
		n += r.replicas()
	}
	return n
}

// surgeAndUnavailable resolves maxSurge (rounded up) and maxUnavailable
// (rounded down) against the replica count; both 0 would deadlock, so
// then one pod may be unavailable, as in Kubernetes.
func surgeAndUnavailable(d *appsv1.Deployment) (surge, unavailable int32) {
	want := int(replicasOf(d))
	if d.Spec.Strategy.Type != appsv1.RollingUpdateDeploymentStrategyType || d.Spec.Strategy.RollingUpdate == nil {
		return 0, 0
	}
	ru := d.Spec.Strategy.RollingUpdate
	def := intstr.FromString("25%")
	ms, mu := ru.MaxSurge, ru.MaxUnavailable
	if ms == nil {
		ms = &def
	}
	if mu == nil {
		mu = &def
	}
	s, _ := intstr.GetScaledValueFromIntOrPercent(ms, want, true)
	u, _ := intstr.GetScaledValueFromIntOrPercent(mu, want, false)
	if s == 0 && u == 0 {
		u = 1
	}
	return int32(s), int32(min(u, want))
}

// ensureNewRS finds or creates the ReplicaSet of the current template and
// keeps revision numbers right: the new one has the highest, also after a
// rollback to an old template.
func (s *rollout) ensureNewRS(ctx context.Context, create bool, replicas int32) error {
	maxOld := int64(0)
	for _, r := range s.old {
		maxOld = max(maxOld, Revision(r.rs.Annotations))
	}
	rev := strconv.FormatInt(maxOld+1, 10)
	if s.newRS != nil {
		if Revision(s.newRS.rs.Annotations) <= maxOld {
			rs := s.newRS.rs.DeepCopy()
			if rs.Annotations == nil {
				rs.Annotations = map[string]string{}
			}
			rs.Annotations[RevisionAnnotation] = rev
			updated, err := s.dc.c.Update(ctx, replicaSetsResource, rs)
			if err != nil {
				return fmt.Errorf("set revision of replicaset %s: %w", client.KeyOf(rs), err)
			}
			s.newRS.rs = updated.(*appsv1.ReplicaSet)
		}
		return s.setDeploymentRevision(ctx, s.newRS.rs.Annotations[RevisionAnnotation])
	}
	if !create {
		return nil
	}
	d := s.d
	hash := TemplateHash(&d.Spec.Template, d.Status.CollisionCount)
	tmpl := d.Spec.Template.DeepCopy()
	if tmpl.Labels == nil {
		tmpl.Labels = map[string]string{}
	}
	tmpl.Labels[PodTemplateHashLabel] = hash
	sel := d.Spec.Selector.DeepCopy()
	if sel.MatchLabels == nil {
		sel.MatchLabels = map[string]string{}
	}
	sel.MatchLabels[PodTemplateHashLabel] = hash
	surge, _ := surgeAndUnavailable(d)
	yes := true
	rs := &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: d.Namespace,
			Name:      d.Name + "-" + hash,
			Labels:    tmpl.Labels,
			Annotations: map[string]string{
				RevisionAnnotation:        rev,
				DesiredReplicasAnnotation: strconv.Itoa(int(replicasOf(d))),
				MaxReplicasAnnotation:     strconv.Itoa(int(replicasOf(d) + surge)),
			},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "Deployment", Name: d.Name, UID: d.UID, Controller: &yes, BlockOwnerDeletion: &yes}},
		},
		Spec: appsv1.ReplicaSetSpec{Replicas: &replicas, MinReadySeconds: d.Spec.MinReadySeconds, Selector: sel, Template: *tmpl},
	}
	// `rollout history` shows why each revision was made, as the user
	// wrote it on the deployment.
	if cause, ok := d.Annotations[ChangeCauseAnnotation]; ok {
		rs.Annotations[ChangeCauseAnnotation] = cause
	}
	created, err := s.dc.c.Create(ctx, replicaSetsResource, rs)
	if apierrors.IsAlreadyExists(err) {
		existing, gerr := s.dc.c.Get(ctx, replicaSetsResource, rs.Namespace, rs.Name)
		if gerr != nil {
			return fmt.Errorf("get replicaset %s: %w", client.KeyOf(rs), gerr)
		}
		if ref := controllerOf(existing); ref != nil && ref.UID == d.UID && EqualIgnoreHash(&existing.(*appsv1.ReplicaSet).Spec.Template, &d.Spec.Template) {
			return fmt.Errorf("replicaset %s exists but is not in the cache yet", client.KeyOf(rs)) // retry
		}
		// Another template hashes the same: change the hash and retry.
		n := int32(0)
		if d.Status.CollisionCount != nil {
			n = *d.Status.CollisionCount
		}
		n++
		d.Status.CollisionCount = &n
		if _, uerr := s.dc.c.UpdateStatus(ctx, deploymentsResource, d); uerr != nil {
			return fmt.Errorf("record hash collision of deployment %s: %w", client.KeyOf(d), uerr)
		}
		return fmt.Errorf("replicaset name %s is taken by another template; collisionCount now %d", rs.Name, n)
	}
	if err != nil {
		return fmt.Errorf("create replicaset for deployment %s: %w", client.KeyOf(d), err)
	}
	s.dc.logger.Info("replicaset created", "deployment", client.KeyOf(d), "replicaset", rs.Name, "revision", rev, "replicas", replicas)
	if replicas > 0 {
		s.dc.events.Eventf(d, corev1.EventTypeNormal, "ScalingReplicaSet", "Scaled up replica set %s from 0 to %d", rs.Name, replicas)
	}
	s.newRS = &replicaSet{rs: created.(*appsv1.ReplicaSet)}
	s.created = true
	return s.setDeploymentRevision(ctx, rev)
}

func (s *rollout) setDeploymentRevision(ctx context.Context, rev string) error {
	if s.d.Annotations[RevisionAnnotation] == rev {
		return nil
	}
	d := s.d.DeepCopy()
	if d.Annotations == nil {
		d.Annotations = map[string]string{}
	}
	d.Annotations[RevisionAnnotation] = rev
	updated, err := s.dc.c.Update(ctx, deploymentsResource, d)
	if err != nil {
		return fmt.Errorf("set revision of deployment %s: %w", client.KeyOf(d), err)
	}
	s.d = updated.(*appsv1.Deployment)
	return nil
}

// scale sets a ReplicaSet's replicas.
func (s *rollout) scale(ctx context.Context, r *replicaSet, replicas int32) error {
	if r.replicas() == replicas {
		return nil
	}
	rs := r.rs.DeepCopy()
	rs.Spec.Replicas = &replicas
	if rs.Annotations == nil {
		rs.Annotations = map[string]string{}
	}
	rs.Annotations[DesiredReplicasAnnotation] = strconv.Itoa(int(replicasOf(s.d)))
	updated, err := s.dc.c.Update(ctx, replicaSetsResource, rs)
	if err != nil {
		return fmt.Errorf("scale replicaset %s to %d: %w", client.KeyOf(rs), replicas, err)
	}
	s.dc.logger.Info("replicaset scaled", "deployment", client.KeyOf(s.d), "replicaset", rs.Name, "from", r.replicas(), "to", replicas)
	direction := "up"
	if replicas < r.replicas() {
		direction = "down"
	}
	s.dc.events.Eventf(s.d, corev1.EventTypeNormal, "ScalingReplicaSet", "Scaled %s replica set %s from %d to %d", direction, rs.Name, r.replicas(), replicas)
	r.rs = updated.(*appsv1.ReplicaSet)
	return nil
}

// rollingUpdate does one step: scale the new ReplicaSet up within the
// surge, else scale old ones down as far as availability allows.
func (s *rollout) rollingUpdate(ctx context.Context) error {
	want := replicasOf(s.d)
	surge, maxUnavailable := surgeAndUnavailable(s.d)
	if s.newRS == nil {
		initial := min(max(want+surge-sumReplicas(s.all()), 0), want)
		if err := s.ensureNewRS(ctx, true, initial); err != nil {
			return err
		}
		return nil
	}
	if err := s.ensureNewRS(ctx, false, 0); err != nil {
		return err
	}

	// Scale the new ReplicaSet up, or down to the replica count.
	switch cur := s.newRS.replicas(); {
	case cur > want:
		return s.scale(ctx, s.newRS, want)
	case cur < want:
		room := want + surge - sumReplicas(s.all())
		if room > 0 {
			return s.scale(ctx, s.newRS, cur+min(room, want-cur))
		}
	}

	// Scale old ReplicaSets down, never below minAvailable available pods.
	if sumReplicas(s.old) == 0 {
		return nil
	}
	minAvailable := want - maxUnavailable
	newUnavailable := s.newRS.replicas() - s.newRS.safeAvailable()
	maxScaleDown := sumReplicas(s.all()) - minAvailable - newUnavailable
	if maxScaleDown <= 0 {
		return nil
	}
	// First the old pods that are not available anyway: removing them
	// costs nothing.
	var done int32
	for _, r := range s.old {
		unhealthy := r.replicas() - r.safeAvailable()
		if unhealthy <= 0 || done >= maxScaleDown {
			continue
		}
		n := min(unhealthy, maxScaleDown-done)
		if err := s.scale(ctx, r, r.replicas()-n); err != nil {
			return err
		}
		done += n
	}
	// Then available ones, down to minAvailable in all.
	var available int32
	for _, r := range s.all() {
		available += r.safeAvailable()
	}
	excess := available - minAvailable
	for _, r := range s.old {
		if excess <= 0 {
			break
		}
		n := min(r.replicas(), excess)
		if n == 0 {
			continue
		}
		if err := s.scale(ctx, r, r.replicas()-n); err != nil {
			return err
		}
		excess -= n
	}
	return nil
}

// recreate scales every old ReplicaSet to zero, waits until their pods
// are gone, then scales the new one up.
func (s *rollout) recreate(ctx context.Context) error {
	if err := s.ensureNewRS(ctx, false, 0); err != nil {
		return err
	}
	for _, r := range s.old {
		if err := s.scale(ctx, r, 0); err != nil {
			return err
		}
	}
	for _, r := range s.old {
		if r.pods > 0 {
			return nil // the pod events bring us back
		}
	}
	if s.newRS == nil {
		return s.ensureNewRS(ctx, true, replicasOf(s.d))
	}
	return s.scale(ctx, s.newRS, replicasOf(s.d))
}

// scaleOnly serves a paused deployment: replicas follow the spec, the
// template does not roll out.
func (s *rollout) scaleOnly(ctx context.Context) error {
	target := s.newRS
	if target == nil {
		for _, r := range s.old {
			if r.replicas() > 0 {
				target = r
			}
		}
	}
	if target == nil {
		return nil
	}
	return s.scale(ctx, target, replicasOf(s.d))
}

// cleanup deletes old, empty ReplicaSets beyond revisionHistoryLimit.
func (s *rollout) cleanup(ctx context.Context) error {
	limit := int32(10)
	if s.d.Spec.RevisionHistoryLimit != nil {
		limit = *s.d.Spec.RevisionHistoryLimit
	}
	var empty []*replicaSet
	for _, r := range s.old {
		if r.replicas() == 0 && r.pods == 0 && r.rs.Status.Replicas == 0 && r.rs.DeletionTimestamp == nil {
			empty = append(empty, r)
		}
	}
	sort.Slice(empty, func(i, j int) bool { return Revision(empty[i].rs.Annotations) < Revision(empty[j].rs.Annotations) })
	for len(empty) > int(limit) {
		r := empty[0]
		empty = empty[1:]
		err := s.dc.c.Delete(ctx, replicaSetsResource, r.rs.Namespace, r.rs.Name, client.DeleteOptions{ResourceVersion: r.rs.ResourceVersion})
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete old replicaset %s: %w", client.KeyOf(r.rs), err)
		}
	}
	return nil
}

// syncStatus writes the deployment's status from its ReplicaSets'.
func (s *rollout) syncStatus(ctx context.Context) error {
	d := s.d
	want := replicasOf(d)
	_, maxUnavailable := surgeAndUnavailable(d)
	st := appsv1.DeploymentStatus{ObservedGeneration: d.Generation, CollisionCount: d.Status.CollisionCount}
	for _, r := range s.all() {
		st.Replicas += r.rs.Status.Replicas
		st.ReadyReplicas += r.rs.Status.ReadyReplicas
		st.AvailableReplicas += r.rs.Status.AvailableReplicas
	}
	if s.newRS != nil {
		st.UpdatedReplicas = s.newRS.rs.Status.Replicas
	}
	st.UnavailableReplicas = max(want-st.AvailableReplicas, 0)
	now := metav1.NewTime(s.dc.now())
	st.Conditions = append([]appsv1.DeploymentCondition(nil), d.Status.Conditions...)

	avail := appsv1.DeploymentCondition{Type: appsv1.DeploymentAvailable, Status: corev1.ConditionTrue,
		Reason: ReasonMinimumAvailable, Message: "Deployment has minimum availability."}
	if st.AvailableReplicas < want-maxUnavailable {
		avail.Status, avail.Reason, avail.Message = corev1.ConditionFalse, ReasonMinimumUnavailable, "Deployment does not have minimum availability."
	}
	setCondition(&st, avail, now, false)

	prev := condition(d.Status.Conditions, appsv1.DeploymentProgressing)
	rsName := ""
	if s.newRS != nil {
		rsName = s.newRS.rs.Name
	}
	complete := st.UpdatedReplicas == want && st.Replicas == want && st.AvailableReplicas == want && s.newRS != nil
	progressed := st.UpdatedReplicas > d.Status.UpdatedReplicas || st.AvailableReplicas > d.Status.AvailableReplicas ||
		st.Replicas < d.Status.Replicas || d.Generation > d.Status.ObservedGeneration
	var prog *appsv1.DeploymentCondition
	switch {
	case d.Spec.Paused:
	case complete:
		prog = &appsv1.DeploymentCondition{Type: appsv1.DeploymentProgressing, Status: corev1.ConditionTrue,
			Reason: ReasonNewRSAvailable, Message: fmt.Sprintf("ReplicaSet %q has successfully progressed.", rsName)}
	case s.created:
		prog = &appsv1.DeploymentCondition{Type: appsv1.DeploymentProgressing, Status: corev1.ConditionTrue,
			Reason: ReasonNewRSCreated, Message: fmt.Sprintf("Created new replica set %q", rsName)}
	case progressed || prev == nil:
		prog = &appsv1.DeploymentCondition{Type: appsv1.DeploymentProgressing, Status: corev1.ConditionTrue,
			Reason: ReasonRSUpdated, Message: fmt.Sprintf("ReplicaSet %q is progressing.", rsName)}
	case d.Spec.ProgressDeadlineSeconds != nil && prev.Reason != ReasonNewRSAvailable:
		deadline := prev.LastUpdateTime.Add(time.Duration(*d.Spec.ProgressDeadlineSeconds) * time.Second)
		if !now.Time.Before(deadline) {
			prog = &appsv1.DeploymentCondition{Type: appsv1.DeploymentProgressing, Status: corev1.ConditionFalse,
				Reason: ReasonProgressDeadlineExceeded, Message: fmt.Sprintf("ReplicaSet %q has timed out progressing.", rsName)}
		} else {
			s.dc.queue.AddAfter(client.KeyOf(d), deadline.Sub(now.Time)+time.Second)
		}
	}
	if prog != nil {
		// lastUpdateTime records progress: the deadline counts from it.
		setCondition(&st, *prog, now, progressed || s.created)
	}
	if apiequality.Semantic.DeepEqual(st, d.Status) {
		return nil
	}
	next := d.DeepCopy()
	next.Status = st
	if _, err := s.dc.c.UpdateStatus(ctx, deploymentsResource, next); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("update status of deployment %s: %w", client.KeyOf(d), err)
	}
	return nil
}

func condition(conds []appsv1.DeploymentCondition, t appsv1.DeploymentConditionType) *appsv1.DeploymentCondition {
	for i := range conds {
		if conds[i].Type == t {
			return &conds[i]
		}
	}
	return nil
}

// setCondition replaces the condition of c's type; lastTransitionTime
// moves only when the status changes, lastUpdateTime when anything does
// or touch is set.
func setCondition(st *appsv1.DeploymentStatus, c appsv1.DeploymentCondition, now metav1.Time, touch bool) {
	c.LastUpdateTime, c.LastTransitionTime = now, now
	if prev := condition(st.Conditions, c.Type); prev != nil {
		if prev.Status == c.Status && prev.Reason == c.Reason && prev.Message == c.Message {
			if touch {
				prev.LastUpdateTime = now
			}
			return
		}
		if prev.Status == c.Status {
			c.LastTransitionTime = prev.LastTransitionTime
		}
		*prev = c
		return
	}
	st.Conditions = append(st.Conditions, c)
}

func splitKey(key string) (string, string) {
	for i := 0; i < len(key); i++ {
		if key[i] == '/' {
			return key[:i], key[i+1:]
		}
	}
	return "", key
}
