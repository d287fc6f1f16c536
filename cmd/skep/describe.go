package main

import (
	"context"
	"fmt"
	"io"
	"reflect"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/duration"
	"sigs.k8s.io/yaml"

	"github.com/skep-io/skep/controlplane/api"
	"github.com/skep-io/skep/controlplane/client"
)

func describeCommand() *cli.Command {
	return &cli.Command{
		Name:      "describe",
		Usage:     "show one object in detail: skep describe KIND NAME",
		ArgsUsage: "KIND NAME",
		Flags:     []cli.Flag{namespaceFlag(), configFlag()},
		Action: func(c *cli.Context) error {
			if c.NArg() != 2 {
				return fmt.Errorf("usage: skep describe KIND NAME")
			}
			r, err := api.Lookup(c.Args().First())
			if err != nil {
				return err
			}
			cl, err := newClient(c)
			if err != nil {
				return err
			}
			obj, err := cl.Get(c.Context, r, namespaceOf(c), c.Args().Get(1))
			if err != nil {
				return fmt.Errorf("%s", message(err))
			}
			//lint:ignore SA1019 a Service's v1 Endpoints, as kubectl 1.32's describe reads them
			var eps *corev1.Endpoints
			if r.Kind == "Service" {
				if e, err := cl.Get(c.Context, api.MustLookup("endpoints"), obj.GetNamespace(), obj.GetName()); err == nil {
					//lint:ignore SA1019 a Service's v1 Endpoints, as kubectl 1.32's describe reads them
					eps = e.(*corev1.Endpoints)
				}
			}
			evs, err := eventsAbout(c.Context, cl, r, obj)
			if err != nil {
				return fmt.Errorf("%s", message(err))
			}
			if err := describe(c.App.Writer, r, obj, eps); err != nil {
				return err
			}
			return describeEvents(c.App.Writer, evs, time.Now())
		},
	}
}

