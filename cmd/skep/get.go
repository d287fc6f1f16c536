package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/yaml"

	"github.com/skep-io/skep/controlplane/api"
	"github.com/skep-io/skep/controlplane/client"
)

func getCommand() *cli.Command {
	return &cli.Command{
		Name:      "get",
		Usage:     "show objects: skep get pods|svc|deploy|rs|ep|nodes|ns[,...] [NAME...] [-o wide|yaml|json|name] [-w]",
		ArgsUsage: "KIND[,KIND...] [NAME...]",
		Flags: []cli.Flag{
			namespaceFlag(), configFlag(),
			&cli.BoolFlag{Name: "all-namespaces", Aliases: []string{"A"}, Usage: "list across all namespaces"},
			&cli.StringFlag{Name: "selector", Aliases: []string{"l"}, Usage: "label selector, e.g. app=web"},
			&cli.StringFlag{Name: "field-selector", Usage: "field selector, e.g. spec.nodeName=node-1 (the fields the server indexes)"},
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
	names := c.Args().Slice()[1:]
	// As kubectl: only `get KIND NAME` is one object; everything else is a
	// collection, printed as a List in json and yaml whatever its length,
	// so that scripts reading .items work with one match as with many.
	single := len(kinds) == 1 && len(names) == 1
	w := c.App.Writer
	var items []api.Object // json and yaml: every kind's objects, in one List
	var missing []string
	for i, kind := range kinds {
		r, err := api.Lookup(kind)
		if err != nil {
			return err
		}
		objs, rv, notFound, err := fetch(c, cl, r, ns, names)
		if err != nil {
			return err
		}
		missing = append(missing, notFound...)
		if single && len(notFound) > 0 {
			return errors.New(notFound[0])
		}
		sortObjects(objs)
		if c.Bool("watch") {
			if len(objs) == 0 && len(names) == 0 {
				noneFound(c.App.ErrWriter, r, ns, out)
			}
			if err := printWatched(c.Context, w, r, objs, out, all && r.Namespaced); err != nil {
				return err
			}
			return watchObjects(c, cl, r, ns, rv, out, all && r.Namespaced)
		}
		if structured(out) {
			for _, o := range objs {
				api.SetTypeMeta(r, o) // items of a list come without them
			}
			items = append(items, objs...)
			continue
		}
		if i > 0 && out == "" || i > 0 && out == "wide" {
			fmt.Fprintln(w)
		}
		if err := printRows(c.Context, w, r, objs, out, all && r.Namespaced, len(kinds) > 1, true); err != nil {
			return err
		}
		if len(objs) == 0 && len(names) == 0 {
			noneFound(c.App.ErrWriter, r, ns, out)
		}
	}
	if structured(out) {
		var v any = listOf(items)
		if single {
			v = items[0]
		}
		if err := writeStructured(w, v, out); err != nil {
			return err
		}
	}
	if len(missing) > 0 {
		return errors.New(strings.Join(missing, "\n"))
	}
	return nil
}

// noneFound tells a person reading a table that the list is empty; json,
// yaml and name output stay as they are for scripts.
func noneFound(w io.Writer, r *api.Resource, ns, out string) {
	if out != "" && out != "wide" {
		return
	}
	if ns == "" {
		fmt.Fprintf(w, "No %s found.\n", r.Name)
	} else {
		fmt.Fprintf(w, "No %s found in %s namespace.\n", r.Name, ns)
	}
}

// fetch reads the objects named, or lists them all when none is named.
// Names that do not exist are returned as messages, so that the others
// are still printed (as kubectl does).
func fetch(c *cli.Context, cl client.Interface, r *api.Resource, ns string, names []string) (objs []api.Object, rv string, notFound []string, err error) {
	if len(names) == 0 {
		opts := client.ListOptions{LabelSelector: c.String("selector"), FieldSelector: c.String("field-selector")}
		objs, rv, err = cl.List(c.Context, r, ns, opts)
		if err != nil {
			return nil, "", nil, fmt.Errorf("%s", message(err))
		}
		return objs, rv, nil, nil
	}
	for _, name := range names {
		obj, err := cl.Get(c.Context, r, ns, name)
		if apierrors.IsNotFound(err) {
			notFound = append(notFound, message(err))
			continue
		}
		if err != nil {
			return nil, "", nil, fmt.Errorf("%s", message(err))
		}
		objs = append(objs, obj)
		rv = obj.GetResourceVersion()
	}
	return objs, rv, notFound, nil
}

func sortObjects(objs []api.Object) {
	sort.Slice(objs, func(i, j int) bool {
		if objs[i].GetNamespace() != objs[j].GetNamespace() {
			return objs[i].GetNamespace() < objs[j].GetNamespace()
		}
		return objs[i].GetName() < objs[j].GetName()
	})
}

func structured(out string) bool { return out == "json" || out == "yaml" }

// listOf is the List kubectl prints for a collection: apiVersion v1, kind
// List, an empty resourceVersion (the items may come from several
// resources, so there is no one version), and the items in order.
func listOf(items []api.Object) map[string]any {
	if items == nil {
		items = []api.Object{} // "items": [], not null
	}
	return map[string]any{
		"apiVersion": "v1",
		"kind":       "List",
		"metadata":   map[string]any{"resourceVersion": ""},
		"items":      items,
	}
}

// printWatched prints what `get -w` starts from. In json and yaml kubectl
// prints each object by itself, as it prints the changes that follow, so
// the output is one stream of objects.
func printWatched(ctx context.Context, w io.Writer, r *api.Resource, objs []api.Object, out string, withNS bool) error {
	if !structured(out) {
		return printRows(ctx, w, r, objs, out, withNS, false, true)
	}
	for _, o := range objs {
		api.SetTypeMeta(r, o)
		if err := writeStructured(w, o, out); err != nil {
			return err
		}
	}
	return nil
}

func watchObjects(c *cli.Context, cl client.Interface, r *api.Resource, ns, rv, out string, withNS bool) error {
	for {
		opts := client.ListOptions{LabelSelector: c.String("selector"), FieldSelector: c.String("field-selector"), ResourceVersion: rv}
		events, err := cl.Watch(c.Context, r, ns, opts)
		if err != nil {
			return fmt.Errorf("%s", message(err))
		}
		for ev := range events {
			rv = ev.Object.GetResourceVersion()
			if ev.Type == client.Deleted && (out == "" || out == "wide") {
				fmt.Fprintf(c.App.Writer, "%s\tdeleted\n", ev.Object.GetName())
				continue
			}
			if err := printWatched(c.Context, c.App.Writer, r, []api.Object{ev.Object}, out, withNS); err != nil {
				return err
			}
		}
		if c.Context.Err() != nil {
			return nil
		}
		time.Sleep(time.Second) // the stream broke: resume from rv
	}
}

// writeStructured writes v as json or yaml.
func writeStructured(w io.Writer, v any, out string) error {
	if out == "json" {
		return writeJSONTo(w, v)
	}
	data, err := yaml.Marshal(v)
	if err != nil {
		return err
	}
	_, err = w.Write(data)
	return err
}

// printRows prints objects of one resource as `kubectl get` does: their
// kind/name with -o name, else their Table.
func printRows(ctx context.Context, w io.Writer, r *api.Resource, objs []api.Object, out string, withNS, withKind, header bool) error {
	if out == "name" {
		for _, o := range objs {
			fmt.Fprintf(w, "%s/%s\n", strings.ToLower(r.Kind), o.GetName())
		}
		return nil
	}
	if len(objs) == 0 {
		return nil
	}
	table, err := objectsTable(ctx, r, objs)
	if err != nil {
		return err
	}
	opts := tableOptions{wide: out == "wide", withNamespace: withNS, noHeaders: !header}
	if withKind {
		opts.kind = kindPrefix(r)
	}
	return printTable(w, table, opts)
}

func writeJSONTo(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "    ")
	return enc.Encode(v)
}
