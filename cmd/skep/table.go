package main

import (
	"fmt"
	"sort"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/skep-io/skep/controlplane/api"
)

// table gives the columns kubectl shows for a kind, and a row function.
func table(r *api.Resource, wide bool) ([]string, func(api.Object) []string) {
	switch r.Kind {
	case "Pod":
		cols := []string{"NAME", "READY", "STATUS", "RESTARTS", "AGE"}
		if wide {
			cols = append(cols, "IP", "NODE")
		}
		return cols, func(o api.Object) []string {
			p := o.(*corev1.Pod)
			ready, restarts := 0, int32(0)
			for _, cs := range p.Status.ContainerStatuses {
				if cs.Ready {
					ready++
				}
				restarts += cs.RestartCount
			}
			row := []string{p.Name, fmt.Sprintf("%d/%d", ready, len(p.Spec.Containers)), podStatus(p), fmt.Sprint(restarts), age(o)}
			if wide {
				row = append(row, orNone(p.Status.PodIP), orNone(p.Spec.NodeName))
			}
			return row
		}
	case "Service":
		cols := []string{"NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"}
		if wide {
			cols = append(cols, "SELECTOR", "DNS")
		}
		return cols, func(o api.Object) []string {
			s := o.(*corev1.Service)
			row := []string{s.Name, string(s.Spec.Type), orNone(s.Spec.ClusterIP), externalIP(s), servicePorts(s), age(o)}
			if wide {
				sel := "<none>"
				if len(s.Spec.Selector) > 0 {
					sel = labels.Set(s.Spec.Selector).String()
				}
				row = append(row, sel, s.Name+"."+s.Namespace+".svc.cluster.local")
			}
			return row
		}
	case "Deployment":
		return []string{"NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"}, func(o api.Object) []string {
			d := o.(*appsv1.Deployment)
			return []string{d.Name, fmt.Sprintf("%d/%d", d.Status.ReadyReplicas, deref(d.Spec.Replicas)), fmt.Sprint(d.Status.UpdatedReplicas), fmt.Sprint(d.Status.AvailableReplicas), age(o)}
		}
	case "ReplicaSet":
		return []string{"NAME", "DESIRED", "CURRENT", "READY", "AGE"}, func(o api.Object) []string {
			rs := o.(*appsv1.ReplicaSet)
			return []string{rs.Name, fmt.Sprint(deref(rs.Spec.Replicas)), fmt.Sprint(rs.Status.Replicas), fmt.Sprint(rs.Status.ReadyReplicas), age(o)}
		}
	case "ReplicationController":
		return []string{"NAME", "DESIRED", "CURRENT", "READY", "AGE"}, func(o api.Object) []string {
			rc := o.(*corev1.ReplicationController)
			return []string{rc.Name, fmt.Sprint(deref(rc.Spec.Replicas)), fmt.Sprint(rc.Status.Replicas), fmt.Sprint(rc.Status.ReadyReplicas), age(o)}
		}
	case "Node":
		cols := []string{"NAME", "STATUS", "ROLES", "AGE", "VERSION"}
		if wide {
			cols = append(cols, "INTERNAL-IP", "POD-CIDR")
		}
		return cols, func(o api.Object) []string {
			n := o.(*corev1.Node)
			status := "Unknown"
			for _, c := range n.Status.Conditions {
				if c.Type == corev1.NodeReady {
					status = map[corev1.ConditionStatus]string{corev1.ConditionTrue: "Ready", corev1.ConditionFalse: "NotReady"}[c.Status]
					if status == "" {
						status = "NotReady"
					}
				}
			}
			if n.Spec.Unschedulable {
				status += ",SchedulingDisabled"
			}
			row := []string{n.Name, status, "<none>", age(o), orNone(n.Status.NodeInfo.KubeletVersion)}
			if wide {
				ip := ""
				for _, a := range n.Status.Addresses {
					if a.Type == corev1.NodeInternalIP {
						ip = a.Address
					}
				}
				row = append(row, orNone(ip), orNone(n.Spec.PodCIDR))
			}
			return row
		}
	case "Namespace":
		return []string{"NAME", "STATUS", "AGE"}, func(o api.Object) []string {
			ns := o.(*corev1.Namespace)
			return []string{ns.Name, string(ns.Status.Phase), age(o)}
		}
	case "Endpoints":
		return []string{"NAME", "ENDPOINTS", "AGE"}, func(o api.Object) []string {
			e := o.(*corev1.Endpoints)
			return []string{e.Name, endpointList(e), age(o)}
		}
	case "EndpointSlice":
		return []string{"NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"}, func(o api.Object) []string {
			es := o.(*discoveryv1.EndpointSlice)
			return []string{es.Name, string(es.AddressType), slicePorts(es), sliceAddresses(es), age(o)}
		}
	case "ConfigMap":
		return []string{"NAME", "DATA", "AGE"}, func(o api.Object) []string {
			cm := o.(*corev1.ConfigMap)
			return []string{cm.Name, fmt.Sprint(len(cm.Data) + len(cm.BinaryData)), age(o)}
		}
	case "ResourceQuota":
		return []string{"NAME", "AGE", "REQUEST", "LIMIT"}, func(o api.Object) []string {
			q := o.(*corev1.ResourceQuota)
			var req, lim []string
			names := make([]string, 0, len(q.Spec.Hard))
			for n := range q.Spec.Hard {
				names = append(names, string(n))
			}
			sort.Strings(names)
			for _, n := range names {
				used := q.Status.Used[corev1.ResourceName(n)]
				hard := q.Spec.Hard[corev1.ResourceName(n)]
				cell := fmt.Sprintf("%s: %s/%s", n, used.String(), hard.String())
				if strings.HasPrefix(n, "limits.") {
					lim = append(lim, cell)
				} else {
					req = append(req, cell)
				}
			}
			return []string{q.Name, age(o), strings.Join(req, ", "), strings.Join(lim, ", ")}
		}
	case "Lease":
		return []string{"NAME", "HOLDER", "AGE"}, func(o api.Object) []string {
			l := o.(*coordinationv1.Lease)
			h := ""
			if l.Spec.HolderIdentity != nil {
				h = *l.Spec.HolderIdentity
			}
			return []string{l.Name, h, age(o)}
		}
	}
	return []string{"NAME", "AGE"}, func(o api.Object) []string { return []string{o.GetName(), age(o)} }
}

