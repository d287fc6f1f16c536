package printers

import (
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/sets"
)

const containersDoc = "Names of each container in the template."
const imagesDoc = "Images referenced by each container in the template."

var namespacePrinter = printer{
	columns: []metav1.TableColumnDefinition{nameColumn(), column("Status", "string", "The status of the namespace"), ageColumn()},
	row: cellsOf(func(ns *corev1.Namespace, now time.Time) []any {
		return []any{ns.Name, string(ns.Status.Phase), age(ns.CreationTimestamp, now)}
	}),
}

var nodePrinter = printer{
	columns: []metav1.TableColumnDefinition{
		nameColumn(),
		column("Status", "string", "The status of the node"),
		column("Roles", "string", "The roles of the node"),
		ageColumn(),
		column("Version", "string", corev1.NodeSystemInfo{}.SwaggerDoc()["kubeletVersion"]),
		wide(column("Internal-IP", "string", corev1.NodeStatus{}.SwaggerDoc()["addresses"])),
		wide(column("External-IP", "string", corev1.NodeStatus{}.SwaggerDoc()["addresses"])),
		wide(column("OS-Image", "string", corev1.NodeSystemInfo{}.SwaggerDoc()["osImage"])),
		wide(column("Kernel-Version", "string", corev1.NodeSystemInfo{}.SwaggerDoc()["kernelVersion"])),
		wide(column("Container-Runtime", "string", corev1.NodeSystemInfo{}.SwaggerDoc()["containerRuntimeVersion"])),
	},
	row: cellsOf(func(n *corev1.Node, now time.Time) []any {
		info := n.Status.NodeInfo
		return []any{
			n.Name, nodeStatus(n), orNone(strings.Join(nodeRoles(n), ",")), age(n.CreationTimestamp, now), info.KubeletVersion,
			nodeAddress(n, corev1.NodeInternalIP), nodeAddress(n, corev1.NodeExternalIP),
			orUnknown(info.OSImage), orUnknown(info.KernelVersion), orUnknown(info.ContainerRuntimeVersion),
		}
	}),
}

// nodeStatus is Ready, NotReady (the Ready condition is False or Unknown)
// or Unknown (no Ready condition), then SchedulingDisabled for a cordoned
// node: "Ready,SchedulingDisabled".
func nodeStatus(n *corev1.Node) string {
	status := "Unknown"
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			status = "NotReady"
			if c.Status == corev1.ConditionTrue {
				status = "Ready"
			}
		}
	}
	if n.Spec.Unschedulable {
		status += ",SchedulingDisabled"
	}
	return status
}

// nodeRoles are the roles named by node-role.kubernetes.io/ROLE labels and
// by a kubernetes.io/role=ROLE label, sorted.
func nodeRoles(n *corev1.Node) []string {
	roles := sets.New[string]()
	for k, v := range n.Labels {
		if role, ok := strings.CutPrefix(k, "node-role.kubernetes.io/"); ok && role != "" {
			roles.Insert(role)
		} else if k == "kubernetes.io/role" && v != "" {
			roles.Insert(v)
		}
	}
	return sets.List(roles)
}

// nodeAddress is the node's first address of a type, or <none>.
func nodeAddress(n *corev1.Node, typ corev1.NodeAddressType) string {
	for _, a := range n.Status.Addresses {
		if a.Type == typ {
			return a.Address
		}
	}
	return "<none>"
}

func orUnknown(s string) string {
	if s == "" {
		return "<unknown>"
	}
	return s
}

var servicePrinter = printer{
	columns: []metav1.TableColumnDefinition{
		nameColumn(),
		column("Type", "string", corev1.ServiceSpec{}.SwaggerDoc()["type"]),
		column("Cluster-IP", "string", corev1.ServiceSpec{}.SwaggerDoc()["clusterIP"]),
		column("External-IP", "string", corev1.ServiceSpec{}.SwaggerDoc()["externalIPs"]),
		column("Port(s)", "string", corev1.ServiceSpec{}.SwaggerDoc()["ports"]),
		ageColumn(),
		wide(column("Selector", "string", corev1.ServiceSpec{}.SwaggerDoc()["selector"])),
	},
	row: cellsOf(func(s *corev1.Service, now time.Time) []any {
		clusterIP := "<none>"
		if len(s.Spec.ClusterIPs) > 0 {
			clusterIP = s.Spec.ClusterIPs[0]
		}
		return []any{s.Name, string(s.Spec.Type), clusterIP, serviceExternalIP(s), orNone(servicePorts(s.Spec.Ports)),
			age(s.CreationTimestamp, now), labels.FormatLabels(s.Spec.Selector)}
	}),
}

