// Command pause is the first process of every skep pod. It holds the pod's
// network, IPC and UTS namespaces open for the pod's other containers, reaps
// the zombies that end up parented to it, and exits on SIGTERM or SIGINT.
//
// As PID 1 of its PID namespace it receives only the signals it has a
// handler for, so it must install them explicitly.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for sig := range signals {
		if sig == syscall.SIGCHLD {
			reapZombies()
			continue
		}
		os.Exit(0)
	}
}

// reapZombies collects every child that has exited; several exits can share
// one SIGCHLD, so it loops until none is left.
func reapZombies() {
	for {
		var status syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
	}
}
