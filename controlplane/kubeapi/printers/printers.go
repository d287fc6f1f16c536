// Package printers turns objects into the meta.k8s.io/v1 Tables that
// `kubectl get` prints: the columns, their order, their -o wide priority
// and the way every cell is worded are those of Kubernetes' own printers,
// so that kubectl pointed at skep prints what it prints against a real
// cluster. The API server answers `Accept: application/json;as=Table;
// v=v1;g=meta.k8s.io` with them, and `skep get` prints the same Tables.
//
// Like Kubernetes' server-side printers, a Table always carries every
// column, the wide ones (Priority 1) included; the client hides those
// unless asked for -o wide.
package printers

import (
	"context"
	"fmt"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/duration"

	"github.com/skep-io/skep/controlplane/api"
)

// printer is what a kind prints: its columns and, for one object, its row.
type printer struct {
	columns []metav1.TableColumnDefinition
	// row returns the cells (and, for pods, the conditions) of one object;
	// it fails on an object of another type.
	row func(obj runtime.Object, now time.Time) (metav1.TableRow, error)
}

// cellsOf adapts a function printing one T to a printer's row, refusing
// objects of any other type.
func cellsOf[T runtime.Object](cells func(T, time.Time) []any) func(runtime.Object, time.Time) (metav1.TableRow, error) {
	return rowsOf(func(o T, now time.Time) metav1.TableRow { return metav1.TableRow{Cells: cells(o, now)} })
}

// rowsOf is cellsOf for printers that also set a row's conditions.
func rowsOf[T runtime.Object](row func(T, time.Time) metav1.TableRow) func(runtime.Object, time.Time) (metav1.TableRow, error) {
	return func(obj runtime.Object, now time.Time) (metav1.TableRow, error) {
		o, ok := obj.(T)
		if !ok {
			var want T
			return metav1.TableRow{}, fmt.Errorf("cannot print a %T in a table of %T", obj, want)
		}
		return row(o, now), nil
	}
}

// TableConvertor prints the objects of one kind as a Table. It is a
// k8s.io/apiserver rest.TableConvertor.
type TableConvertor struct {
	printer printer
	// Now is the moment AGE and the other durations count to; nil means
	// time.Now. Tests set a fixed one.
	Now func() time.Time
}

// For is the TableConvertor of a resource: kubectl's columns for its kind,
// or NAME and AGE for a kind kubectl has no printer for.
func For(r *api.Resource) *TableConvertor {
	return ForKind(schema.GroupKind{Group: r.Group, Kind: r.Kind})
}

// ForKind is For by group and kind, for kinds the API may not serve yet.
func ForKind(gk schema.GroupKind) *TableConvertor {
	p, ok := byKind[gk]
	if !ok {
		p = defaultPrinter
	}
	return &TableConvertor{printer: p}
}

// ConvertToTable prints one object, or every item of a list, as rows of a
// Table; the list's resourceVersion, continue token and remaining count go
// to the Table's metadata, as the API server's own printers put them, so
// that a client can page and watch from a Table. tableOptions is nil or a
// *metav1.TableOptions, whose NoHeaders leaves the column definitions out
// (the API server asks so for the events of a watch after the first).
func (c *TableConvertor) ConvertToTable(_ context.Context, obj runtime.Object, tableOptions runtime.Object) (*metav1.Table, error) {
	noHeaders := false
	switch o := tableOptions.(type) {
	case nil:
	case *metav1.TableOptions:
		noHeaders = o != nil && o.NoHeaders
	default:
		return nil, fmt.Errorf("table options of type %T: only *metav1.TableOptions is understood", tableOptions)
	}
	now := time.Now()
	if c.Now != nil {
		now = c.Now()
	}
	items := []runtime.Object{obj}
	table := &metav1.Table{}
	if meta.IsListType(obj) {
		var err error
		if items, err = meta.ExtractList(obj); err != nil {
			return nil, err
		}
		if l, err := meta.ListAccessor(obj); err == nil {
			table.ResourceVersion = l.GetResourceVersion()
			table.Continue = l.GetContinue()
			table.RemainingItemCount = l.GetRemainingItemCount()
		}
	} else if m, err := meta.Accessor(obj); err == nil {
		table.ResourceVersion = m.GetResourceVersion()
	}
	if !noHeaders {
		table.ColumnDefinitions = c.printer.columns
	}
	table.Rows = make([]metav1.TableRow, 0, len(items))
	for _, item := range items {
		row, err := c.printer.row(item, now)
		if err != nil {
			return nil, err
		}
		row.Object = runtime.RawExtension{Object: item}
		table.Rows = append(table.Rows, row)
	}
	return table, nil
}