// serviceExternalIP is EXTERNAL-IP: the external IPs of a ClusterIP or
// NodePort service (or <none>); for a LoadBalancer the addresses its load
// balancer got, then its external IPs, or <pending> while it has none; for
// an ExternalName the name. The server prints a Table as for -o wide, so
// the load balancer addresses are never shortened.
func serviceExternalIP(s *corev1.Service) string {
	switch s.Spec.Type {
	case corev1.ServiceTypeClusterIP, corev1.ServiceTypeNodePort:
		return orNone(strings.Join(s.Spec.ExternalIPs, ","))
	case corev1.ServiceTypeLoadBalancer:
		ips := sets.New[string]()
		for _, in := range s.Status.LoadBalancer.Ingress {
			if in.IP != "" {
				ips.Insert(in.IP)
			} else if in.Hostname != "" {
				ips.Insert(in.Hostname)
			}
		}
		all := append(sets.List(ips), s.Spec.ExternalIPs...)
		if len(all) == 0 {
			return "<pending>"
		}
		return strings.Join(all, ",")
	case corev1.ServiceTypeExternalName:
		return s.Spec.ExternalName
	}
	return "<unknown>"
}

// servicePorts is PORT(S): 80/TCP, or 80:30080/TCP with a node port.
func servicePorts(ports []corev1.ServicePort) string {
	out := make([]string, len(ports))
	for i, p := range ports {
		out[i] = fmt.Sprintf("%d/%s", p.Port, p.Protocol)
		if p.NodePort > 0 {
			out[i] = fmt.Sprintf("%d:%d/%s", p.Port, p.NodePort, p.Protocol)
		}
	}
	return strings.Join(out, ",")
}

var endpointsPrinter = printer{
	columns: []metav1.TableColumnDefinition{
		nameColumn(),
		//lint:ignore SA1019 v1 Endpoints are still served
		column("Endpoints", "string", corev1.Endpoints{}.SwaggerDoc()["subsets"]),
		ageColumn(),
	},
	//lint:ignore SA1019 v1 Endpoints are still served
	row: cellsOf(func(e *corev1.Endpoints, now time.Time) []any {
		return []any{e.Name, endpointAddresses(e), age(e.CreationTimestamp, now)}
	}),
}

// endpointAddresses is ENDPOINTS: IP:port for every ready address and
// port (just the IP in a subset without ports), the first three and how
// many more; <none> without subsets.
//
//lint:ignore SA1019 v1 Endpoints are still served
func endpointAddresses(e *corev1.Endpoints) string {
	if len(e.Subsets) == 0 {
		return "<none>"
	}
	var all []string
	for _, ss := range e.Subsets {
		if len(ss.Ports) == 0 {
			for _, a := range ss.Addresses {
				all = append(all, a.IP)
			}
			continue
		}
		for _, p := range ss.Ports {
			for _, a := range ss.Addresses {
				all = append(all, net.JoinHostPort(a.IP, strconv.Itoa(int(p.Port))))
			}
		}
	}
	return firstOf(all)
}

var replicationControllerPrinter = printer{
	columns: []metav1.TableColumnDefinition{
		nameColumn(),
		column("Desired", "integer", corev1.ReplicationControllerSpec{}.SwaggerDoc()["replicas"]),
		column("Current", "integer", corev1.ReplicationControllerStatus{}.SwaggerDoc()["replicas"]),
		column("Ready", "integer", corev1.ReplicationControllerStatus{}.SwaggerDoc()["readyReplicas"]),
		ageColumn(),
		wide(column("Containers", "string", containersDoc)),
		wide(column("Images", "string", imagesDoc)),
		wide(column("Selector", "string", corev1.ReplicationControllerSpec{}.SwaggerDoc()["selector"])),
	},
	row: cellsOf(func(rc *corev1.ReplicationController, now time.Time) []any {
		var containers []corev1.Container
		if rc.Spec.Template != nil {
			containers = rc.Spec.Template.Spec.Containers
		}
		names, images := containerCells(containers)
		return []any{rc.Name, deref(rc.Spec.Replicas), int64(rc.Status.Replicas), int64(rc.Status.ReadyReplicas), age(rc.CreationTimestamp, now),
			names, images, labels.FormatLabels(rc.Spec.Selector)}
	}),
}

// containerCells are the CONTAINERS and IMAGES of a template, comma
// separated.
func containerCells(cs []corev1.Container) (names, images string) {
	n := make([]string, len(cs))
	im := make([]string, len(cs))
	for i, c := range cs {
		n[i], im[i] = c.Name, c.Image
	}
	return strings.Join(n, ","), strings.Join(im, ",")
}

var configMapPrinter = printer{
	columns: []metav1.TableColumnDefinition{nameColumn(), column("Data", "string", corev1.ConfigMap{}.SwaggerDoc()["data"]), ageColumn()},
	row: cellsOf(func(cm *corev1.ConfigMap, now time.Time) []any {
		return []any{cm.Name, int64(len(cm.Data) + len(cm.BinaryData)), age(cm.CreationTimestamp, now)}
	}),
}

