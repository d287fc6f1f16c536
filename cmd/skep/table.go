package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/skep-io/skep/controlplane/api"
	"github.com/skep-io/skep/controlplane/kubeapi/printers"
)

// `skep get` prints a table in two steps, as kubectl does: objects become
// a meta.k8s.io/v1 Table (objectsTable), and printTable prints a Table.
// objectsTable uses the API server's own printers, so skep get and kubectl
// get print the same columns; a Table the server sends (Accept:
// application/json;as=Table;v=v1;g=meta.k8s.io) can be printed the same
// way in its place.

// objectsTable is the Table of objects of one resource.
func objectsTable(ctx context.Context, r *api.Resource, objs []api.Object) (*metav1.Table, error) {
	list := &metav1.List{Items: make([]runtime.RawExtension, len(objs))}
	for i, o := range objs {
		list.Items[i].Object = o
	}
	return printers.For(r).ConvertToTable(ctx, list, nil)
}

// tableOptions are kubectl's flags that change how a Table prints.
type tableOptions struct {
	wide          bool   // -o wide: the columns of priority 1 too
	withNamespace bool   // -A: a NAMESPACE column first
	kind          string // several kinds at once: names print as KIND/NAME
	noHeaders     bool
}

// Tabwriter settings of kubectl's table printer, so that columns line up
// as kubectl lines them up.
const (
	tableMinWidth = 6
	tableTabWidth = 4
	tablePadding  = 3
)

// printTable prints a Table as kubectl does: the column names uppercased,
// the wide columns only with -o wide, aligned.
func printTable(w io.Writer, t *metav1.Table, o tableOptions) error {
	var shown []int
	for i, c := range t.ColumnDefinitions {
		if o.wide || c.Priority == 0 {
			shown = append(shown, i)
		}
	}
	tw := tabwriter.NewWriter(w, tableMinWidth, tableTabWidth, tablePadding, ' ', 0)
	if !o.noHeaders {
		var header []string
		if o.withNamespace {
			header = append(header, "NAMESPACE")
		}
		for _, i := range shown {
			header = append(header, strings.ToUpper(t.ColumnDefinitions[i].Name))
		}
		fmt.Fprintln(tw, strings.Join(header, "\t"))
	}
	for _, row := range t.Rows {
		var cells []string
		if o.withNamespace {
			cells = append(cells, rowNamespace(row))
		}
		for _, i := range shown {
			cell := ""
			if i < len(row.Cells) {
				cell = cellText(row.Cells[i])
			}
			// The name column, whichever it is (an event's is its last),
			// says the kind when several kinds are printed.
			if o.kind != "" && t.ColumnDefinitions[i].Format == "name" {
				cell = o.kind + "/" + cell
			}
			cells = append(cells, cell)
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	return tw.Flush()
}

// cellText is a cell as kubectl prints it: text up to its first line
// break, then "..."; numbers and the rest as Go prints them.
func cellText(cell any) string {
	switch c := cell.(type) {
	case nil:
		return ""
	case string:
		if i := strings.IndexAny(c, "\n\r\f"); i >= 0 {
			return c[:i] + "..."
		}
		return c
	}
	return fmt.Sprint(cell)
}

// rowNamespace is the namespace of a row's object: the object itself when
// the Table was made here, its metadata (includeObject=Metadata, the
// server's default) when the server sent it.
func rowNamespace(row metav1.TableRow) string {
	if row.Object.Object != nil {
		if m, err := meta.Accessor(row.Object.Object); err == nil {
			return m.GetNamespace()
		}
	}
	if len(row.Object.Raw) > 0 {
		var m metav1.PartialObjectMetadata
		if err := json.Unmarshal(row.Object.Raw, &m); err == nil {
			return m.Namespace
		}
	}
	return ""
}

// kindPrefix is how kubectl names the kind of a row when it prints several
// kinds: kind.group, lowercase ("pod", "deployment.apps").
func kindPrefix(r *api.Resource) string {
	if r.Group == "" {
		return strings.ToLower(r.Kind)
	}
	return strings.ToLower(r.Kind) + "." + r.Group
}

// The helpers below word single fields for `skep describe`.

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

//lint:ignore SA1019 a Service's v1 Endpoints, as kubectl 1.32's describe reads them
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
