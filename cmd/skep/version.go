package main

import (
	"fmt"

	"github.com/urfave/cli/v2"
)

// versionCommand is `skep version`: the version the binary was built as
// (main.version, set by make build from git describe).
func versionCommand() *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "print the version of this binary",
		Action: func(c *cli.Context) error {
			fmt.Fprintf(c.App.Writer, "skep %s\n", version)
			return nil
		},
	}
}
