package runtime

import (
	"context"
	"fmt"
	"io"

	"k8s.io/apimachinery/pkg/types"
)

// Attach stands in for the runtime's attach (branch agent-logs brings it,
// with this signature); this file goes when that lands.
func (r *Runtime) Attach(ctx context.Context, uid types.UID, container string, stdin io.Reader, stdout, stderr io.WriteCloser, tty bool, resize <-chan TerminalSize) error {
	return fmt.Errorf("attach to container %s of pod %s: not supported by this agent yet", container, uid)
}
