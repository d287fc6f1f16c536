package apiserver_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	restclient "k8s.io/client-go/rest"
	clientforward "k8s.io/client-go/tools/portforward"
	clientcommand "k8s.io/client-go/tools/remotecommand"
	"k8s.io/client-go/transport/spdy"
	utilexec "k8s.io/client-go/util/exec"
	"k8s.io/cri-streaming/pkg/streaming/portforward"
	"k8s.io/cri-streaming/pkg/streaming/remotecommand"
	"k8s.io/streaming/pkg/httpstream"
	kexec "k8s.io/utils/exec"

	"github.com/skep-io/skep/controlplane/apiserver/apiservertest"
)

// TestPodStreams runs pods/exec, pods/attach and pods/portforward
// through the API server to a stand-in agent that serves them as a
// kubelet does (the kubelet's streaming server, k8s.io/cri-streaming),
// with client-go's clients as kubectl uses them: WebSocket v5, which the
// API server translates to the SPDY the agent speaks, and SPDY itself;
// port-forward over SPDY and over SPDY tunnelled in a WebSocket. What the
// stand-in runs is a fake; the protocols on both hops are real.
func TestPodStreams(t *testing.T) {
	s := apiservertest.StartServer(t)
	ctx := t.Context()
	admin := httpClient(t, s, s.AdminToken)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	node := joinNode(t, s, "node-a", "127.0.0.1", int32(ln.Addr().(*net.TCPAddr).Port))
	agent := &fakeKubelet{}
	startStandInAgent(t, node, ln, agent.handler())
	if _, err := admin.Create(ctx, pods, podOn("one", "node-a", "app")); err != nil {
		t.Fatal(err)
	}
	cfg := &restclient.Config{Host: s.URL, BearerToken: s.AdminToken, TLSClientConfig: restclient.TLSClientConfig{CAData: s.CAPEM}}
	podURL := s.URL + "/api/v1/namespaces/default/pods/one/"

	executors := map[string]func(u string) (clientcommand.Executor, error){
		"websocket v5": func(u string) (clientcommand.Executor, error) {
			return clientcommand.NewWebSocketExecutor(cfg, "GET", u)
		},
		"spdy": func(u string) (clientcommand.Executor, error) {
			pu, _ := url.Parse(u)
			return clientcommand.NewSPDYExecutor(cfg, "POST", pu)
		},
	}
	for proto, newExec := range executors {
		t.Run("exec over "+proto, func(t *testing.T) {
			// stdin comes back on stdout, byte for byte: 8 MiB of it.
			in := bytes.Repeat([]byte("0123456789abcdef"), 512<<10)
			var out, errOut bytes.Buffer
			exec, err := newExec(podURL + "exec?command=cat&stdin=true&stdout=true&stderr=true")
			if err != nil {
				t.Fatal(err)
			}
			if err := exec.StreamWithContext(ctx, clientcommand.StreamOptions{Stdin: bytes.NewReader(in), Stdout: &out, Stderr: &errOut}); err != nil {
				t.Fatalf("exec cat: %v", err)
			}
			if sha256.Sum256(out.Bytes()) != sha256.Sum256(in) {
				t.Errorf("exec cat: %d bytes came back of %d, or not the same ones", out.Len(), len(in))
			}
			if errOut.String() != "cat: done\n" {
				t.Errorf("exec cat: stderr %q, want the command's", errOut.String())
			}
		})
		t.Run("exit code over "+proto, func(t *testing.T) {
			exec, err := newExec(podURL + "exec?command=exit&command=3&stdout=true&stderr=true")
			if err != nil {
				t.Fatal(err)
			}
			err = exec.StreamWithContext(ctx, clientcommand.StreamOptions{Stdout: io.Discard, Stderr: io.Discard})
			var exit utilexec.CodeExitError
			if !errors.As(err, &exit) || exit.Code != 3 {
				t.Errorf("exec exit 3: %v (%T), want exit code 3", err, err)
			}
		})
		t.Run("tty over "+proto, func(t *testing.T) {
			exec, err := newExec(podURL + "exec?command=size&stdin=true&stdout=true&tty=true")
			if err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			sizes := &fixedSizes{sizes: []clientcommand.TerminalSize{{Width: 120, Height: 40}}}
			err = exec.StreamWithContext(ctx, clientcommand.StreamOptions{Stdin: strings.NewReader(""), Stdout: &out, Tty: true, TerminalSizeQueue: sizes})
			if err != nil || out.String() != "tty 120x40\n" {
				t.Errorf("exec with a tty of 120x40: %q, %v", out.String(), err)
			}
		})
		t.Run("attach over "+proto, func(t *testing.T) {
			exec, err := newExec(podURL + "attach?container=app&stdin=true&stdout=true")
			if err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			if err := exec.StreamWithContext(ctx, clientcommand.StreamOptions{Stdin: strings.NewReader("hello\n"), Stdout: &out}); err != nil {
				t.Fatalf("attach: %v", err)
			}
			if out.String() != "attached to app: hello\n" {
				t.Errorf("attach: %q", out.String())
			}
		})
	}
	if got := agent.lastPath(); got != "/attach/default/one/app" {
		t.Errorf("the agent was asked for %s; want the kubelet's /attach/NS/POD/CONTAINER", got)
	}

	dialers := map[string]func() (httpstream.Dialer, error){
		"spdy": func() (httpstream.Dialer, error) {
			rt, upgrader, err := spdy.RoundTripperFor(cfg)
			if err != nil {
				return nil, err
			}
			u, _ := url.Parse(podURL + "portforward")
			return spdy.NewDialerForStreaming(upgrader, &http.Client{Transport: rt}, "POST", u), nil
		},
		"spdy over websocket": func() (httpstream.Dialer, error) {
			u, _ := url.Parse(podURL + "portforward")
			return clientforward.NewSPDYOverWebsocketDialerForStreaming(u, cfg)
		},
	}
	for proto, newDialer := range dialers {
		t.Run("port-forward over "+proto, func(t *testing.T) {
			dialer, err := newDialer()
			if err != nil {
				t.Fatal(err)
			}
			fctx, stop := context.WithCancel(ctx)
			defer stop()
			ready := make(chan struct{})
			fw, err := clientforward.NewOnAddressesForStreamingWithContext(fctx, dialer, []string{"127.0.0.1"}, []string{"0:8080", "0:9090"}, ready, io.Discard, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- fw.ForwardPorts() }()
			select {
			case <-ready:
			case err := <-done:
				t.Fatalf("port-forward: %v", err)
			case <-time.After(20 * time.Second):
				t.Fatal("port-forward: not ready in 20s")
			}
			ports, err := fw.GetPorts()
			if err != nil {
				t.Fatal(err)
			}
			// Several connections at once to each of two ports.
			var wg sync.WaitGroup
			for _, p := range ports {
				for i := range 4 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						msg := fmt.Sprintf("connection %d to %d", i, p.Remote)
						got, err := roundTrip(fmt.Sprintf("127.0.0.1:%d", p.Local), msg)
						if want := fmt.Sprintf("pod port %d: %s", p.Remote, msg); err != nil || got != want {
							t.Errorf("through local port %d: %q, %v; want %q", p.Local, got, err, want)
						}
					}()
				}
			}
			wg.Wait()
			stop()
			<-done
		})
	}
}

