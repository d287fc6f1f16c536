package printers

import (
	"fmt"
	"strconv"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

var deploymentPrinter = printer{
	columns: []metav1.TableColumnDefinition{
		nameColumn(),
		column("Ready", "string", "Number of the pod with ready state"),
		column("Up-to-date", "string", appsv1.DeploymentStatus{}.SwaggerDoc()["updatedReplicas"]),
		column("Available", "string", appsv1.DeploymentStatus{}.SwaggerDoc()["availableReplicas"]),
		ageColumn(),
		wide(column("Containers", "string", containersDoc)),
		wide(column("Images", "string", imagesDoc)),
		wide(column("Selector", "string", appsv1.DeploymentSpec{}.SwaggerDoc()["selector"])),
	},
	row: cellsOf(func(d *appsv1.Deployment, now time.Time) []any {
		names, images := containerCells(d.Spec.Template.Spec.Containers)
		selector := "<invalid>"
		if s, err := metav1.LabelSelectorAsSelector(d.Spec.Selector); err == nil {
			selector = s.String()
		}
		return []any{d.Name, fmt.Sprintf("%d/%d", d.Status.ReadyReplicas, deref(d.Spec.Replicas)),
			int64(d.Status.UpdatedReplicas), int64(d.Status.AvailableReplicas), age(d.CreationTimestamp, now),
			names, images, selector}
	}),
}

var replicaSetPrinter = printer{
	columns: []metav1.TableColumnDefinition{
		nameColumn(),
		column("Desired", "integer", appsv1.ReplicaSetSpec{}.SwaggerDoc()["replicas"]),
		column("Current", "integer", appsv1.ReplicaSetStatus{}.SwaggerDoc()["replicas"]),
		column("Ready", "integer", appsv1.ReplicaSetStatus{}.SwaggerDoc()["readyReplicas"]),
		ageColumn(),
		wide(column("Containers", "string", containersDoc)),
		wide(column("Images", "string", imagesDoc)),
		wide(column("Selector", "string", appsv1.ReplicaSetSpec{}.SwaggerDoc()["selector"])),
	},
	row: cellsOf(func(rs *appsv1.ReplicaSet, now time.Time) []any {
		names, images := containerCells(rs.Spec.Template.Spec.Containers)
		return []any{rs.Name, deref(rs.Spec.Replicas), int64(rs.Status.Replicas), int64(rs.Status.ReadyReplicas), age(rs.CreationTimestamp, now),
			names, images, metav1.FormatLabelSelector(rs.Spec.Selector)}
	}),
}

var endpointSlicePrinter = printer{
	columns: []metav1.TableColumnDefinition{
		nameColumn(),
		column("AddressType", "string", discoveryv1.EndpointSlice{}.SwaggerDoc()["addressType"]),
		column("Ports", "string", discoveryv1.EndpointSlice{}.SwaggerDoc()["ports"]),
		column("Endpoints", "string", discoveryv1.EndpointSlice{}.SwaggerDoc()["endpoints"]),
		ageColumn(),
	},
	row: cellsOf(func(es *discoveryv1.EndpointSlice, now time.Time) []any {
		return []any{es.Name, string(es.AddressType), slicePorts(es.Ports), sliceAddresses(es.Endpoints), age(es.CreationTimestamp, now)}
	}),
}

// slicePorts is PORTS: each port's number, else its name, else * (all
// ports); the first three and how many more; <unset> for none.
func slicePorts(ports []discoveryv1.EndpointPort) string {
	out := make([]string, len(ports))
	for i, p := range ports {
		switch {
		case p.Port != nil:
			out[i] = strconv.Itoa(int(*p.Port))
		case p.Name != nil:
			out[i] = *p.Name
		default:
			out[i] = "*"
		}
	}
	return orUnset(firstOf(out))
}

// sliceAddresses is ENDPOINTS: every endpoint's addresses, the first three
// and how many more; <unset> for none.
func sliceAddresses(endpoints []discoveryv1.Endpoint) string {
	var out []string
	for _, e := range endpoints {
		out = append(out, e.Addresses...)
	}
	return orUnset(firstOf(out))
}

func orUnset(s string) string {
	if s == "" {
		return "<unset>"
	}
	return s
}

var leasePrinter = printer{
	columns: []metav1.TableColumnDefinition{
		nameColumn(),
		column("Holder", "string", coordinationv1.LeaseSpec{}.SwaggerDoc()["holderIdentity"]),
		ageColumn(),
	},
	row: cellsOf(func(l *coordinationv1.Lease, now time.Time) []any {
		holder := ""
		if l.Spec.HolderIdentity != nil {
			holder = *l.Spec.HolderIdentity
		}
		return []any{l.Name, holder, age(l.CreationTimestamp, now)}
	}),
}
