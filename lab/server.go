package lab

import (
	"context"
	"errors"
	"syscall"
)

// KillServer kills the control plane as a crash does (SIGKILL): the API,
// the scheduler, the controllers and the embedded NATS go at once, while
// the nodes' agents, pods and dataplanes stay.
func (l *Lab) KillServer() error {
	p := l.st.Server
	if p == nil || !p.running() {
		return errors.New("the server is not running")
	}
	if err := syscall.Kill(p.PID, syscall.SIGKILL); err != nil {
		return err
	}
	l.mu.Lock()
	done := l.reaped[p.PID]
	l.mu.Unlock()
	if done != nil {
		<-done
	}
	return nil
}

// StartServer starts the server again, on the address and data it had,
// and waits until it answers.
func (l *Lab) StartServer(ctx context.Context) error {
	if l.st.Server.running() {
		return errors.New("the server is running")
	}
	return l.startServer(ctx)
}
