package labtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/skep-io/skep/lab"
)

// Kubectl runs Debian's kubectl (`make deps` installs it) against a lab,
// as its admin: with the admin.conf the lab's server wrote and nothing of
// the user's own configuration or cache.
type Kubectl struct {
	// Config is the kubeconfig every run names with --kubeconfig.
	Config string
	// Home is kubectl's $HOME, where it caches discovery.
	Home string
	// Env adds variables to kubectl's environment (EDITOR, another HOME).
	Env []string
}

// NewKubectl is a Kubectl for the lab's admin. It fails the test when
// kubectl is not installed: a suite of kubectl's runs proves nothing
// without it.
func NewKubectl(t testing.TB, l *lab.Lab) *Kubectl {
	t.Helper()
	if _, err := exec.LookPath("kubectl"); err != nil {
		t.Fatalf("kubectl is not installed (make deps installs Debian's kubectl): %v", err)
	}
	return &Kubectl{Config: l.AdminConfigPath(), Home: t.TempDir()}
}

// Command is a kubectl command line, not started: for runs a test drives
// while they last (port-forward, logs -f, a stream it kills).
func (k *Kubectl) Command(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "kubectl", append([]string{"--kubeconfig", k.Config}, args...)...)
	cmd.Env = append(append(os.Environ(), "HOME="+k.Home, "KUBECONFIG="), k.Env...)
	return cmd
}

// Run runs kubectl to its end with stdin (nil: none) and returns what it
// printed. When ctx ends first, kubectl is killed and Err says so.
func (k *Kubectl) Run(ctx context.Context, stdin io.Reader, args ...string) KubectlResult {
	cmd := k.Command(ctx, args...)
	cmd.Stdin = stdin
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("did not finish in time (%v): %w", ctx.Err(), err)
	}
	return KubectlResult{Args: args, Stdout: out.String(), Stderr: errb.String(), Err: err}
}

// KubectlResult is what one kubectl run printed and how it ended.
type KubectlResult struct {
	Args           []string
	Stdout, Stderr string
	Err            error
}

func (r KubectlResult) String() string {
	return fmt.Sprintf("kubectl %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(r.Args, " "), r.Err, r.Stdout, r.Stderr)
}

// ExitCode is kubectl's exit status, -1 when it did not exit by itself.
func (r KubectlResult) ExitCode() int {
	var ee *exec.ExitError
	if errors.As(r.Err, &ee) {
		return ee.ExitCode()
	}
	if r.Err != nil {
		return -1
	}
	return 0
}