// podStatus is the STATUS column as kubectl computes it: a waiting or
// terminated container's reason wins over the phase.
func podStatus(p *corev1.Pod) string {
	if p.DeletionTimestamp != nil {
		return "Terminating"
	}
	status := string(p.Status.Phase)
	if p.Status.Reason != "" {
		status = p.Status.Reason
	}
	for _, cs := range p.Status.InitContainerStatuses {
		if cs.State.Waiting != nil && cs.State.Waiting.Reason != "" && cs.State.Waiting.Reason != "PodInitializing" {
			return "Init:" + cs.State.Waiting.Reason
		}
	}
	for _, cs := range p.Status.ContainerStatuses {
		switch {
		case cs.State.Waiting != nil && cs.State.Waiting.Reason != "":
			status = cs.State.Waiting.Reason
		case cs.State.Terminated != nil && cs.State.Terminated.Reason != "":
			status = cs.State.Terminated.Reason
		}
	}
	return status
}

func servicePorts(s *corev1.Service) string {
	if len(s.Spec.Ports) == 0 {
		return "<none>"
	}
	var parts []string
	for _, p := range s.Spec.Ports {
		if p.NodePort != 0 {
			parts = append(parts, fmt.Sprintf("%d:%d/%s", p.Port, p.NodePort, p.Protocol))
		} else {
			parts = append(parts, fmt.Sprintf("%d/%s", p.Port, p.Protocol))
		}
	}
	return strings.Join(parts, ",")
}

func externalIP(s *corev1.Service) string {
	switch s.Spec.Type {
	case corev1.ServiceTypeExternalName:
		return s.Spec.ExternalName
	case corev1.ServiceTypeLoadBalancer:
		var ips []string
		for _, i := range s.Status.LoadBalancer.Ingress {
			ips = append(ips, i.IP)
		}
		ips = append(ips, s.Spec.ExternalIPs...)
		if len(ips) == 0 {
			return "<pending>"
		}
		return strings.Join(ips, ",")
	}
	if len(s.Spec.ExternalIPs) > 0 {
		return strings.Join(s.Spec.ExternalIPs, ",")
	}
	return "<none>"
}

func endpointList(e *corev1.Endpoints) string {
	var out []string
	for _, ss := range e.Subsets {
		for _, a := range ss.Addresses {
			for _, p := range ss.Ports {
				out = append(out, fmt.Sprintf("%s:%d", a.IP, p.Port))
			}
		}
	}
	if len(out) == 0 {
		return "<none>"
	}
	if len(out) > 3 {
		return strings.Join(out[:3], ",") + fmt.Sprintf(" + %d more...", len(out)-3)
	}
	return strings.Join(out, ",")
}

// slicePorts lists a slice's port numbers as kubectl does.
func slicePorts(es *discoveryv1.EndpointSlice) string {
	if len(es.Ports) == 0 {
		return "<unset>"
	}
	var out []string
	for _, p := range es.Ports {
		if p.Port == nil {
			out = append(out, "<unset>")
		} else {
			out = append(out, fmt.Sprint(*p.Port))
		}
	}
	return strings.Join(out, ",")
}

// sliceAddresses lists a slice's addresses, the first three and a count
// of the rest, as kubectl does.
func sliceAddresses(es *discoveryv1.EndpointSlice) string {
	var out []string
	for _, e := range es.Endpoints {
		out = append(out, e.Addresses...)
	}
	if len(out) == 0 {
		return "<unset>"
	}
	if len(out) > 3 {
		return strings.Join(out[:3], ",") + fmt.Sprintf(" + %d more...", len(out)-3)
	}
	return strings.Join(out, ",")
}

func orNone(s string) string {
	if s == "" {
		return "<none>"
	}
	return s
}

func deref(p *int32) int32 {
	if p == nil {
		return 0
	}
	return *p
}
