package propagation

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/skep-io/skep/controlplane/api"
	"github.com/skep-io/skep/controlplane/client"
	"github.com/skep-io/skep/controlplane/pki"
)

// serverProcess is a `skep server` on loopback that this package started
// for simulated agents, with its data in a directory of its own.
type serverProcess struct {
	variant   string // the simulated agents' variant: which NATS the server stores in
	cmd       *exec.Cmd
	exited    chan struct{}
	nats      *natsProcess // the external NATS, if any
	dir       string
	removeDir bool
	admin     client.Config
	joinToken string

	mu     sync.Mutex
	tokens []string // agents' credentials, by agent number, joined so far
}

// startServer starts `skep server` for the simulated agents of one NATS
// kind: NATSEmbedded (the server's own, as by default) or NATSExternal (a
// nats-server process it reaches with --nats-url).
func startServer(ctx context.Context, cfg Config, kind string) (*serverProcess, error) {
	p := &serverProcess{variant: simVariant(kind), exited: make(chan struct{})}
	if cfg.WorkDir != "" {
		p.dir = filepath.Join(cfg.WorkDir, kind)
		if err := os.MkdirAll(p.dir, 0o700); err != nil {
			return nil, fmt.Errorf("create server directory: %w", err)
		}
	} else {
		dir, err := os.MkdirTemp("", "skep-bench-server-")
		if err != nil {
			return nil, fmt.Errorf("create server directory: %w", err)
		}
		p.dir, p.removeDir = dir, true
	}
	natsArgs := []string{"--nats-listen", "127.0.0.1:-1"}
	if kind == NATSExternal {
		var err error
		if p.nats, err = startNATS(ctx, cfg.NATSServer, filepath.Join(p.dir, "nats")); err != nil {
			p.removeFiles()
			return nil, err
		}
		natsArgs = []string{"--nats-url", p.nats.url, "--nats-creds", p.nats.creds}
	}
	port, err := freePort()
	if err != nil {
		return nil, errors.Join(err, p.stopNATS(), p.removeFiles())
	}
	home := filepath.Join(p.dir, "home") // the server writes ~/.skep/config when missing
	data := filepath.Join(p.dir, "data")
	logPath := filepath.Join(p.dir, "server.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("create server log: %w", err), p.stopNATS(), p.removeFiles())
	}
	defer logFile.Close()
	// Thousands of simulated nodes join from loopback: the join rate
	// limit is raised so that it does not set the pace.
	p.cmd = exec.Command(cfg.Binary, append([]string{"server", "--data-dir", data,
		"--listen", fmt.Sprintf("127.0.0.1:%d", port), "--node-join-rate", "1000"}, natsArgs...)...)
	p.cmd.Env = append(os.Environ(), "HOME="+home)
	p.cmd.Stdout, p.cmd.Stderr = logFile, logFile
	// The server goes with this process, even if it dies without cleaning.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := p.cmd.Start(); err != nil {
		return nil, errors.Join(fmt.Errorf("start skep server: %w", err), p.stopNATS(), p.removeFiles())
	}
	go func() { _ = p.cmd.Wait(); close(p.exited) }()

	deadline := time.Now().Add(60 * time.Second)
	for {
		if err := p.ready(ctx, data, port); err == nil {
			return p, nil
		} else if time.Now().After(deadline) || ctx.Err() != nil {
			stopErr := p.stop()
			return nil, errors.Join(fmt.Errorf("skep server did not answer within 60s: %w\n%s", err, tail(logPath)), stopErr)
		}
		select {
		case <-p.exited:
			err := fmt.Errorf("skep server exited at start:\n%s", tail(logPath))
			return nil, errors.Join(err, p.stopNATS(), p.removeFiles())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// ready loads the admin config and the join token the server writes, and
// lists namespaces with them.
func (p *serverProcess) ready(ctx context.Context, data string, port int) error {
	admin, err := client.LoadConfig(filepath.Join(data, "admin.conf"))
	if err != nil {
		return err
	}
	if !strings.HasSuffix(admin.Server, fmt.Sprintf(":%d", port)) {
		return fmt.Errorf("admin.conf names %s", admin.Server)
	}
	token, err := os.ReadFile(filepath.Join(data, "node-token"))
	if err != nil {
		return err
	}
	c, err := client.New(admin)
	if err != nil {
		return err
	}
	lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, _, err := c.List(lctx, api.MustLookup("namespaces"), "", client.ListOptions{}); err != nil {
		return err
	}
	p.admin, p.joinToken = admin, strings.TrimSpace(string(token))
	return nil
}

// agentTokens returns credentials for agents 0..n-1, joining the ones not
// joined yet as nodes sim-00000... (16 joins at a time).
func (p *serverProcess) agentTokens(ctx context.Context, n int) ([]string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.tokens) >= n {
		return p.tokens[:n], nil
	}
	joiner, err := client.New(client.Config{Server: p.admin.Server, CAPEM: p.admin.CAPEM, Token: p.joinToken})
	if err != nil {
		return nil, err
	}
	from := len(p.tokens)
	tokens := make([]string, n)
	copy(tokens, p.tokens)
	work := make(chan int)
	errs := make(chan error, 16)
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for i := range work {
				token, err := joinSim(ctx, joiner, fmt.Sprintf("sim-%05d", i))
				if err != nil {
					select {
					case errs <- err:
					default:
					}
					continue
				}
				tokens[i] = token
			}
		})
	}
	for i := from; i < n; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
	select {
	case err := <-errs:
		return nil, err
	default:
	}
	p.tokens = tokens
	return tokens, nil
}

