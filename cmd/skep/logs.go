package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/skep-io/skep/controlplane/client"
)

func logsCommand() *cli.Command {
	return &cli.Command{
		Name:      "logs",
		Usage:     "print a container's output: skep logs POD [-c NAME] [-f] [--previous] [--tail N]",
		ArgsUsage: "POD",
		Flags: []cli.Flag{
			namespaceFlag(), configFlag(),
			&cli.StringFlag{Name: "container", Aliases: []string{"c"}, Usage: "the container; default the pod's only one"},
			&cli.BoolFlag{Name: "follow", Aliases: []string{"f"}, Usage: "keep printing until the container exits"},
			&cli.BoolFlag{Name: "previous", Aliases: []string{"p"}, Usage: "the output of the container's previous run"},
			&cli.Int64Flag{Name: "tail", Value: -1, Usage: "only the last N lines; -1: all"},
		},
		Action: runLogs,
	}
}

func runLogs(c *cli.Context) error {
	if c.NArg() != 1 {
		return fmt.Errorf("usage: skep logs POD [-c CONTAINER] [-f] [--previous]")
	}
	cl, err := newClient(c)
	if err != nil {
		return err
	}
	opts := client.LogOptions{Container: c.String("container"), Follow: c.Bool("follow"), Previous: c.Bool("previous")}
	if n := c.Int64("tail"); n >= 0 {
		opts.TailLines = &n
	}
	logs, err := cl.Logs(c.Context, namespaceOf(c), podName(c.Args().First()), opts)
	if err != nil {
		return fmt.Errorf("%s", message(err))
	}
	defer logs.Close()
	if _, err := io.Copy(c.App.Writer, logs); err != nil && c.Context.Err() == nil {
		return fmt.Errorf("read the logs: %w", err)
	}
	return nil
}

// podName accepts POD and pod/POD, as kubectl does.
func podName(arg string) string {
	for _, prefix := range []string{"pod/", "pods/", "po/"} {
		if name, ok := strings.CutPrefix(arg, prefix); ok {
			return name
		}
	}
	return arg
}
