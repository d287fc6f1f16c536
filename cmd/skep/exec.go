package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"
	"golang.org/x/term"
	"k8s.io/client-go/tools/remotecommand"

	"github.com/skep-io/skep/controlplane/client"
)

func execCommand() *cli.Command {
	return &cli.Command{
		Name:      "exec",
		Usage:     "run a command in a container: skep exec POD [-c NAME] [-i] [-t] -- CMD [ARG...]; exits with the command's exit code",
		ArgsUsage: "POD -- CMD [ARG...]",
		Flags: []cli.Flag{
			namespaceFlag(), configFlag(),
			&cli.StringFlag{Name: "container", Aliases: []string{"c"}, Usage: "the container; default the pod's only one"},
			&cli.BoolFlag{Name: "stdin", Aliases: []string{"i"}, Usage: "pass this terminal's stdin to the command"},
			&cli.BoolFlag{Name: "tty", Aliases: []string{"t"}, Usage: "run the command on a terminal (with -i, this one in raw mode)"},
		},
		Action: runExec,
	}
}

func runExec(c *cli.Context) error {
	args := c.Args().Slice()
	if len(args) < 2 {
		return fmt.Errorf("usage: skep exec POD [-c CONTAINER] [-i] [-t] -- CMD [ARG...]")
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
	opts := client.ExecOptions{Container: c.String("container"), Command: cmd, Stdout: c.App.Writer, Stderr: c.App.ErrWriter, TTY: c.Bool("tty")}
	if c.Bool("stdin") {
		opts.Stdin = os.Stdin
	}
	if opts.TTY && opts.Stdin != nil && term.IsTerminal(int(os.Stdin.Fd())) {
		// Keys go to the command as typed, not to this terminal's line
		// editing; the terminal is restored when the command ends.
		state, err := term.MakeRaw(int(os.Stdin.Fd()))
		if err != nil {
			return fmt.Errorf("put the terminal in raw mode: %w", err)
		}
		defer term.Restore(int(os.Stdin.Fd()), state)
		opts.Resize = newTerminalSizes(int(os.Stdin.Fd()))
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

// terminalSizes gives the terminal's size, then each change (SIGWINCH).
type terminalSizes struct {
	fd      int
	changed chan os.Signal
	first   bool
}

func newTerminalSizes(fd int) *terminalSizes {
	t := &terminalSizes{fd: fd, changed: make(chan os.Signal, 1), first: true}
	signal.Notify(t.changed, syscall.SIGWINCH)
	return t
}

func (t *terminalSizes) Next() *remotecommand.TerminalSize {
	if !t.first {
		if _, ok := <-t.changed; !ok {
			return nil
		}
	}
	t.first = false
	w, h, err := term.GetSize(t.fd)
	if err != nil {
		return nil
	}
	return &remotecommand.TerminalSize{Width: uint16(w), Height: uint16(h)}
}
