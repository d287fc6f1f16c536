package node

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/skep-io/skep/controlplane/client"
	"github.com/skep-io/skep/controlplane/pki"
)

// credentials returns the agent's client config: its own token from an
// earlier join, or a new one obtained with the join token. The server's CA
// is fetched from /cacerts and trusted only if its hash is the one the join
// token pins (or it equals caFile's).
func credentials(ctx context.Context, server, joinToken, caFile, dataDir, nodeName string) (client.Config, error) {
	path := filepath.Join(dataDir, "credentials.conf")
	if cfg, err := client.LoadConfig(path); err == nil && cfg.Server == server {
		return cfg, nil
	}
	if joinToken == "" {
		return client.Config{}, permanent(errors.New("--token is required to join (the content of the server's <data-dir>/node-token)"))
	}
	ca, err := fetchCA(ctx, server, joinToken, caFile)
	if err != nil {
		return client.Config{}, err
	}
	joiner, err := client.New(client.Config{Server: server, CAPEM: ca, Token: joinToken})
	if err != nil {
		return client.Config{}, err
	}
	var resp struct {
		Token string `json:"token"`
	}
	if err := joiner.Do(ctx, http.MethodPost, "/skep/v1/join", map[string]string{"nodeName": nodeName}, &resp); err != nil {
		return client.Config{}, fmt.Errorf("join %s as %s: %w", server, nodeName, err)
	}
	cfg := client.Config{Server: server, CAPEM: ca, Token: resp.Token}
	if err := client.WriteConfig(path, cfg); err != nil {
		return client.Config{}, err
	}
	return cfg, nil
}

func fetchCA(ctx context.Context, server, joinToken, caFile string) ([]byte, error) {
	if caFile != "" {
		ca, err := os.ReadFile(caFile)
		if err != nil {
			return nil, permanent(fmt.Errorf("--ca: %w", err))
		}
		return ca, nil
	}
	pin := pki.SplitJoinToken(joinToken)
	if pin == "" {
		return nil, permanent(errors.New("the join token pins no CA (it does not start with K10<hash>::); pass --ca"))
	}
	// Nothing is trusted yet: the certificate chain is checked below, by
	// the hash of the CA the server hands out.
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(server, "/")+"/cacerts", nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch the CA from %s: %w", server, err)
	}
	defer resp.Body.Close()
	ca, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("fetch the CA from %s: %w", server, err)
	}
	if got := pki.CAHash(ca); got != pin {
		return nil, permanent(fmt.Errorf("the CA of %s has hash %s, but the join token pins %s: wrong server or wrong token", server, got, pin))
	}
	return ca, nil
}

// permanentError is a failure retrying cannot mend: a wrong token or CA.
type permanentError struct{ error }

func (e permanentError) Unwrap() error { return e.error }

func permanent(err error) error { return permanentError{err} }

// retry runs f until it succeeds, fails permanently, or ctx ends, waiting
// 1 s doubling to 10 s between tries: a node that boots before the control
// plane, or loses it for a while, keeps trying as a kubelet does.
func retry(ctx context.Context, what string, log interface{ Warn(string, ...any) }, f func() error) error {
	wait := time.Second
	for {
		err := f()
		var perm permanentError
		if err == nil || errors.As(err, &perm) {
			return err
		}
		log.Warn(what+" failed; retrying", "err", err, "in", wait)
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w (gave up: %v)", what, err, ctx.Err())
		case <-time.After(wait):
		}
		wait = min(2*wait, 10*time.Second)
	}
}