// joinSim joins as a simulated node with a password of its own, waiting
// as the server says when it answers 429 (joins are rate-limited).
func joinSim(ctx context.Context, joiner *client.HTTP, node string) (string, error) {
	password, err := pki.RandomToken()
	if err != nil {
		return "", err
	}
	for {
		var cred client.Credential
		err := joiner.Do(ctx, http.MethodPost, client.JoinPath, client.JoinRequest{NodeName: node, Password: password}, &cred)
		if err == nil {
			return cred.Token, nil
		}
		wait, ok := apierrors.SuggestsClientDelay(err)
		if !apierrors.IsTooManyRequests(err) || !ok {
			return "", fmt.Errorf("join as %s: %w", node, err)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(time.Duration(wait) * time.Second):
		}
	}
}

// stop ends the server (SIGTERM, SIGKILL after 15s), then its NATS, and
// removes their files.
func (p *serverProcess) stop() error {
	terminate(p.cmd.Process, p.exited)
	return errors.Join(p.stopNATS(), p.removeFiles())
}

func (p *serverProcess) stopNATS() error {
	if p.nats == nil {
		return nil
	}
	terminate(p.nats.cmd.Process, p.nats.exited)
	p.nats = nil
	return nil
}

// terminate sends SIGTERM to a process this package started and waits
// until exited closes, sending SIGKILL after 15 seconds.
func terminate(proc *os.Process, exited <-chan struct{}) {
	select {
	case <-exited:
		return
	default:
	}
	_ = proc.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(15 * time.Second):
		_ = proc.Kill()
		<-exited
	}
}

// natsProcess is a nats-server with JetStream on loopback.
type natsProcess struct {
	cmd    *exec.Cmd
	exited chan struct{}
	url    string
	creds  string // user:password, as skep server --nats-creds takes it
}

// startNATS runs bin (nats-server from PATH when empty) with JetStream
// storing in dir, its own user and password, and waits until it accepts
// connections.
func startNATS(ctx context.Context, bin, dir string) (*natsProcess, error) {
	if bin == "" {
		bin = "nats-server"
	}
	path, err := exec.LookPath(bin)
	if err != nil {
		return nil, fmt.Errorf("no %s for the external NATS variant (Debian package nats-server): %w", bin, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create NATS directory: %w", err)
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	password := randomHex(12)
	n := &natsProcess{exited: make(chan struct{}), url: fmt.Sprintf("nats://127.0.0.1:%d", port), creds: "skep:" + password}
	logPath := filepath.Join(dir, "nats.log")
	n.cmd = exec.Command(path, "-a", "127.0.0.1", "-p", fmt.Sprint(port), "-js", "-sd", filepath.Join(dir, "js"),
		"--user", "skep", "--pass", password, "-l", logPath)
	n.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := n.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", path, err)
	}
	go func() { _ = n.cmd.Wait(); close(n.exited) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
		if err == nil {
			c.Close()
			return n, nil
		}
		select {
		case <-n.exited:
			return nil, fmt.Errorf("%s exited at start:\n%s", path, tail(logPath))
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			terminate(n.cmd.Process, n.exited)
			return nil, fmt.Errorf("%s did not accept connections within 30s:\n%s", path, tail(logPath))
		}
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func (p *serverProcess) removeFiles() error {
	if !p.removeDir {
		return nil
	}
	if err := os.RemoveAll(p.dir); err != nil {
		return fmt.Errorf("remove server directory: %w", err)
	}
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// tail is the end of a log file, for error messages.
func tail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}
