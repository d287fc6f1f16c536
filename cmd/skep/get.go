package main

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"
	"k8s.io/apimachinery/pkg/util/duration"
	"sigs.k8s.io/yaml"

	"github.com/skep-io/skep/controlplane/api"
	"github.com/skep-io/skep/controlplane/client"
)

func getCommand() *cli.Command {
	return &cli.Command{
		Name:      "get",
		Usage:     "show objects: skep get pods|svc|deploy|rs|ep|nodes|ns[,...] [NAME] [-o wide|yaml|json] [-w]",
		ArgsUsage: "KIND[,KIND...] [NAME]",
		Flags: []cli.Flag{
			namespaceFlag(), configFlag(),
			&cli.BoolFlag{Name: "all-namespaces", Aliases: []string{"A"}, Usage: "list across all namespaces"},
			&cli.StringFlag{Name: "selector", Aliases: []string{"l"}, Usage: "label selector, e.g. app=web"},
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "wide, yaml or json (default: a table)"},
			&cli.BoolFlag{Name: "watch", Aliases: []string{"w"}, Usage: "after listing, show changes as they happen"},
		},
		Action: runGet,
	}
}

func runGet(c *cli.Context) error {
	if c.NArg() < 1 {
		return fmt.Errorf("say what to get: one of %s", strings.Join(api.Names(), ", "))
	}
	out := c.String("output")
	switch out {
	case "", "wide", "yaml", "json", "name":
	default:
		return fmt.Errorf("--output %q: allowed are wide, yaml, json, name", out)
	}
	cl, err := newClient(c)
	if err != nil {
		return err
	}
	ns := namespaceOf(c)
	all := c.Bool("all-namespaces")
	if all {
		ns = ""
	}
	kinds := strings.Split(c.Args().First(), ",")
	name := c.Args().Get(1)
	w := c.App.Writer
	for i, kind := range kinds {
		r, err := api.Lookup(kind)
		if err != nil {
			return err
		}
		var objs []api.Object
		var rv string
		if name != "" {
			obj, err := cl.Get(c.Context, r, ns, name)
			if err != nil {
				return fmt.Errorf("%s", message(err))
			}
			objs = []api.Object{obj}
			rv = obj.GetResourceVersion()
		} else {
			objs, rv, err = cl.List(c.Context, r, ns, client.ListOptions{LabelSelector: c.String("selector")})
			if err != nil {
				return fmt.Errorf("%s", message(err))
			}
		}
		sort.Slice(objs, func(i, j int) bool {
			if objs[i].GetNamespace() != objs[j].GetNamespace() {
				return objs[i].GetNamespace() < objs[j].GetNamespace()
			}
			return objs[i].GetName() < objs[j].GetName()
		})
		if i > 0 && out == "" || i > 0 && out == "wide" {
			fmt.Fprintln(w)
		}
		if err := printObjects(w, r, objs, out, all && r.Namespaced, len(kinds) > 1); err != nil {
			return err
		}
		if len(objs) == 0 && (out == "" || out == "wide") {
			if ns == "" {
				fmt.Fprintf(c.App.ErrWriter, "No %s found.\n", r.Name)
			} else {
				fmt.Fprintf(c.App.ErrWriter, "No %s found in %s namespace.\n", r.Name, ns)
			}
		}
		if c.Bool("watch") {
			return watchObjects(c, cl, r, ns, rv, out, all && r.Namespaced)
		}
	}
	return nil
}

func watchObjects(c *cli.Context, cl client.Interface, r *api.Resource, ns, rv, out string, withNS bool) error {
	for {
		events, err := cl.Watch(c.Context, r, ns, client.ListOptions{LabelSelector: c.String("selector"), ResourceVersion: rv})
		if err != nil {
			return fmt.Errorf("%s", message(err))
		}
		for ev := range events {
			rv = ev.Object.GetResourceVersion()
			if ev.Type == client.Deleted && (out == "" || out == "wide") {
				fmt.Fprintf(c.App.Writer, "%s\tdeleted\n", ev.Object.GetName())
				continue
			}
			if err := printRows(c.App.Writer, r, []api.Object{ev.Object}, out, withNS, false, false); err != nil {
				return err
			}
		}
		if c.Context.Err() != nil {
			return nil
		}
		time.Sleep(time.Second) // the stream broke: resume from rv
	}
}

func printObjects(w io.Writer, r *api.Resource, objs []api.Object, out string, withNS, withKind bool) error {
	switch out {
	case "json":
		if len(objs) == 1 {
			return writeJSONTo(w, objs[0])
		}
		return writeJSONTo(w, map[string]any{"apiVersion": "v1", "kind": "List", "items": objs})
	case "yaml":
		var v any = map[string]any{"apiVersion": "v1", "kind": "List", "items": objs}
		if len(objs) == 1 {
			v = objs[0]
		}
		data, err := yaml.Marshal(v)
		if err != nil {
			return err
		}
		_, err = w.Write(data)
		return err
	}
	return printRows(w, r, objs, out, withNS, withKind, true)
}

func printRows(w io.Writer, r *api.Resource, objs []api.Object, out string, withNS, withKind, header bool) error {
	if out == "json" || out == "yaml" {
		return printObjects(w, r, objs, out, withNS, withKind)
	}
	if out == "name" {
		for _, o := range objs {
			fmt.Fprintf(w, "%s/%s\n", strings.ToLower(r.Kind), o.GetName())
		}
		return nil
	}
	if len(objs) == 0 {
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	cols, row := table(r, out == "wide")
	if withNS {
		cols = append([]string{"NAMESPACE"}, cols...)
	}
	if header {
		fmt.Fprintln(tw, strings.Join(cols, "\t"))
	}
	for _, o := range objs {
		cells := row(o)
		if withKind {
			cells[0] = strings.ToLower(r.Kind) + "/" + cells[0]
		}
		if withNS {
			cells = append([]string{o.GetNamespace()}, cells...)
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	return tw.Flush()
}

func writeJSONTo(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "    ")
	return enc.Encode(v)
}

func age(o api.Object) string {
	t := o.GetCreationTimestamp()
	if t.IsZero() {
		return "<unknown>"
	}
	return duration.HumanDuration(time.Since(t.Time))
}
