package apiserver

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/skep-io/skep/controlplane/api"
	"github.com/skep-io/skep/controlplane/client"
)

// quotaAdmission enforces ResourceQuotas when objects are created, changed
// or deleted. A charge is a compare-and-set update of the quota's
// status.used: of two creates racing for the last unit, one update fails
// with a conflict, re-reads, and is refused.
type quotaAdmission struct {
	g *registry
}

// usage is what an object counts against quotas.
func usage(obj api.Object) corev1.ResourceList {
	u := corev1.ResourceList{}
	add := func(name corev1.ResourceName, q resource.Quantity) {
		cur := u[name]
		cur.Add(q)
		u[name] = cur
	}
	one := *resource.NewQuantity(1, resource.DecimalSI)
	switch o := obj.(type) {
	case *corev1.Pod:
		if o.Status.Phase == corev1.PodSucceeded || o.Status.Phase == corev1.PodFailed {
			return u
		}
		add(corev1.ResourcePods, one)
		for _, c := range o.Spec.Containers {
			for name, q := range c.Resources.Requests {
				switch name {
				case corev1.ResourceCPU:
					add(corev1.ResourceRequestsCPU, q)
					add(corev1.ResourceCPU, q)
				case corev1.ResourceMemory:
					add(corev1.ResourceRequestsMemory, q)
					add(corev1.ResourceMemory, q)
				}
			}
			for name, q := range c.Resources.Limits {
				switch name {
				case corev1.ResourceCPU:
					add(corev1.ResourceLimitsCPU, q)
				case corev1.ResourceMemory:
					add(corev1.ResourceLimitsMemory, q)
				}
			}
		}
	case *corev1.Service:
		add(corev1.ResourceServices, one)
		if needsNodePorts(o) {
			for range o.Spec.Ports {
				add(corev1.ResourceServicesNodePorts, one)
			}
		}
		if o.Spec.Type == corev1.ServiceTypeLoadBalancer {
			add(corev1.ResourceServicesLoadBalancers, one)
		}
	case *appsv1.Deployment:
		add("count/deployments.apps", one)
	case *appsv1.ReplicaSet:
		add("count/replicasets.apps", one)
	case *corev1.ReplicationController:
		add("replicationcontrollers", one)
	}
	return u
}

// delta is usage(obj) - usage(old), keeping only names that changed.
func delta(obj, old api.Object) corev1.ResourceList {
	d := usage(obj)
	if old != nil {
		for name, q := range usage(old) {
			cur := d[name]
			cur.Sub(q)
			d[name] = cur
		}
	}
	for name, q := range d {
		if q.IsZero() {
			delete(d, name)
		}
	}
	return d
}

const chargeAttempts = 20

// charge adds obj's usage (less old's) to every quota of its namespace that
// limits it, or refuses with 403 when one would go over. The returned
// function takes the charge back, for a create that fails after it.
func (q *quotaAdmission) charge(ctx context.Context, r *api.Resource, obj, old api.Object) (func(), error) {
	nothing := func() {}
	if !r.Namespaced || r.Kind == "ResourceQuota" {
		if rq, ok := obj.(*corev1.ResourceQuota); ok {
			q.recompute(ctx, rq)
		}
		return nothing, nil
	}
	d := delta(obj, old)
	if len(d) == 0 {
		return nothing, nil
	}
	quotas := api.MustLookup("resourcequotas")
	for attempt := 0; ; attempt++ {
		list, _, err := q.g.list(ctx, quotas, obj.GetNamespace(), client.ListOptions{})
		if err != nil {
			return nil, err
		}
		var charged []*corev1.ResourceQuota
		conflict := false
		for _, o := range list {
			rq := o.(*corev1.ResourceQuota)
			if !limits(rq, d) {
				continue
			}
			if err := exceeds(rq, d); err != nil {
				q.undo(ctx, charged, d)
				return nil, apierrors.NewForbidden(gr(r), obj.GetName(), err)
			}
			next := rq.DeepCopy()
			addUsed(next, d, 1)
			if _, err := q.g.update(ctx, quotas, next, true, false); err != nil {
				q.undo(ctx, charged, d)
				if apierrors.IsConflict(err) {
					conflict = true
					break
				}
				return nil, err
			}
			charged = append(charged, rq)
		}
		if !conflict {
			return func() { q.undo(context.WithoutCancel(ctx), charged, d) }, nil
		}
		if attempt == chargeAttempts {
			return nil, apierrors.NewConflict(gr(quotas), obj.GetNamespace(), errors.New("quota kept changing; try again"))
		}
	}
}

