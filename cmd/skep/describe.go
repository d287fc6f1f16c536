package main

import (
	"fmt"
	"io"
	"reflect"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v2"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"

	"github.com/skep-io/skep/controlplane/api"
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
			var eps *corev1.Endpoints
			if r.Kind == "Service" {
				if e, err := cl.Get(c.Context, api.MustLookup("endpoints"), obj.GetNamespace(), obj.GetName()); err == nil {
					eps = e.(*corev1.Endpoints)
				}
			}
			return describe(c.App.Writer, r, obj, eps)
		},
	}
}

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
