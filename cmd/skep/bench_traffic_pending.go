package main

import "github.com/urfave/cli/v2"

// trafficBenchCommands stands in for `skep bench dataplane` and
// `skep bench nodeport`, which live in bench_traffic.go; this file goes
// when that one lands.
func trafficBenchCommands() []*cli.Command { return nil }
