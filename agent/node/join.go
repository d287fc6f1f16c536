package node

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/skep-io/skep/controlplane/client"
)

// credentials gets and keeps the agent's node credential, as a kubelet
// does its client certificate: it is renewed while the agent runs, well
// before it expires, and when it no longer works (expired while the agent
// was stopped, or revoked with the Node) the agent joins again with the
// join token and its node password.
type credentials struct {
	server, joinToken, caFile, dataDir, node string
	// addresses are declared at each join: the API server signs serving
	// certificates for these only.
	addresses []string
	log       interface {
		Info(string, ...any)
		Warn(string, ...any)
	}
}

func (c *credentials) configPath() string   { return filepath.Join(c.dataDir, "credentials.conf") }
func (c *credentials) passwordPath() string { return filepath.Join(c.dataDir, "node-password") }

// password is the node's password, made at the first start and kept
// (0600) in the data directory: it proves to the server that a later join
// comes from the machine that joined first under this name.
func (c *credentials) password() (string, error) {
	data, err := os.ReadFile(c.passwordPath())
	if err == nil {
		if p := strings.TrimSpace(string(data)); p != "" {
			return p, nil
		}
		return "", permanent(fmt.Errorf("%s is empty: remove it to make a new one, and delete the Node (kubectl delete node %s) so that the server takes it", c.passwordPath(), c.node))
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", permanent(fmt.Errorf("read the node password: %w", err))
	}
	p, err := newPassword()
	if err != nil {
		return "", err
	}
	f, err := os.OpenFile(c.passwordPath(), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", fmt.Errorf("create the node password: %w", err)
	}
	_, werr := f.WriteString(p + "\n")
	if err := errors.Join(werr, f.Sync(), f.Close()); err != nil {
		os.Remove(c.passwordPath())
		return "", fmt.Errorf("write the node password: %w", err)
	}
	return p, nil
}

// newPassword is a node password: 24 random bytes, hex.
func newPassword() (string, error) {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("read random: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// obtain returns a working credential: the stored one renewed, or a new
// one from a join when the stored one is missing, expired or revoked.
func (c *credentials) obtain(ctx context.Context) (client.Config, client.Credential, error) {
	if cfg, err := client.LoadConfig(c.configPath()); err == nil && cfg.Server == c.server && cfg.Token != "" {
		hc, err := client.New(cfg)
		if err != nil {
			return client.Config{}, client.Credential{}, err
		}
		cred, err := c.renew(ctx, hc)
		if err == nil {
			cfg.Token = cred.Token
			return cfg, cred, nil
		}
		if !apierrors.IsUnauthorized(err) {
			return client.Config{}, client.Credential{}, err
		}
		c.log.Info("the stored node credential expired or was revoked; joining again")
	}
	return c.join(ctx)
}

// renew trades hc's credential for a new one and stores it.
func (c *credentials) renew(ctx context.Context, hc *client.HTTP) (client.Credential, error) {
	var cred client.Credential
	if err := hc.Do(ctx, http.MethodPost, client.RenewPath, nil, &cred); err != nil {
		return client.Credential{}, fmt.Errorf("renew the node credential: %w", err)
	}
	cfg, err := client.LoadConfig(c.configPath())
	if err != nil {
		return client.Credential{}, err
	}
	cfg.Token = cred.Token
	return cred, client.WriteConfig(c.configPath(), cfg)
}

// join exchanges the join token and the node password for a credential.
func (c *credentials) join(ctx context.Context) (client.Config, client.Credential, error) {
	if c.joinToken == "" {
		return client.Config{}, client.Credential{}, permanent(errors.New("--token is required to join (the content of the server's <data-dir>/node-token)"))
	}
	password, err := c.password()
	if err != nil {
		return client.Config{}, client.Credential{}, err
	}
	ca, err := fetchCA(ctx, c.server, c.joinToken, c.caFile)
	if err != nil {
		return client.Config{}, client.Credential{}, err
	}
	joiner, err := client.New(client.Config{Server: c.server, CAPEM: ca, Token: c.joinToken})
	if err != nil {
		return client.Config{}, client.Credential{}, err
	}
	var cred client.Credential
	req := client.JoinRequest{NodeName: c.node, Password: password, Addresses: c.addresses}
	if err := joiner.Do(ctx, http.MethodPost, client.JoinPath, req, &cred); err != nil {
		err = fmt.Errorf("join %s as %s: %w", c.server, c.node, err)
		// Another machine holds the name, or the request is wrong:
		// retrying the same join cannot help.
		if apierrors.IsForbidden(err) || apierrors.IsInvalid(err) || apierrors.IsBadRequest(err) {
			return client.Config{}, client.Credential{}, permanent(err)
		}
		return client.Config{}, client.Credential{}, err
	}
	cfg := client.Config{Server: c.server, CAPEM: ca, Token: cred.Token}
	if err := client.WriteConfig(c.configPath(), cfg); err != nil {
		return client.Config{}, client.Credential{}, err
	}
	c.log.Info("joined", "server", c.server, "expires", cred.ExpiresAt)
	return cfg, cred, nil
}

// keep renews the credential hc uses at two thirds of its life, and
// joins again when it stops working (lost, below, says so), switching hc
// to the new one each time, until ctx ends.
func (c *credentials) keep(ctx context.Context, hc *client.HTTP, cred client.Credential, lost <-chan struct{}) {
	for {
		var rejoin bool
		select {
		case <-ctx.Done():
			return
		case <-time.After(renewIn(cred, time.Now())):
		case <-lost:
			rejoin = true
		}
		next, err := c.renew(ctx, hc)
		if err != nil && (rejoin || apierrors.IsUnauthorized(err)) {
			c.log.Warn("the node credential stopped working; joining again", "err", err)
			_, next, err = c.join(ctx)
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			c.log.Warn("renew the node credential; trying again in 10s", "err", err, "expires", cred.ExpiresAt)
			select {
			case <-ctx.Done():
				return
			case <-time.After(10 * time.Second):
			}
			// Try again soon (renewIn of a credential due now is 0).
			cred.ExpiresAt = time.Now()
			continue
		}
		hc.SetToken(next.Token)
		cred = next
		c.log.Info("node credential renewed", "expires", cred.ExpiresAt)
	}
}

// renewIn is how long until a credential is renewed: at two thirds of
// what is left of its life.
func renewIn(cred client.Credential, now time.Time) time.Duration {
	return max(0, cred.ExpiresAt.Sub(now)*2/3)
}

func fetchCA(ctx context.Context, server, joinToken, caFile string) ([]byte, error) {
	if caFile != "" {
		ca, err := os.ReadFile(caFile)
		if err != nil {
			return nil, permanent(fmt.Errorf("--ca: %w", err))
		}
		return ca, nil
	}
	pin := client.JoinTokenCAHash(joinToken)
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
	if got := client.CAHash(ca); got != pin {
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
