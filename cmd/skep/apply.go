package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/urfave/cli/v2"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/skep-io/skep/controlplane/api"
	"github.com/skep-io/skep/controlplane/client"
)

var fileFlag = &cli.StringSliceFlag{Name: "filename", Aliases: []string{"f"}, Usage: "a YAML/JSON file, a directory of them, or - for standard input", Required: true}

func applyCommand() *cli.Command {
	return &cli.Command{
		Name:      "apply",
		Usage:     "create or update the objects in files; every document is checked by the server before any is written",
		ArgsUsage: " ",
		Flags:     []cli.Flag{fileFlag, namespaceFlag(), configFlag(), dryRunFlag()},
		Action: func(c *cli.Context) error {
			return runApply(c, true)
		},
	}
}

func createCommand() *cli.Command {
	return &cli.Command{
		Name:  "create",
		Usage: "create the objects in files; an object that exists is an error",
		Flags: []cli.Flag{fileFlag, namespaceFlag(), configFlag(), dryRunFlag()},
		Action: func(c *cli.Context) error {
			return runApply(c, false)
		},
	}
}

// manifest is one decoded document of a file.
type manifest struct {
	file     string
	index    int
	resource *api.Resource
	obj      api.Object
	doc      map[string]any // the document as written, for the server to check
	exists   bool
}

// body is the document with its namespace and resourceVersion set.
func (m manifest) body() json.RawMessage {
	meta, _ := m.doc["metadata"].(map[string]any)
	if meta == nil {
		meta = map[string]any{}
		m.doc["metadata"] = meta
	}
	if m.resource.Namespaced {
		meta["namespace"] = m.obj.GetNamespace()
	}
	if rv := m.obj.GetResourceVersion(); rv != "" {
		meta["resourceVersion"] = rv
	}
	data, _ := json.Marshal(m.doc)
	return data
}

func (m manifest) where() string {
	name := m.obj.GetName()
	return fmt.Sprintf("%s: document %d (%s/%s)", m.file, m.index, m.resource.Kind, name)
}

