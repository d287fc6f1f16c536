package main

import (
	"fmt"
	"io"
	"math"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/urfave/cli/v2"
)

func logsCommand() *cli.Command {
	return &cli.Command{
		Name:      "logs",
		Usage:     "print a container's output: skep logs POD [-c NAME] [-f] [--previous] [--tail N] [--since D|--since-time T] [--timestamps] [--limit-bytes N]",
		ArgsUsage: "POD",
		Flags: []cli.Flag{
			namespaceFlag(), configFlag(),
			&cli.StringFlag{Name: "container", Aliases: []string{"c"}, Usage: "the container; default the pod's only one"},
			&cli.BoolFlag{Name: "follow", Aliases: []string{"f"}, Usage: "keep printing until the container exits"},
			&cli.BoolFlag{Name: "previous", Aliases: []string{"p"}, Usage: "the output of the container's previous run"},
			&cli.Int64Flag{Name: "tail", Value: -1, Usage: "only the last N lines; -1: all"},
			&cli.DurationFlag{Name: "since", Usage: "only lines newer than this (5s, 2m, 3h)"},
			&cli.TimestampFlag{Name: "since-time", Layout: time.RFC3339, Usage: "only lines after this time (RFC 3339)"},
			&cli.BoolFlag{Name: "timestamps", Usage: "begin each line with the time it was written"},
			&cli.Int64Flag{Name: "limit-bytes", Usage: "at most this many bytes; 0: all"},
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
	opts := &corev1.PodLogOptions{Container: c.String("container"), Follow: c.Bool("follow"), Previous: c.Bool("previous"), Timestamps: c.Bool("timestamps")}
	if n := c.Int64("tail"); n >= 0 {
		opts.TailLines = &n
	}
	if d := c.Duration("since"); d != 0 {
		// Whole seconds, at least one, as kubectl rounds --since.
		secs := max(int64(math.Ceil(d.Seconds())), 1)
		opts.SinceSeconds = &secs
	}
	if t := c.Timestamp("since-time"); t != nil {
		opts.SinceTime = &metav1.Time{Time: *t}
	}
	if n := c.Int64("limit-bytes"); n != 0 {
		opts.LimitBytes = &n
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
