package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"

	"github.com/skep-io/skep/controlplane/api"
	"github.com/skep-io/skep/controlplane/client"
)

func cordonCommand() *cli.Command {
	return schedulableCommand("cordon", "mark a node unschedulable: its pods stay, new ones go elsewhere", true)
}

func uncordonCommand() *cli.Command {
	return schedulableCommand("uncordon", "mark a node schedulable again", false)
}

func schedulableCommand(name, usage string, unschedulable bool) *cli.Command {
	return &cli.Command{
		Name:      name,
		Usage:     usage,
		ArgsUsage: "NODE",
		Flags:     []cli.Flag{configFlag()},
		Action:    func(c *cli.Context) error { return runCordon(c, unschedulable) },
	}
}

func drainCommand() *cli.Command {
	return &cli.Command{
		Name:      "drain",
		Usage:     "cordon a node, then delete its pods so that their controllers put them elsewhere",
		ArgsUsage: "NODE",
		Flags: []cli.Flag{configFlag(),
			&cli.BoolFlag{Name: "force", Usage: "also delete pods no controller owns (they are gone for good)"},
			&cli.BoolFlag{Name: "delete-emptydir-data", Usage: "also delete pods with emptyDir volumes (their data is lost)"},
			&cli.Int64Flag{Name: "grace-period", Value: -1, Usage: "seconds each pod has to stop; -1: the pod's own terminationGracePeriodSeconds"},
			&cli.DurationFlag{Name: "timeout", Usage: "give up waiting for the pods to be gone after this long (0: wait as long as it takes)"},
		},
		Action: runDrain,
	}
}

func nodeArg(c *cli.Context) (string, error) {
	if c.NArg() != 1 {
		return "", fmt.Errorf("usage: skep %s NODE", c.Command.Name)
	}
	return c.Args().First(), nil
}

func runCordon(c *cli.Context, unschedulable bool) error {
	cl, name, err := targetAndClient(c, nodeArg)
	if err != nil {
		return err
	}
	verb := map[bool]string{true: "cordoned", false: "uncordoned"}[unschedulable]
	changed, err := setUnschedulable(c.Context, cl, name, unschedulable)
	if err != nil {
		return err
	}
	if !changed {
		verb = "already " + verb
	}
	fmt.Fprintf(c.App.Writer, "node/%s %s\n", name, verb)
	return nil
}

// setUnschedulable sets spec.unschedulable, retrying on conflicts with the
// agent's status writes; it reports whether anything changed.
func setUnschedulable(ctx context.Context, cl client.Interface, name string, unschedulable bool) (bool, error) {
	nodes := api.MustLookup("nodes")
	changed := false
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		obj, err := cl.Get(ctx, nodes, "", name)
		if err != nil {
			return err
		}
		n := obj.(*corev1.Node)
		if n.Spec.Unschedulable == unschedulable {
			return nil
		}
		n.Spec.Unschedulable = unschedulable
		_, err = cl.Update(ctx, nodes, n)
		changed = err == nil
		return err
	})
	if err != nil {
		return false, fmt.Errorf("%s", message(err))
	}
	return changed, nil
}

func runDrain(c *cli.Context) error {
	cl, name, err := targetAndClient(c, nodeArg)
	if err != nil {
		return err
	}
	ctx := c.Context
	if _, err := setUnschedulable(ctx, cl, name, true); err != nil {
		return err
	}
	fmt.Fprintf(c.App.Writer, "node/%s cordoned\n", name)

	pods := api.MustLookup("pods")
	objs, _, err := cl.List(ctx, pods, "", client.ListOptions{FieldSelector: "spec.nodeName=" + name})
	if err != nil {
		return fmt.Errorf("list the pods of node %s: %s", name, message(err))
	}
	// Check every pod before deleting any, as kubectl does, so that a
	// refusal changes nothing but the cordon.
	var unowned, withEmptyDir []string
	var victims []*corev1.Pod
	for _, o := range objs {
		p := o.(*corev1.Pod)
		if p.DeletionTimestamp != nil || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		if metav1.GetControllerOf(p) == nil && !c.Bool("force") {
			unowned = append(unowned, p.Namespace+"/"+p.Name)
		}
		if hasEmptyDir(p) && !c.Bool("delete-emptydir-data") {
			withEmptyDir = append(withEmptyDir, p.Namespace+"/"+p.Name)
		}
		victims = append(victims, p)
	}
	var refusals []string
	if len(unowned) > 0 {
		refusals = append(refusals, "cannot delete pods that declare no controller (use --force to override): "+strings.Join(unowned, ", "))
	}
	if len(withEmptyDir) > 0 {
		refusals = append(refusals, "cannot delete pods with local storage (use --delete-emptydir-data to override): "+strings.Join(withEmptyDir, ", "))
	}
	if len(refusals) > 0 {
		return cli.Exit("error: unable to drain node "+name+", which stays cordoned:\n  "+strings.Join(refusals, "\n  "), 1)
	}

	opts := client.DeleteOptions{}
	if g := c.Int64("grace-period"); g >= 0 {
		opts.GracePeriodSeconds = &g
	}
	for _, p := range victims {
		err := cl.Delete(ctx, pods, p.Namespace, p.Name, opts)
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete pod %s/%s: %s", p.Namespace, p.Name, message(err))
		}
		fmt.Fprintf(c.App.Writer, "evicting pod %s/%s\n", p.Namespace, p.Name)
	}
	if t := c.Duration("timeout"); t > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, t)
		defer cancel()
	}
	for _, p := range victims {
		if err := waitPodGone(ctx, cl, p); err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				return cli.Exit(fmt.Sprintf("error: timed out waiting for pod %s/%s to be gone from node %s (--timeout %s)", p.Namespace, p.Name, name, c.Duration("timeout")), 1)
			}
			return err
		}
		fmt.Fprintf(c.App.Writer, "pod/%s evicted\n", p.Name)
	}
	fmt.Fprintf(c.App.Writer, "node/%s drained\n", name)
	return nil
}

func hasEmptyDir(p *corev1.Pod) bool {
	for _, v := range p.Spec.Volumes {
		if v.EmptyDir != nil {
			return true
		}
	}
	return false
}

// waitPodGone waits until the pod is deleted, or replaced by a new pod of
// the same name (another UID).
func waitPodGone(ctx context.Context, cl client.Interface, p *corev1.Pod) error {
	pods := api.MustLookup("pods")
	for {
		obj, err := cl.Get(ctx, pods, p.Namespace, p.Name)
		if apierrors.IsNotFound(err) || (err == nil && obj.GetUID() != p.UID) {
			return nil
		}
		if err != nil && ctx.Err() == nil {
			return fmt.Errorf("get pod %s/%s: %s", p.Namespace, p.Name, message(err))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}
