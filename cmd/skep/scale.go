package main

import (
	"fmt"

	"github.com/urfave/cli/v2"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/util/retry"

	"github.com/skep-io/skep/controlplane/api"
)

// scalable are the kinds skep scale sets spec.replicas of.
var scalable = map[string]struct{}{"Deployment": {}, "ReplicaSet": {}, "ReplicationController": {}}

// scaleCommand is `skep scale KIND NAME --replicas N`, as kubectl scale:
// it sets spec.replicas of a deployment, replicaset or
// replicationcontroller, reading again and retrying when another writer
// got there first.
func scaleCommand() *cli.Command {
	return &cli.Command{
		Name:      "scale",
		Usage:     "set the replicas of a deployment, replicaset or replicationcontroller: skep scale deploy NAME --replicas N",
		ArgsUsage: "KIND NAME",
		Flags: []cli.Flag{namespaceFlag(), configFlag(),
			&cli.IntFlag{Name: "replicas", Required: true, Usage: "the number of pods wanted"}},
		Action: func(c *cli.Context) error {
			if c.NArg() != 2 {
				return fmt.Errorf("usage: skep scale KIND NAME --replicas N")
			}
			n := c.Int("replicas")
			if n < 0 {
				return fmt.Errorf("--replicas %d: must be 0 or more", n)
			}
			r, err := api.Lookup(c.Args().First())
			if err != nil {
				return err
			}
			cl, err := newClient(c)
			if err != nil {
				return err
			}
			if _, ok := scalable[r.Kind]; !ok {
				return fmt.Errorf("%s cannot be scaled (deployments, replicasets and replicationcontrollers can)", r.Name)
			}
			name := c.Args().Get(1)
			err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
				obj, err := cl.Get(c.Context, r, namespaceOf(c), name)
				if err != nil {
					return err
				}
				replicas := int32(n)
				switch o := obj.(type) {
				case *appsv1.Deployment:
					o.Spec.Replicas = &replicas
				case *appsv1.ReplicaSet:
					o.Spec.Replicas = &replicas
				case *corev1.ReplicationController:
					o.Spec.Replicas = &replicas
				}
				_, err = cl.Update(c.Context, r, obj)
				return err
			})
			if err != nil {
				return fmt.Errorf("%s", message(err))
			}
			fmt.Fprintf(c.App.Writer, "%s/%s scaled\n", r.Name, name)
			return nil
		},
	}
}
