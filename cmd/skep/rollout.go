package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
	appsv1 "k8s.io/api/apps/v1"

	"github.com/skep-io/skep/controlplane/api"
	"github.com/skep-io/skep/controlplane/client"
	"github.com/skep-io/skep/controlplane/controllers/deployment"
)

func rolloutCommand() *cli.Command {
	target := "deploy/NAME (or: deploy NAME)"
	return &cli.Command{
		Name:  "rollout",
		Usage: "follow, list and undo a deployment's rollouts",
		Subcommands: []*cli.Command{
			{
				Name:      "status",
				Usage:     "wait until a deployment has rolled out, showing progress; non-zero exit on timeout or a missed progress deadline",
				ArgsUsage: target,
				Flags: []cli.Flag{namespaceFlag(), configFlag(),
					&cli.DurationFlag{Name: "timeout", Usage: "give up after this long (0: wait as long as it takes)"}},
				Action: runRolloutStatus,
			},
			{
				Name:      "undo",
				Usage:     "roll a deployment back to its previous revision, or --to-revision N",
				ArgsUsage: target,
				Flags: []cli.Flag{namespaceFlag(), configFlag(),
					&cli.Int64Flag{Name: "to-revision", Usage: "the revision to go back to (0: the one before the current)"}},
				Action: runRolloutUndo,
			},
			{
				Name:      "history",
				Usage:     "list a deployment's revisions",
				ArgsUsage: target,
				Flags:     []cli.Flag{namespaceFlag(), configFlag()},
				Action:    runRolloutHistory,
			},
		},
	}
}

// deploymentArg reads "deploy/NAME", "deployment NAME" and the like; only
// deployments have rollouts here.
func deploymentArg(c *cli.Context) (string, error) {
	kind, name := "", ""
	switch args := c.Args().Slice(); {
	case len(args) == 1 && strings.Contains(args[0], "/"):
		kind, name, _ = strings.Cut(args[0], "/")
	case len(args) == 2:
		kind, name = args[0], args[1]
	default:
		return "", fmt.Errorf("usage: skep rollout %s deploy/NAME", c.Command.Name)
	}
	r, err := api.Lookup(kind)
	if err != nil {
		return "", err
	}
	if r.Name != "deployments" {
		return "", fmt.Errorf("%s have no rollouts: only deployments do", r.Name)
	}
	if name == "" {
		return "", fmt.Errorf("usage: skep rollout %s deploy/NAME: the name is missing", c.Command.Name)
	}
	return name, nil
}

// targetAndClient reads the verb's one target with parse, then opens the
// client: a usage error is reported before any config is looked for.
func targetAndClient(c *cli.Context, parse func(*cli.Context) (string, error)) (*client.HTTP, string, error) {
	name, err := parse(c)
	if err != nil {
		return nil, "", err
	}
	cl, err := newClient(c)
	return cl, name, err
}

func runRolloutStatus(c *cli.Context) error {
	cl, name, err := targetAndClient(c, deploymentArg)
	if err != nil {
		return err
	}
	ctx := c.Context
	if t := c.Duration("timeout"); t > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, t)
		defer cancel()
	}
	last := ""
	show := func(d *appsv1.Deployment) (bool, error) {
		msg, done, err := deployment.RolloutStatus(d)
		if err != nil {
			return false, err
		}
		if msg != last {
			fmt.Fprintln(c.App.Writer, msg)
			last = msg
		}
		return done, nil
	}
	err = watchDeployment(ctx, cl, namespaceOf(c), name, show)
	if errors.Is(err, context.DeadlineExceeded) {
		return cli.Exit(fmt.Sprintf("error: timed out waiting for deployment %q to roll out (--timeout %s)", name, c.Duration("timeout")), 1)
	}
	if err != nil {
		return cli.Exit("error: "+message(err), 1)
	}
	return nil
}

// watchDeployment calls check with the deployment now and at each change
// until check says done, check fails, or ctx ends. A broken watch is
// resumed from the last version seen.
func watchDeployment(ctx context.Context, cl client.Interface, ns, name string, check func(*appsv1.Deployment) (bool, error)) error {
	deployments := api.MustLookup("deployments")
	for {
		obj, err := cl.Get(ctx, deployments, ns, name)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
		if done, err := check(obj.(*appsv1.Deployment)); done || err != nil {
			return err
		}
		events, err := cl.Watch(ctx, deployments, ns, client.ListOptions{
			FieldSelector: "metadata.name=" + name, ResourceVersion: obj.GetResourceVersion(),
		})
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
		for ev := range events {
			if ev.Type == client.Deleted {
				return fmt.Errorf("deployment %q was deleted", name)
			}
			d, ok := ev.Object.(*appsv1.Deployment)
			if !ok || d.Name != name {
				continue
			}
			if done, err := check(d); done || err != nil {
				return err
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		time.Sleep(200 * time.Millisecond) // the stream broke: list again, then resume
	}
}

func runRolloutUndo(c *cli.Context) error {
	cl, name, err := targetAndClient(c, deploymentArg)
	if err != nil {
		return err
	}
	before, err := cl.Get(c.Context, api.MustLookup("deployments"), namespaceOf(c), name)
	if err != nil {
		return fmt.Errorf("%s", message(err))
	}
	d, err := deployment.Rollback(c.Context, cl, namespaceOf(c), name, c.Int64("to-revision"))
	if err != nil {
		return err
	}
	if d.ResourceVersion == before.GetResourceVersion() {
		fmt.Fprintf(c.App.Writer, "deployment.apps/%s skipped rollback (the current template already is that revision's)\n", name)
		return nil
	}
	fmt.Fprintf(c.App.Writer, "deployment.apps/%s rolled back\n", name)
	return nil
}

func runRolloutHistory(c *cli.Context) error {
	cl, name, err := targetAndClient(c, deploymentArg)
	if err != nil {
		return err
	}
	obj, err := cl.Get(c.Context, api.MustLookup("deployments"), namespaceOf(c), name)
	if err != nil {
		return fmt.Errorf("%s", message(err))
	}
	history, err := deployment.History(c.Context, cl, obj.(*appsv1.Deployment))
	if err != nil {
		return err
	}
	fmt.Fprintf(c.App.Writer, "deployment.apps/%s\nREVISION  CHANGE-CAUSE\n", name)
	for i := len(history) - 1; i >= 0; i-- {
		rs := history[i]
		cause := rs.Annotations[deployment.ChangeCauseAnnotation]
		if cause == "" {
			cause = "<none>"
		}
		fmt.Fprintf(c.App.Writer, "%-9d %s\n", deployment.Revision(rs.Annotations), cause)
	}
	return nil
}