var secretPrinter = printer{
	columns: []metav1.TableColumnDefinition{
		nameColumn(),
		column("Type", "string", corev1.Secret{}.SwaggerDoc()["type"]),
		column("Data", "string", corev1.Secret{}.SwaggerDoc()["data"]),
		ageColumn(),
	},
	row: cellsOf(func(s *corev1.Secret, now time.Time) []any {
		// Only data counts: stringData is folded into it on write.
		return []any{s.Name, string(s.Type), int64(len(s.Data)), age(s.CreationTimestamp, now)}
	}),
}

var serviceAccountPrinter = printer{
	columns: []metav1.TableColumnDefinition{nameColumn(), column("Secrets", "string", corev1.ServiceAccount{}.SwaggerDoc()["secrets"]), ageColumn()},
	row: cellsOf(func(sa *corev1.ServiceAccount, now time.Time) []any {
		return []any{sa.Name, int64(len(sa.Secrets)), age(sa.CreationTimestamp, now)}
	}),
}

var resourceQuotaPrinter = printer{
	columns: []metav1.TableColumnDefinition{
		nameColumn(),
		column("Request", "string", "Request represents a minimum amount of cpu/memory that a container may consume."),
		column("Limit", "string", "Limits control the maximum amount of cpu/memory that a container may use independent of contention on the node."),
		ageColumn(),
	},
	row: cellsOf(func(q *corev1.ResourceQuota, now time.Time) []any {
		request, limit := quotaUsage(q)
		return []any{q.Name, request, limit, age(q.CreationTimestamp, now)}
	}),
}

// quotaUsage is "name: used/hard" for every resource the quota enforces
// (its status, which the server keeps), by name; limits.* go to LIMIT, the
// rest to REQUEST.
func quotaUsage(q *corev1.ResourceQuota) (request, limit string) {
	names := make([]string, 0, len(q.Status.Hard))
	for n := range q.Status.Hard {
		names = append(names, string(n))
	}
	sort.Strings(names)
	var req, lim []string
	for _, n := range names {
		used, hard := q.Status.Used[corev1.ResourceName(n)], q.Status.Hard[corev1.ResourceName(n)]
		cell := fmt.Sprintf("%s: %s/%s", n, used.String(), hard.String())
		if strings.HasPrefix(n, "limits.") {
			lim = append(lim, cell)
		} else {
			req = append(req, cell)
		}
	}
	return strings.Join(req, ", "), strings.Join(lim, ", ")
}

var eventPrinter = printer{
	columns: []metav1.TableColumnDefinition{
		column("Last Seen", "string", corev1.Event{}.SwaggerDoc()["lastTimestamp"]),
		column("Type", "string", corev1.Event{}.SwaggerDoc()["type"]),
		column("Reason", "string", corev1.Event{}.SwaggerDoc()["reason"]),
		column("Object", "string", corev1.Event{}.SwaggerDoc()["involvedObject"]),
		wide(column("Subobject", "string", corev1.ObjectReference{}.SwaggerDoc()["fieldPath"])),
		wide(column("Source", "string", corev1.Event{}.SwaggerDoc()["source"])),
		column("Message", "string", corev1.Event{}.SwaggerDoc()["message"]),
		wide(column("First Seen", "string", corev1.Event{}.SwaggerDoc()["firstTimestamp"])),
		wide(column("Count", "string", corev1.Event{}.SwaggerDoc()["count"])),
		wide(nameColumn()),
	},
	row: cellsOf(eventCells),
}

// eventCells words an event as kubectl does. Events written through the
// events.k8s.io API carry eventTime and a series rather than the first
// and last timestamps and a count, so those stand in for them; a single
// event without a count happened once.
func eventCells(e *corev1.Event, now time.Time) []any {
	first := age(e.FirstTimestamp, now)
	if e.FirstTimestamp.IsZero() {
		first = microAge(e.EventTime, now)
	}
	last := age(e.LastTimestamp, now)
	if e.LastTimestamp.IsZero() {
		last = first
	}
	count := e.Count
	if e.Series != nil {
		last, count = microAge(e.Series.LastObservedTime, now), e.Series.Count
	} else if count == 0 {
		count = 1
	}
	object := strings.ToLower(e.InvolvedObject.Kind)
	if e.InvolvedObject.Name != "" {
		object += "/" + e.InvolvedObject.Name
	}
	return []any{last, e.Type, e.Reason, object, e.InvolvedObject.FieldPath, eventSource(e),
		strings.TrimSpace(e.Message), first, int64(count), e.Name}
}

func microAge(t metav1.MicroTime, now time.Time) string {
	if t.IsZero() {
		return "<unknown>"
	}
	return age(metav1.NewTime(t.Time), now)
}

// eventSource is "component, host", either taken from the reporting
// controller and instance when the source does not say.
func eventSource(e *corev1.Event) string {
	component, host := e.Source.Component, e.Source.Host
	if component == "" {
		component = e.ReportingController
	}
	if host == "" {
		host = e.ReportingInstance
	}
	if host == "" {
		return component
	}
	return component + ", " + host
}
