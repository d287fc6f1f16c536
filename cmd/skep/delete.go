package main

import (
	"fmt"

	"github.com/urfave/cli/v2"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skep-io/skep/controlplane/api"
	"github.com/skep-io/skep/controlplane/client"
	"github.com/skep-io/skep/controlplane/controllers/gc"
)

func deleteCommand() *cli.Command {
	return &cli.Command{
		Name:      "delete",
		Usage:     "delete objects: skep delete KIND NAME..., or skep delete -f FILE",
		ArgsUsage: "[KIND NAME...]",
		Flags: []cli.Flag{
			namespaceFlag(), configFlag(),
			&cli.StringSliceFlag{Name: "filename", Aliases: []string{"f"}, Usage: "delete the objects named in these files"},
			&cli.StringFlag{Name: "cascade", Value: "background", Usage: "background: delete what the object owns too; orphan: keep it"},
			&cli.Int64Flag{Name: "grace-period", Value: -1, Usage: "seconds a pod has to stop; -1: the pod's own terminationGracePeriodSeconds; 0: at once"},
			dryRunFlag(),
		},
		Action: runDelete,
	}
}

func runDelete(c *cli.Context) error {
	cl, err := newClient(c)
	if err != nil {
		return err
	}
	opts := client.DeleteOptions{}
	switch c.String("cascade") {
	case "background", "true":
	case "orphan", "false":
		p := metav1.DeletePropagationOrphan
		opts.PropagationPolicy = &p
	default:
		return fmt.Errorf("--cascade %q: allowed are background, orphan", c.String("cascade"))
	}
	if g := c.Int64("grace-period"); g >= 0 {
		opts.GracePeriodSeconds = &g
	}
	dryRun, err := dryRunOf(c)
	if err != nil {
		return err
	}
	opts.DryRun = dryRun == dryRunServer
	type target struct {
		r        *api.Resource
		ns, name string
	}
	var targets []target
	if files := c.StringSlice("filename"); len(files) > 0 {
		ms, err := readManifests(files, namespaceOf(c))
		if err != nil {
			return err
		}
		for _, m := range ms {
			targets = append(targets, target{m.resource, m.obj.GetNamespace(), m.obj.GetName()})
		}
	} else {
		if c.NArg() < 2 {
			return fmt.Errorf("say what to delete: skep delete KIND NAME..., or -f FILE")
		}
		r, err := api.Lookup(c.Args().First())
		if err != nil {
			return err
		}
		for _, name := range c.Args().Slice()[1:] {
			targets = append(targets, target{r, namespaceOf(c), name})
		}
	}
	failed := false
	for _, t := range targets {
		if dryRun != dryRunNone {
			if err := deleteDryRun(c, cl, t.r, t.ns, t.name, dryRun, opts); err != nil {
				fmt.Fprintf(c.App.ErrWriter, "error: %s\n", message(err))
				failed = true
			}
			continue
		}
		if opts.PropagationPolicy != nil && *opts.PropagationPolicy == metav1.DeletePropagationOrphan {
			// The orphan finalizer first, so no controller re-adopts the
			// dependents between their release and the owner's delete.
			if err := gc.DeleteOrphaning(c.Context, cl, t.r, t.ns, t.name); err != nil {
				fmt.Fprintf(c.App.ErrWriter, "error: %s\n", message(err))
				failed = true
				continue
			}
			fmt.Fprintf(c.App.Writer, "%s \"%s\" deleted (dependents orphaned)\n", t.r.Kind, t.name)
			continue
		}
		if err := cl.Delete(c.Context, t.r, t.ns, t.name, opts); err != nil {
			fmt.Fprintf(c.App.ErrWriter, "error: %s\n", message(err))
			failed = true
			continue
		}
		if t.r.Kind == "Namespace" {
			// The server answers at once; the namespace controller deletes
			// the content, and the namespace after it.
			fmt.Fprintf(c.App.Writer, "%s \"%s\" deleted (Terminating until everything in it is deleted)\n", t.r.Kind, t.name)
			continue
		}
		fmt.Fprintf(c.App.Writer, "%s \"%s\" deleted\n", t.r.Kind, t.name)
	}
	if failed {
		return cli.Exit("", 1)
	}
	return nil
}

// deleteDryRun reports what a delete would do and changes nothing. A
// client dry run only reads the object, so a missing one is still an
// error; a server dry run sends the delete with dryRun=All, so the server
// checks everything it would check (finalizers, preconditions, the Node
// authorizer) and writes nothing. The orphaning delete's finalizer step is
// a write, so a dry run leaves it to the server's propagation policy.
func deleteDryRun(c *cli.Context, cl client.Interface, r *api.Resource, ns, name string, mode dryRunMode, opts client.DeleteOptions) error {
	var err error
	if mode == dryRunServer {
		err = cl.Delete(c.Context, r, ns, name, opts)
	} else {
		_, err = cl.Get(c.Context, r, ns, name)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(c.App.Writer, "%s \"%s\" deleted %s\n", r.Kind, name, mode.suffix())
	return nil
}

// dryRunMode is kubectl's --dry-run strategy.
type dryRunMode string

const (
	dryRunNone   dryRunMode = "none"   // do it
	dryRunClient dryRunMode = "client" // print what would be done, write nothing
	dryRunServer dryRunMode = "server" // send it with dryRun=All: the server checks, writes nothing
)

// suffix is what kubectl appends to the line it prints for each object.
func (m dryRunMode) suffix() string {
	if m == dryRunServer {
		return "(server dry run)"
	}
	return "(dry run)"
}

func dryRunFlag() cli.Flag {
	return &cli.StringFlag{Name: "dry-run", Value: string(dryRunNone),
		Usage: "none: do it; client: print what would be done without sending it; server: the server checks it and writes nothing"}
}

// dryRunOf reads --dry-run with kubectl's spellings.
func dryRunOf(c *cli.Context) (dryRunMode, error) {
	switch m := dryRunMode(c.String("dry-run")); m {
	case dryRunNone, dryRunClient, dryRunServer:
		return m, nil
	default:
		return "", fmt.Errorf("--dry-run %q: allowed are none, server, client", string(m))
	}
}
