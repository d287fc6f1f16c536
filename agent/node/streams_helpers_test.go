package node

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	restclient "k8s.io/client-go/rest"

	"github.com/skep-io/skep/agent/containerlog"
	"github.com/skep-io/skep/agent/runtime"
	"github.com/skep-io/skep/controlplane/api"
	"github.com/skep-io/skep/controlplane/pki"
	"github.com/skep-io/skep/lab/labtest"
	"github.com/skep-io/skep/test/images"
)

// The streaming tests run the agent's endpoint, as the agent serves it, on
// a real runtime (its own containerd, runc and the test images built from
// this repository; they need root), and talk to it with client-go's
// clients as the API server's proxy would, with the API server's client
// certificate from the node CA.

var (
	imagesOnce sync.Once
	imagesDir  string
	imageTars  map[string]string
	imagesErr  error
)

func TestMain(m *testing.M) {
	// The runtime runs its log driver as this executable: run as that,
	// the test binary is the driver.
	containerlog.RunIfDriver()
	// The shims of the tests' containerd daemonize: as a subreaper the
	// test binary reaps them itself (labtest.ReapShims).
	if err := labtest.BecomeSubreaper(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	if imagesDir != "" {
		os.RemoveAll(imagesDir)
	}
	os.Exit(code)
}

// testImages builds the test images once, for the tests that run pods.
func testImages(tb testing.TB) map[string]string {
	tb.Helper()
	imagesOnce.Do(func() {
		imagesDir, imagesErr = os.MkdirTemp("", "skep-node-images-")
		if imagesErr != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		imageTars, imagesErr = images.Build(ctx, imagesDir)
	})
	if imagesErr != nil {
		tb.Fatalf("build test images: %v", imagesErr)
	}
	return imageTars
}

// loopbackNetwork gives a pod nothing but its loopback (which the runtime
// brings up): port forwarding reaches the pod from inside its namespace.
type loopbackNetwork struct{}

func (loopbackNetwork) Setup(context.Context, string, string) (netip.Addr, error) {
	return netip.MustParseAddr("10.244.0.2"), nil
}
func (loopbackNetwork) Teardown(context.Context, string) error { return nil }

// podMap is the endpoint's view of the node's pods.
type podMap struct {
	mu   sync.Mutex
	pods map[string]*corev1.Pod
}

func (m *podMap) Get(ns, name string) (api.Object, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	p, ok := m.pods[ns+"/"+name]
	return p, ok
}

// streamEnv is a running endpoint on a runtime with one pod.
type streamEnv struct {
	rt      *runtime.Runtime
	pod     *corev1.Pod
	url     string             // https://127.0.0.1:port
	cfg     *restclient.Config // the API server's client certificate
	nodeCA  *pki.CA
	dataDir string
}

// startStreamEnv starts a runtime, runs a pod of the toolbox running
// script in container "c", and serves the agent endpoint for it on
// loopback. Everything is stopped and removed when the test ends.
func startStreamEnv(tb testing.TB, script string) *streamEnv {
	tb.Helper()
	tars := testImages(tb)
	var b [4]byte
	rand.Read(b[:])
	cgroupTop := "/skep-node-test-" + hex.EncodeToString(b[:])
	dataDir := tb.TempDir()
	log := slog.New(slog.NewTextHandler(tbWriter{tb}, &slog.HandlerOptions{Level: slog.LevelInfo}))

	ctx, cancel := context.WithCancel(context.Background())
	rt, err := runtime.New(ctx, runtime.Config{
		NodeName: "n1", DataDir: dataDir, CgroupParent: cgroupTop + "/n1", Network: loopbackNetwork{}, Logger: log,
	})
	if err != nil {
		cancel()
		tb.Fatalf("runtime.New: %v", err)
	}
	env := &streamEnv{rt: rt, dataDir: dataDir}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default", UID: types.UID("uid-" + hex.EncodeToString(b[:]))},
		Spec: corev1.PodSpec{
			NodeName: "n1", RestartPolicy: corev1.RestartPolicyAlways, TerminationGracePeriodSeconds: new(int64),
			Containers: []corev1.Container{{
				Name: "c", Image: images.Toolbox, ImagePullPolicy: corev1.PullIfNotPresent,
				Command: []string{"sh", "-c", "trap 'exit 143' TERM; " + script},
			}},
		},
	}
	// Registered first, so it runs last: the pod, the runtime, its
	// containerd and shims and the test's cgroups all go.
	tb.Cleanup(func() {
		kctx, kcancel := context.WithTimeout(context.Background(), time.Minute)
		defer kcancel()
		if err := rt.KillPod(kctx, pod.UID, 0); err != nil {
			tb.Errorf("cleanup: KillPod: %v", err)
		}
		if err := rt.Close(); err != nil {
			tb.Errorf("cleanup: runtime Close: %v", err)
		}
		cancel()
		if !labtest.WaitShimsGone(10 * time.Second) {
			tb.Errorf("cleanup: containerd shims still running")
		}
		removeCgroups(tb, cgroupTop)
	})
	for ref, tar := range tars {
		f, err := os.Open(tar)
		if err != nil {
			tb.Fatal(err)
		}
		_, err = rt.ImportImage(ctx, f)
		f.Close()
		if err != nil {
			tb.Fatalf("ImportImage %s: %v", ref, err)
		}
	}
	deadline := time.Now().Add(time.Minute)
	for {
		st, err := rt.SyncPod(ctx, pod)
		if err != nil {
			tb.Fatalf("SyncPod: %v", err)
		}
		if len(st.ContainerStatuses) == 1 && st.ContainerStatuses[0].State.Running != nil {
			pod.Status = st
			break
		}
		if time.Now().After(deadline) {
			tb.Fatalf("pod not running after a minute: %+v", st)
		}
		time.Sleep(100 * time.Millisecond)
	}
	env.pod = pod

	// The endpoint, with a serving certificate from the node CA as the
	// API server signs it, served as the agent serves it.
	caPEM, caKey, err := pki.NewCA("skep-node-ca-test")
	if err != nil {
		tb.Fatal(err)
	}
	ca, err := pki.ParseCA(caPEM, caKey)
	if err != nil {
		tb.Fatal(err)
	}
	env.nodeCA = ca
	lo := netip.MustParseAddr("127.0.0.1")
	csr, key, err := pki.NewServingRequest("n1", []netip.Addr{lo})
	if err != nil {
		tb.Fatal(err)
	}
	certPEM, err := ca.SignNodeServing(csr, "n1", []netip.Addr{lo}, time.Hour)
	if err != nil {
		tb.Fatal(err)
	}
	tlsCfg, err := endpointTLS(certPEM, ca.CertPEM(), key)
	if err != nil {
		tb.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	ep := &endpoint{node: "n1", pods: &podMap{pods: map[string]*corev1.Pod{"default/web": pod}}, log: log}
	ep.rt.Store(rt)
	srvCtx, srvCancel := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() {
		defer close(served)
		(&Agent{log: log}).serveEndpoint(srvCtx, ln, tlsCfg, ep)
	}()
	tb.Cleanup(func() { srvCancel(); <-served })
	env.url = "https://" + ln.Addr().String()
	env.cfg = env.clientConfig(tb, pki.APIServerClientName)
	return env
}

// clientConfig is a client-go config for the endpoint with a client
// certificate for name from the node CA.
func (env *streamEnv) clientConfig(tb testing.TB, name string) *restclient.Config {
	tb.Helper()
	cert, err := env.nodeCA.ClientCert(name, time.Hour)
	if err != nil {
		tb.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		tb.Fatal(err)
	}
	return &restclient.Config{
		Host: env.url,
		TLSClientConfig: restclient.TLSClientConfig{
			CAData:   env.nodeCA.CertPEM(),
			CertData: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}),
			KeyData:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
		},
	}
}

// tlsConfig is the API server's side of the TLS connection, for plain
// HTTP requests.
func (env *streamEnv) tlsConfig(tb testing.TB, cfg *restclient.Config) *tls.Config {
	tb.Helper()
	c, err := restclient.TLSConfigFor(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// removeCgroups removes the test's cgroup parents from every hierarchy;
// the runtime removed the pods' own.
func removeCgroups(tb testing.TB, top string) {
	hierarchies, _ := filepath.Glob("/sys/fs/cgroup/*")
	hierarchies = append(hierarchies, "/sys/fs/cgroup")
	for _, h := range hierarchies {
		for _, dir := range []string{filepath.Join(h, top, "n1"), filepath.Join(h, top)} {
			if err := os.Remove(dir); err != nil && !os.IsNotExist(err) && !strings.Contains(err.Error(), "not a directory") {
				tb.Errorf("remove cgroup %s: %v", dir, err)
			}
		}
	}
}

type tbWriter struct{ tb testing.TB }

func (w tbWriter) Write(p []byte) (int, error) {
	w.tb.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