//lint:ignore SA1019 a Service's v1 Endpoints, as kubectl 1.32's describe reads them
func describe(w io.Writer, r *api.Resource, obj api.Object, eps *corev1.Endpoints) error {
	tw := tabwriter.NewWriter(w, 0, 8, 1, ' ', 0)
	line := func(k string, v any) { fmt.Fprintf(tw, "%s:\t%v\n", k, v) }
	line("Name", obj.GetName())
	if r.Namespaced {
		line("Namespace", obj.GetNamespace())
	}
	line("Labels", orNone(labels.Set(obj.GetLabels()).String()))
	line("Created", obj.GetCreationTimestamp().Format("2006-01-02 15:04:05 MST"))
	switch o := obj.(type) {
	case *corev1.Service:
		line("Type", o.Spec.Type)
		line("Selector", orNone(labels.Set(o.Spec.Selector).String()))
		line("IP", orNone(o.Spec.ClusterIP))
		if o.Spec.Type == corev1.ServiceTypeLoadBalancer {
			line("LoadBalancer Ingress", externalIP(o))
		}
		if o.Spec.Type == corev1.ServiceTypeExternalName {
			line("External Name", o.Spec.ExternalName)
		}
		for _, p := range o.Spec.Ports {
			line("Port", fmt.Sprintf("%s %d/%s", orNone(p.Name), p.Port, p.Protocol))
			line("TargetPort", fmt.Sprintf("%s/%s", p.TargetPort.String(), p.Protocol))
			if p.NodePort != 0 {
				line("NodePort", fmt.Sprintf("%s %d/%s", orNone(p.Name), p.NodePort, p.Protocol))
			}
		}
		if eps != nil {
			line("Endpoints", endpointList(eps))
		}
		line("Session Affinity", o.Spec.SessionAffinity)
		if o.Spec.ExternalTrafficPolicy != "" {
			line("External Traffic Policy", o.Spec.ExternalTrafficPolicy)
		}
	case *corev1.Pod:
		line("Node", orNone(o.Spec.NodeName))
		line("Status", podStatus(o))
		line("IP", orNone(o.Status.PodIP))
		for _, cs := range o.Status.ContainerStatuses {
			line("Container "+cs.Name, fmt.Sprintf("image=%s ready=%v restarts=%d", cs.Image, cs.Ready, cs.RestartCount))
		}
		for _, cond := range o.Status.Conditions {
			line("Condition "+string(cond.Type), strings.TrimSpace(fmt.Sprintf("%s %s %s", cond.Status, cond.Reason, cond.Message)))
		}
	case *appsv1.Deployment:
		line("Replicas", fmt.Sprintf("%d desired | %d updated | %d total | %d available | %d unavailable",
			deref(o.Spec.Replicas), o.Status.UpdatedReplicas, o.Status.Replicas, o.Status.AvailableReplicas, o.Status.UnavailableReplicas))
		line("StrategyType", o.Spec.Strategy.Type)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if _, ok := obj.(*corev1.Service); ok {
		return nil
	}
	data, err := yaml.Marshal(map[string]any{"spec": fieldAny(obj, "Spec"), "status": fieldAny(obj, "Status")})
	if err != nil {
		return err
	}
	_, err = w.Write(data)
	return err
}

// eventsAbout finds the Events about obj as kubectl describe does: by
// the involved object's kind, namespace, name and uid, in the object's
// namespace (everywhere for a cluster-scoped one: its events are in
// default), oldest first.
func eventsAbout(ctx context.Context, cl client.Interface, r *api.Resource, obj api.Object) ([]*corev1.Event, error) {
	sel := fields.Set{
		"involvedObject.kind":      r.Kind,
		"involvedObject.namespace": obj.GetNamespace(),
		"involvedObject.name":      obj.GetName(),
	}
	if obj.GetUID() != "" {
		sel["involvedObject.uid"] = string(obj.GetUID())
	}
	objs, _, err := cl.List(ctx, api.MustLookup("events"), obj.GetNamespace(), client.ListOptions{FieldSelector: sel.AsSelector().String()})
	if err != nil {
		return nil, err
	}
	evs := make([]*corev1.Event, 0, len(objs))
	for _, o := range objs {
		evs = append(evs, o.(*corev1.Event))
	}
	sort.SliceStable(evs, func(i, j int) bool { return lastSeen(evs[i]).Before(lastSeen(evs[j])) })
	return evs, nil
}

// lastSeen is when an event last happened: lastTimestamp, or eventTime
// for a new-style event.
func lastSeen(e *corev1.Event) time.Time {
	if !e.LastTimestamp.IsZero() {
		return e.LastTimestamp.Time
	}
	if !e.EventTime.IsZero() {
		return e.EventTime.Time
	}
	return e.CreationTimestamp.Time
}

// firstSeen is when an event first happened.
func firstSeen(e *corev1.Event) time.Time {
	if !e.FirstTimestamp.IsZero() {
		return e.FirstTimestamp.Time
	}
	return lastSeen(e)
}

// describeEvents prints the Events section of kubectl describe: Type,
// Reason, Age ("3m (x5 over 10m)" for a repeated event), From, Message.
func describeEvents(w io.Writer, evs []*corev1.Event, now time.Time) error {
	if len(evs) == 0 {
		_, err := fmt.Fprintln(w, "Events:  <none>")
		return err
	}
	fmt.Fprintln(w, "Events:")
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "  Type\tReason\tAge\tFrom\tMessage")
	fmt.Fprintln(tw, "  ----\t------\t----\t----\t-------")
	for _, e := range evs {
		age := duration.HumanDuration(now.Sub(firstSeen(e)))
		if e.Count > 1 {
			age = fmt.Sprintf("%s (x%d over %s)", duration.HumanDuration(now.Sub(lastSeen(e))), e.Count, age)
		}
		from := e.Source.Component
		if from == "" {
			from = e.ReportingController
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", e.Type, e.Reason, age, from, strings.TrimSpace(e.Message))
	}
	return tw.Flush()
}

// fieldAny is the value of the field called name in obj (a pointer to a
// struct), or nil when it has none: describe prints Spec and Status of
// any kind.
func fieldAny(obj api.Object, name string) any {
	f := reflect.ValueOf(obj).Elem().FieldByName(name)
	if !f.IsValid() {
		return nil
	}
	return f.Interface()
}
