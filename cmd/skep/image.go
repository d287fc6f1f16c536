package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/urfave/cli/v2"
	corev1 "k8s.io/api/core/v1"

	"github.com/skep-io/skep/controlplane/api"
	"github.com/skep-io/skep/controlplane/api/conditions"
	"github.com/skep-io/skep/controlplane/client"
)

// imageCommand dispatches its verb itself rather than through
// subcommands, so that hoistFlags lets --node follow the file as in
// `skep image import app.tar --node node1`.
func imageCommand() *cli.Command {
	return &cli.Command{
		Name:      "image",
		Usage:     "load images onto nodes with no registry: skep image import FILE.tar [--node NODE] (OCI layout or docker-archive)",
		ArgsUsage: "import FILE.tar",
		Flags: []cli.Flag{
			configFlag(),
			&cli.StringFlag{Name: "node", Usage: "the node to load the image onto; default every Ready node"},
		},
		Action: func(c *cli.Context) error {
			if c.Args().First() != "import" || c.NArg() != 2 {
				return fmt.Errorf("usage: skep image import FILE.tar [--node NODE]")
			}
			return runImageImport(c, c.Args().Get(1))
		},
	}
}

func runImageImport(c *cli.Context, file string) error {
	if _, err := os.Stat(file); err != nil {
		return fmt.Errorf("image archive: %w", err)
	}
	cl, err := newClient(c)
	if err != nil {
		return err
	}
	nodes := []string{c.String("node")}
	if nodes[0] == "" {
		if nodes, err = readyNodes(c, cl); err != nil {
			return err
		}
	}
	var errs []error
	for _, node := range nodes {
		f, err := os.Open(file)
		if err != nil {
			return fmt.Errorf("image archive: %w", err)
		}
		res, err := cl.ImportImage(c.Context, node, f)
		f.Close()
		if err != nil {
			errs = append(errs, fmt.Errorf("node %s: %s", node, message(err)))
			continue
		}
		for _, img := range res.Images {
			fmt.Fprintf(c.App.Writer, "%s: imported %s\n", node, img)
		}
	}
	return errors.Join(errs...)
}

// readyNodes lists the nodes whose Ready condition is True.
func readyNodes(c *cli.Context, cl *client.HTTP) ([]string, error) {
	objs, _, err := cl.List(c.Context, api.MustLookup("nodes"), "", client.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list nodes: %s", message(err))
	}
	var ready []string
	for _, o := range objs {
		if conditions.NodeReady(o.(*corev1.Node)) {
			ready = append(ready, o.GetName())
		}
	}
	if len(ready) == 0 {
		return nil, errors.New("no node is Ready to load the image onto (skep get nodes); name one with --node")
	}
	return ready, nil
}