// uncharge takes a deleted object's usage off its namespace's quotas.
func (q *quotaAdmission) uncharge(ctx context.Context, r *api.Resource, obj api.Object) {
	if !r.Namespaced || r.Kind == "ResourceQuota" {
		return
	}
	d := usage(obj)
	if len(d) == 0 {
		return // nothing any quota counts (a ConfigMap, a finished pod)
	}
	list, _, err := q.g.list(ctx, api.MustLookup("resourcequotas"), obj.GetNamespace(), client.ListOptions{})
	if err != nil {
		return
	}
	var quotas []*corev1.ResourceQuota
	for _, o := range list {
		if rq := o.(*corev1.ResourceQuota); limits(rq, d) {
			quotas = append(quotas, rq)
		}
	}
	q.undo(ctx, quotas, d)
}

// undo subtracts d from each quota, re-reading on conflicts.
func (q *quotaAdmission) undo(ctx context.Context, quotas []*corev1.ResourceQuota, d corev1.ResourceList) {
	res := api.MustLookup("resourcequotas")
	for _, rq := range quotas {
		for range chargeAttempts {
			cur, err := q.g.get(ctx, res, rq.Namespace, rq.Name)
			if err != nil {
				break
			}
			next := cur.(*corev1.ResourceQuota)
			addUsed(next, d, -1)
			if _, err := q.g.update(ctx, res, next, true, false); !apierrors.IsConflict(err) {
				break
			}
		}
	}
}

// recompute sets a quota's status from what its namespace holds now; it
// runs when a quota is created or changed.
func (q *quotaAdmission) recompute(ctx context.Context, rq *corev1.ResourceQuota) {
	rq.Status.Hard = rq.Spec.Hard.DeepCopy()
	used := corev1.ResourceList{}
	for name := range rq.Spec.Hard {
		used[name] = resource.Quantity{}
	}
	for _, r := range api.All() {
		if !r.Namespaced || r.Kind == "ResourceQuota" || r.Kind == "Endpoints" || r.Kind == "Lease" {
			continue
		}
		objs, _, err := q.g.list(ctx, r, rq.Namespace, client.ListOptions{})
		if err != nil {
			continue
		}
		for _, o := range objs {
			for name, v := range usage(o) {
				if cur, ok := used[name]; ok {
					cur.Add(v)
					used[name] = cur
				}
			}
		}
	}
	rq.Status.Used = used
}

func limits(rq *corev1.ResourceQuota, d corev1.ResourceList) bool {
	for name := range d {
		if _, ok := rq.Spec.Hard[name]; ok {
			return true
		}
	}
	return false
}

func exceeds(rq *corev1.ResourceQuota, d corev1.ResourceList) error {
	var requested, used, limited []string
	for name, want := range d {
		hard, ok := rq.Spec.Hard[name]
		if !ok || want.Sign() <= 0 {
			continue
		}
		cur := rq.Status.Used[name]
		next := cur.DeepCopy()
		next.Add(want)
		if next.Cmp(hard) > 0 {
			requested = append(requested, fmt.Sprintf("%s=%s", name, want.String()))
			used = append(used, fmt.Sprintf("%s=%s", name, cur.String()))
			limited = append(limited, fmt.Sprintf("%s=%s", name, hard.String()))
		}
	}
	if len(requested) == 0 {
		return nil
	}
	sort.Strings(requested)
	sort.Strings(used)
	sort.Strings(limited)
	return fmt.Errorf("exceeded quota: %s, requested: %s, used: %s, limited: %s", rq.Name,
		strings.Join(requested, ","), strings.Join(used, ","), strings.Join(limited, ","))
}

func addUsed(rq *corev1.ResourceQuota, d corev1.ResourceList, sign int) {
	if rq.Status.Used == nil {
		rq.Status.Used = corev1.ResourceList{}
	}
	rq.Status.Hard = rq.Spec.Hard.DeepCopy()
	for name, v := range d {
		if _, ok := rq.Spec.Hard[name]; !ok {
			continue
		}
		cur := rq.Status.Used[name]
		if sign > 0 {
			cur.Add(v)
		} else {
			cur.Sub(v)
			if cur.Sign() < 0 {
				cur = resource.Quantity{}
			}
		}
		rq.Status.Used[name] = cur
	}
}
