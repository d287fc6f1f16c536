package main

import (
	"fmt"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/skep-io/skep/controlplane/client"
)

func execCommand() *cli.Command {
	return &cli.Command{
		Name:      "exec",
		Usage:     "run a command in a container: skep exec POD [-c NAME] [-i] -- CMD [ARG...]; exits with the command's exit code",
		ArgsUsage: "POD -- CMD [ARG...]",
		Flags: []cli.Flag{
			namespaceFlag(), configFlag(),
			&cli.StringFlag{Name: "container", Aliases: []string{"c"}, Usage: "the container; default the pod's only one"},
			&cli.BoolFlag{Name: "stdin", Aliases: []string{"i"}, Usage: "pass this terminal's stdin to the command (no TTY)"},
		},
		Action: runExec,
	}
}

func runExec(c *cli.Context) error {
	args := c.Args().Slice()
	if len(args) < 2 {
		return fmt.Errorf("usage: skep exec POD [-c CONTAINER] [-i] -- CMD [ARG...]")
	}
	pod, cmd := args[0], args[1:]
	if cmd[0] == "--" {
		cmd = cmd[1:]
	}
	if len(cmd) == 0 {
		return fmt.Errorf("say which command to run: skep exec %s -- CMD [ARG...]", pod)
	}
	cl, err := newClient(c)
	if err != nil {
		return err
	}
	opts := client.ExecOptions{Container: c.String("container"), Command: cmd, Stdout: c.App.Writer, Stderr: c.App.ErrWriter}
	if c.Bool("stdin") {
		opts.Stdin = os.Stdin
	}
	code, err := cl.Exec(c.Context, namespaceOf(c), podName(pod), opts)
	if err != nil {
		return fmt.Errorf("%s", message(err))
	}
	if code != 0 {
		// The command's own exit code, as kubectl exits with it.
		return cli.Exit("", code)
	}
	return nil
}