// roundTrip sends msg on a new connection, closes its writing half and
// reads the answer to the end.
func roundTrip(addr, msg string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(c, msg); err != nil {
		return "", err
	}
	c.(*net.TCPConn).CloseWrite()
	b, err := io.ReadAll(c)
	return string(b), err
}

type fixedSizes struct {
	mu    sync.Mutex
	sizes []clientcommand.TerminalSize
}

func (f *fixedSizes) Next() *clientcommand.TerminalSize {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.sizes) == 0 {
		return nil
	}
	s := f.sizes[0]
	f.sizes = f.sizes[1:]
	return &s
}

// fakeKubelet serves the kubelet's streaming paths with the kubelet's
// own streaming server, running fakes behind it.
type fakeKubelet struct {
	mu   sync.Mutex
	last string
}

func (k *fakeKubelet) lastPath() string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.last
}

func (k *fakeKubelet) handler() http.Handler {
	const idle, create = time.Minute, 10 * time.Second
	mux := http.NewServeMux()
	mux.HandleFunc("/exec/{ns}/{pod}/{container}", func(w http.ResponseWriter, r *http.Request) {
		opts, err := remotecommand.NewOptions(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		remotecommand.ServeExec(w, r, k, r.PathValue("pod"), r.URL.Query().Get("podUID"), r.PathValue("container"), r.URL.Query()["command"], opts, idle, create, remotecommand.SupportedStreamingProtocols)
	})
	mux.HandleFunc("/attach/{ns}/{pod}/{container}", func(w http.ResponseWriter, r *http.Request) {
		opts, err := remotecommand.NewOptions(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		remotecommand.ServeAttach(w, r, k, r.PathValue("pod"), r.URL.Query().Get("podUID"), r.PathValue("container"), opts, idle, create, remotecommand.SupportedStreamingProtocols)
	})
	mux.HandleFunc("/portForward/{ns}/{pod}", func(w http.ResponseWriter, r *http.Request) {
		opts, err := portforward.NewV4Options(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		portforward.ServePortForward(w, r, k, r.PathValue("pod"), r.URL.Query().Get("podUID"), opts, idle, create, portforward.SupportedProtocols)
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(r.TLS.PeerCertificates) == 0 || r.URL.Query().Get("podUID") == "" {
			http.Error(w, "the API server's certificate and the pod's UID are required", http.StatusUnauthorized)
			return
		}
		k.mu.Lock()
		k.last = r.URL.Path
		k.mu.Unlock()
		mux.ServeHTTP(w, r)
	})
}

// ExecInContainer runs three fake commands: cat, exit N and size.
func (k *fakeKubelet) ExecInContainer(_ context.Context, _, _, _ string, cmd []string, in io.Reader, out, errOut io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize, _ time.Duration) error {
	switch {
	case len(cmd) == 1 && cmd[0] == "cat":
		if _, err := io.Copy(out, in); err != nil {
			return err
		}
		_, err := io.WriteString(errOut, "cat: done\n")
		return err
	case len(cmd) == 2 && cmd[0] == "exit":
		return kexec.CodeExitError{Err: fmt.Errorf("exit %s", cmd[1]), Code: int(cmd[1][0] - '0')}
	case len(cmd) == 1 && cmd[0] == "size" && tty:
		select {
		case s := <-resize:
			_, err := fmt.Fprintf(out, "tty %dx%d\n", s.Width, s.Height)
			return err
		case <-time.After(10 * time.Second):
			return errors.New("no terminal size came")
		}
	}
	return fmt.Errorf("no such command: %q", cmd)
}

// AttachContainer echoes one line of stdin.
func (k *fakeKubelet) AttachContainer(_ context.Context, _, _, container string, in io.Reader, out, _ io.WriteCloser, _ bool, _ <-chan remotecommand.TerminalSize) error {
	line, err := io.ReadAll(in)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(out, "attached to %s: %s", container, line)
	return err
}

// PortForward answers each connection with the port and what it was sent.
func (k *fakeKubelet) PortForward(_ context.Context, _, _ string, port int32, stream io.ReadWriteCloser) error {
	defer stream.Close()
	b, err := io.ReadAll(stream)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(stream, "pod port %d: %s", port, b)
	return err
}

// TestAgentLogRefusal: an agent's refusal of a log request (a Status,
// as the agent writes it) reaches the client as that Status, its code and
// message, not as JSON quoted inside another message.
func TestAgentLogRefusal(t *testing.T) {
	s := apiservertest.StartServer(t)
	admin := httpClient(t, s, s.AdminToken)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	node := joinNode(t, s, "node-a", "127.0.0.1", int32(ln.Addr().(*net.TCPAddr).Port))
	const refusal = `previous terminated container "app" in pod "one" not found`
	startStandInAgent(t, node, ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprintf(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","message":%q,"reason":"BadRequest","code":400}`, refusal)
	}))
	if _, err := admin.Create(t.Context(), pods, podOn("one", "node-a", "app")); err != nil {
		t.Fatal(err)
	}
	_, err = admin.Logs(t.Context(), "default", "one", &corev1.PodLogOptions{Previous: true})
	var se apierrors.APIStatus
	if !errors.As(err, &se) || se.Status().Code != 400 || se.Status().Message != refusal {
		t.Errorf("logs --previous refused by the agent: %v; want 400 %q", err, refusal)
	}
}
