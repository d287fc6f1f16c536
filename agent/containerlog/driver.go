package containerlog

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/containerd/containerd/runtime/v2/logging"
)

// DriverName is the file name the log driver is run under: the agent links
// it to its own binary, and RunIfDriver, first thing in main, recognizes
// it. containerd passes a logging binary the query of its binary:// URI as
// arguments in map order, which is random, so the driver is chosen by its
// name and reads its arguments as key-value pairs in any order.
const DriverName = "skep-container-log"

// Arguments of the driver.
const (
	// ArgLog is the log file the records are appended to. Required.
	ArgLog = "log"
	// ArgStdout and ArgStderr are FIFOs to read instead of the pipes a
	// shim hands a logging binary (FIFO mode, for a container with a
	// stdin but no terminal: containerd's shim gives a binary:// logged
	// process no stdin, so such a container gets FIFOs for all three
	// streams, and the agent starts the driver on them).
	ArgStdout = "stdout"
	ArgStderr = "stderr"
)

// stderrGrace is how long the driver still reads stderr once stdout ended.
// With a terminal the shim leaves the stderr pipe it made open, unused, so
// its end never comes; without one both end together when the shim closes
// them.
const stderrGrace = time.Second

// RunIfDriver runs the log driver and exits when the process was started
// under DriverName; otherwise it returns at once.
func RunIfDriver() {
	if filepath.Base(os.Args[0]) != DriverName {
		return
	}
	args := map[string]string{}
	for i := 1; i+1 < len(os.Args); i += 2 {
		args[os.Args[i]] = os.Args[i+1]
	}
	if args[ArgLog] == "" {
		fmt.Fprintf(os.Stderr, "%s: argument %q (the log file) is required\n", DriverName, ArgLog)
		os.Exit(2)
	}
	if args[ArgStdout] != "" {
		if err := runFIFOs(args[ArgLog], args[ArgStdout], args[ArgStderr]); err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", DriverName, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	// A logging binary of the shim: stdout and stderr on fds 3 and 4, the
	// readiness pipe on fd 5; SIGTERM when the shim closes the process's
	// IO, after it closed the pipes, so the copy ends by itself.
	logging.Run(func(_ context.Context, cfg *logging.Config, ready func() error) error {
		f, err := openLog(args[ArgLog])
		if err != nil {
			return err
		}
		defer f.Close()
		if err := ready(); err != nil {
			return fmt.Errorf("signal ready: %w", err)
		}
		return copyStreams(NewWriter(f), cfg.Stdout, cfg.Stderr)
	})
}

func openLog(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("open log: %w", err)
	}
	return f, nil
}

// runFIFOs copies the stdout and stderr FIFOs to the log until the shim
// closes them. Opening a FIFO for reading waits for its writer, the shim.
func runFIFOs(logPath, stdoutPath, stderrPath string) error {
	f, err := openLog(logPath)
	if err != nil {
		return err
	}
	defer f.Close()
	w := NewWriter(f)
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, p := range []struct{ stream, path string }{{Stdout, stdoutPath}, {Stderr, stderrPath}} {
		if p.path == "" {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			src, err := os.OpenFile(p.path, os.O_RDONLY, 0)
			if err != nil {
				errs[i] = fmt.Errorf("open %s: %w", p.stream, err)
				return
			}
			defer src.Close()
			errs[i] = w.Copy(p.stream, src)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// copyStreams copies stdout and stderr to w until stdout ends, and stderr
// for at most stderrGrace longer.
func copyStreams(w *Writer, stdout, stderr io.Reader) error {
	stderrDone := make(chan error, 1)
	go func() { stderrDone <- w.Copy(Stderr, stderr) }()
	err := w.Copy(Stdout, stdout)
	select {
	case serr := <-stderrDone:
		return errors.Join(err, serr)
	case <-time.After(stderrGrace):
		return err
	}
}