// readManifests decodes every document of every file named, strictly.
// Decoding errors stop here; validation is the server's.
func readManifests(paths []string, namespace string) ([]manifest, error) {
	var files []string
	for _, p := range paths {
		if p == "-" {
			files = append(files, p)
			continue
		}
		st, err := os.Stat(p)
		if err != nil {
			return nil, err
		}
		if !st.IsDir() {
			files = append(files, p)
			continue
		}
		entries, err := os.ReadDir(p)
		if err != nil {
			return nil, err
		}
		var names []string
		for _, e := range entries {
			if ext := filepath.Ext(e.Name()); !e.IsDir() && (ext == ".yaml" || ext == ".yml" || ext == ".json") {
				names = append(names, filepath.Join(p, e.Name()))
			}
		}
		sort.Strings(names)
		files = append(files, names...)
	}
	var out []manifest
	for _, f := range files {
		var rd io.Reader = os.Stdin
		if f != "-" {
			fh, err := os.Open(f)
			if err != nil {
				return nil, err
			}
			defer fh.Close()
			rd = fh
		}
		docs, err := api.SplitDocuments(rd)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		for _, d := range docs {
			// Unknown fields are left for the server, which reports them
			// with the document's other errors.
			r, obj, _ := api.Decode(d.Data)
			if obj == nil {
				_, _, err := api.Decode(d.Data)
				return nil, fmt.Errorf("%s: document %d: %w", f, d.Index, err)
			}
			m := manifest{file: f, index: d.Index, resource: r, obj: obj}
			data, err := api.ToJSON(d.Data)
			if err == nil {
				err = json.Unmarshal(data, &m.doc)
			}
			if err != nil {
				return nil, fmt.Errorf("%s: %w", m.where(), err)
			}
			if r.Namespaced && obj.GetNamespace() == "" {
				obj.SetNamespace(namespace)
			}
			out = append(out, m)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no objects in %s", strings.Join(paths, ", "))
	}
	return out, nil
}

func runApply(c *cli.Context, apply bool) error {
	dryRun, err := dryRunOf(c)
	if err != nil {
		return err
	}
	ms, err := readManifests(c.StringSlice("filename"), namespaceOf(c))
	if err != nil {
		return err
	}
	cl, err := newClient(c)
	if err != nil {
		return err
	}
	ctx := c.Context
	// Namespaces the file itself creates count as existing when the other
	// documents are checked.
	creating := map[string]bool{}
	for _, m := range ms {
		if m.resource.Kind == "Namespace" {
			creating[m.obj.GetName()] = true
		}
	}
	// First pass: the server checks every document, writing nothing.
	var problems []string
	for i := range ms {
		m := &ms[i]
		cur, err := cl.Get(ctx, m.resource, m.obj.GetNamespace(), m.obj.GetName())
		switch {
		case err == nil:
			if !apply {
				problems = append(problems, fmt.Sprintf("%s: already exists", m.where()))
				continue
			}
			m.exists = true
			m.obj.SetResourceVersion(cur.GetResourceVersion())
		case !apierrors.IsNotFound(err):
			return fmt.Errorf("%s: %w", m.where(), err)
		}
		if dryRun == dryRunClient {
			continue // a client dry run sends no write, not even to check it
		}
		err = cl.Apply(ctx, m.resource, m.obj.GetNamespace(), m.obj.GetName(), m.body(), m.exists, true)
		if apierrors.IsNotFound(err) && creating[m.obj.GetNamespace()] {
			continue
		}
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: %s", m.where(), message(err)+alsoInvalid(ctx, cl, m, err)))
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("nothing was applied:\n  %s", strings.Join(problems, "\n  "))
	}
	// Second pass: write, namespaces first.
	sort.SliceStable(ms, func(i, j int) bool { return ms[i].resource.Kind == "Namespace" && ms[j].resource.Kind != "Namespace" })
	for _, m := range ms {
		verb := "created"
		if m.exists {
			verb = "configured"
		}
		if dryRun != dryRunNone {
			// The first pass was all of it: the server checked every
			// document (server) or nothing was sent (client).
			fmt.Fprintf(c.App.Writer, "%s/%s %s %s\n", strings.ToLower(m.resource.Kind), m.obj.GetName(), verb, dryRun.suffix())
			continue
		}
		err = cl.Apply(ctx, m.resource, m.obj.GetNamespace(), m.obj.GetName(), m.body(), m.exists, false)
		if err != nil {
			return fmt.Errorf("%s: %s", m.where(), message(err))
		}
		fmt.Fprintf(c.App.Writer, "%s/%s %s\n", strings.ToLower(m.resource.Kind), m.obj.GetName(), verb)
	}
	return nil
}

// alsoInvalid completes a refusal for unknown fields. Kubernetes' strict
// decoding stops at them, before validation; the document without them is
// checked again (a dry run), so one answer names every problem of the
// document, as a user fixing a manifest wants.
func alsoInvalid(ctx context.Context, cl *client.HTTP, m *manifest, err error) string {
	if !apierrors.IsBadRequest(err) || !strings.Contains(message(err), "strict decoding error") {
		return ""
	}
	obj := m.obj.DeepCopyObject().(api.Object)
	api.SetTypeMeta(m.resource, obj)
	data, merr := json.Marshal(obj)
	if merr != nil {
		return ""
	}
	verr := cl.Apply(ctx, m.resource, obj.GetNamespace(), obj.GetName(), data, m.exists, true)
	if verr == nil || apierrors.IsNotFound(verr) {
		return ""
	}
	return "; " + message(verr)
}

// message is an API error as a user reads it.
func message(err error) string {
	if se, ok := err.(apierrors.APIStatus); ok {
		return se.Status().Message
	}
	return err.Error()
}

func namespaceFlag() cli.Flag {
	return &cli.StringFlag{Name: "namespace", Aliases: []string{"n"}, Value: api.DefaultNamespace, Usage: "the namespace"}
}

func namespaceOf(c *cli.Context) string { return c.String("namespace") }

func newClient(c *cli.Context) (*client.HTTP, error) {
	path, err := client.FindConfig(c.String("config"))
	if err != nil {
		return nil, err
	}
	cfg, err := client.LoadConfig(path)
	if err != nil {
		return nil, fmt.Errorf("read client config: %w (start `skep server`, which writes one, or pass --config)", err)
	}
	return client.New(cfg)
}

func configFlag() cli.Flag {
	return &cli.StringFlag{Name: "config", Usage: "the client config; default $SKEPCONFIG, then ~/.skep/config"}
}
