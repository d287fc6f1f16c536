package node

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skep-io/skep/controlplane/apiserver/apiservertest"
	"github.com/skep-io/skep/controlplane/client"
)

func testCredentials(t *testing.T, s *apiservertest.Server, node string) *credentials {
	t.Helper()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, s.CAPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return &credentials{server: s.URL, joinToken: s.JoinToken, caFile: ca, dataDir: t.TempDir(), node: node,
		addresses: []string{"10.0.0.1"}, log: slog.New(slog.DiscardHandler)}
}

// TestCredentialLifecycle checks the agent's side of its node identity:
// a password kept 0600 in the data directory, the stored credential
// renewed at a restart, a new one from a join when the stored one no
// longer works, and the running client switched to a renewed one.
func TestCredentialLifecycle(t *testing.T) {
	s := apiservertest.StartServer(t)
	ctx := t.Context()
	c := testCredentials(t, s, "node-a")
	cfg, first, err := c.obtain(ctx)
	if err != nil {
		t.Fatalf("first join: %v", err)
	}
	fi, err := os.Stat(c.passwordPath())
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("the node password file: %v, mode %v; want 0600", err, fi.Mode())
	}
	hc, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := hc.Create(ctx, nodesR, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a"}}); err != nil {
		t.Fatal(err)
	}

	// A restart renews the stored credential.
	cfg2, second, err := c.obtain(ctx)
	if err != nil || second.Token == first.Token || cfg2.Token != second.Token {
		t.Fatalf("restart: %v (token %q, first %q)", err, second.Token, first.Token)
	}

	// The running agent renews (its credential due now) and its client
	// switches to the new credential.
	hc.SetToken(second.Token)
	kctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.keep(kctx, hc, client.Credential{Token: second.Token, ExpiresAt: time.Now().Add(300 * time.Millisecond)}, nil)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for hc.Token() == second.Token && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	<-done
	if hc.Token() == second.Token {
		t.Fatal("the agent's client still carries its old credential 10s after it was due for renewal")
	}
	if _, err := hc.Get(ctx, nodesR, "", "node-a"); err != nil {
		t.Errorf("the renewed credential the client switched to: %v", err)
	}
	if stored, err := client.LoadConfig(c.configPath()); err != nil || stored.Token != hc.Token() {
		t.Errorf("the stored credential is not the renewed one: %v", err)
	}

	// A credential that no longer works (here: not one the server knows)
	// makes a restart join again, with the same password.
	stored, _ := client.LoadConfig(c.configPath())
	stored.Token = "revoked"
	if err := client.WriteConfig(c.configPath(), stored); err != nil {
		t.Fatal(err)
	}
	cfg3, _, err := c.obtain(ctx)
	if err != nil {
		t.Fatalf("restart with a revoked credential: %v", err)
	}
	hc3, _ := client.New(cfg3)
	if _, err := hc3.Get(ctx, nodesR, "", "node-a"); err != nil {
		t.Errorf("the credential of the re-join: %v", err)
	}

	// Another machine (another data directory, so another password) may
	// not take the name: a permanent error that says what to do.
	other := testCredentials(t, s, "node-a")
	other.addresses = []string{"10.0.0.9"}
	_, _, err = other.obtain(ctx)
	var perm permanentError
	if err == nil || !errors.As(err, &perm) || !strings.Contains(err.Error(), "taken by another machine") {
		t.Errorf("another machine joins as node-a: %v; want a permanent error saying the name is taken", err)
	}
}