// byKind holds the printer of every kind kubectl has one for and skep
// serves or is about to serve.
var byKind = map[schema.GroupKind]printer{
	{Kind: "Pod"}:                                      podPrinter,
	{Kind: "Node"}:                                     nodePrinter,
	{Kind: "Namespace"}:                                namespacePrinter,
	{Kind: "Service"}:                                  servicePrinter,
	{Kind: "Endpoints"}:                                endpointsPrinter,
	{Kind: "ReplicationController"}:                    replicationControllerPrinter,
	{Kind: "ConfigMap"}:                                configMapPrinter,
	{Kind: "Secret"}:                                   secretPrinter,
	{Kind: "ServiceAccount"}:                           serviceAccountPrinter,
	{Kind: "ResourceQuota"}:                            resourceQuotaPrinter,
	{Kind: "Event"}:                                    eventPrinter,
	{Group: "apps", Kind: "Deployment"}:                deploymentPrinter,
	{Group: "apps", Kind: "ReplicaSet"}:                replicaSetPrinter,
	{Group: "discovery.k8s.io", Kind: "EndpointSlice"}: endpointSlicePrinter,
	{Group: "coordination.k8s.io", Kind: "Lease"}:      leasePrinter,
}

// Descriptions shared by many columns, from the API's own field docs.
var (
	nameDoc = metav1.ObjectMeta{}.SwaggerDoc()["name"]
	ageDoc  = metav1.ObjectMeta{}.SwaggerDoc()["creationTimestamp"]
)

// nameColumn is every kind's first column. Format "name" is what tells
// kubectl which column to prefix with the kind when it prints several
// kinds at once (pod/web-1).
func nameColumn() metav1.TableColumnDefinition {
	return metav1.TableColumnDefinition{Name: "Name", Type: "string", Format: "name", Description: nameDoc}
}

func ageColumn() metav1.TableColumnDefinition {
	return metav1.TableColumnDefinition{Name: "Age", Type: "string", Description: ageDoc}
}

func column(name, typ, doc string) metav1.TableColumnDefinition {
	return metav1.TableColumnDefinition{Name: name, Type: typ, Description: doc}
}

// wide is a column shown only with -o wide.
func wide(c metav1.TableColumnDefinition) metav1.TableColumnDefinition {
	c.Priority = 1
	return c
}

// defaultPrinter is what kubectl shows for a kind it has no printer for.
var defaultPrinter = printer{
	columns: []metav1.TableColumnDefinition{nameColumn(), ageColumn()},
	row: func(obj runtime.Object, now time.Time) (metav1.TableRow, error) {
		m, err := meta.Accessor(obj)
		if err != nil {
			return metav1.TableRow{}, fmt.Errorf("cannot print a %T: %w", obj, err)
		}
		return metav1.TableRow{Cells: []any{m.GetName(), age(m.GetCreationTimestamp(), now)}}, nil
	},
}

// age is how long ago t was, in kubectl's words ("5m", "3d4h"), or
// <unknown> for a time never set.
func age(t metav1.Time, now time.Time) string {
	if t.IsZero() {
		return "<unknown>"
	}
	return duration.HumanDuration(now.Sub(t.Time))
}

func orNone(s string) string {
	if s == "" {
		return "<none>"
	}
	return s
}

func deref(p *int32) int64 {
	if p == nil {
		return 0
	}
	return int64(*p)
}

// firstOf lists the first three of items and, as kubectl does for long
// lists of addresses and ports, how many more there are; empty is empty.
func firstOf(items []string) string {
	const max = 3
	if len(items) <= max {
		return strings.Join(items, ",")
	}
	return fmt.Sprintf("%s + %d more...", strings.Join(items[:max], ","), len(items)-max)
}
