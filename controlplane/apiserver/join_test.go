package apiserver_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"golang.org/x/crypto/bcrypt"

	"github.com/skep-io/skep/controlplane/apiserver"
	"github.com/skep-io/skep/controlplane/apiserver/apiservertest"
	"github.com/skep-io/skep/controlplane/client"
	"github.com/skep-io/skep/controlplane/store/storetest"
)

const (
	passwordOne = "password-of-the-first-machine"
	passwordTwo = "password-of-another-machine!!"
)

func join(t *testing.T, s *apiservertest.Server, req client.JoinRequest) (client.Credential, error) {
	t.Helper()
	var cred client.Credential
	err := httpClient(t, s, s.JoinToken).Do(t.Context(), http.MethodPost, client.JoinPath, req, &cred)
	return cred, err
}

func mustJoin(t *testing.T, s *apiservertest.Server, req client.JoinRequest) client.Credential {
	t.Helper()
	cred, err := join(t, s, req)
	if err != nil || cred.Token == "" {
		t.Fatalf("join as %s: %v", req.NodeName, err)
	}
	return cred
}

// TestJoinTakesNoOtherNode checks the join token alone no longer gets a
// credential for a node that exists: a join for its name must bring the
// password of the machine that joined first.
func TestJoinTakesNoOtherNode(t *testing.T) {
	s := apiservertest.StartServer(t)
	ctx := t.Context()
	admin := httpClient(t, s, s.AdminToken)
	first := mustJoin(t, s, client.JoinRequest{NodeName: "node2", Password: passwordOne})
	node := httpClient(t, s, first.Token)
	if _, err := node.Create(ctx, nodes, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node2"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Create(ctx, pods, podOn("victim", "node2", "app")); err != nil {
		t.Fatal(err)
	}

	// The attack: the join token and node2's name, without its password.
	for _, req := range []client.JoinRequest{
		{NodeName: "node2", Password: passwordTwo},
		{NodeName: "node2", Password: passwordOne[:len(passwordOne)-1] + "?"},
	} {
		cred, err := join(t, s, req)
		if !apierrors.IsForbidden(err) || cred.Token != "" {
			t.Fatalf("join as node2 with another password: %v, token %q; want 403 and no credential", err, cred.Token)
		}
		for _, want := range []string{"node name node2 is taken by another machine", "delete the Node", "kubectl delete node node2"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("the refusal %q does not say %q", err, want)
			}
		}
	}
	if _, err := join(t, s, client.JoinRequest{NodeName: "node2"}); !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "password") {
		t.Errorf("join without a password: %v; want 422 naming the password", err)
	}
	if err := admin.Delete(ctx, pods, "default", "victim", client.DeleteOptions{}); err != nil {
		t.Fatal(err) // still there: nobody else could delete it
	}

	// The machine itself, with its password, joins again (a restart after
	// its credential expired) and gets a working credential.
	again := mustJoin(t, s, client.JoinRequest{NodeName: "node2", Password: passwordOne})
	if again.Token == first.Token {
		t.Fatal("a second join returned the same token")
	}
	if _, err := httpClient(t, s, again.Token).Get(ctx, nodes, "", "node2"); err != nil {
		t.Errorf("the credential of the re-join: %v", err)
	}
	// The bearer scheme is case-insensitive, as kube-apiserver takes it.
	if _, err := httpClient(t, s, "").Get(ctx, nodes, "", "node2"); !apierrors.IsUnauthorized(err) {
		t.Errorf("no token: %v; want 401", err)
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+"/api/v1/nodes/node2", nil)
	req.Header.Set("Authorization", "bearer "+again.Token)
	resp, err := httpsClient(t, s).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("lower-case bearer: %d; want 200", resp.StatusCode)
	}
}

func httpsClient(t *testing.T, s *apiservertest.Server) *http.Client {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(s.CAPEM)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// clock is a settable time for a server.
type clock struct{ t atomic.Pointer[time.Time] }

func newClock() *clock {
	c := &clock{}
	c.set(time.Now())
	return c
}
func (c *clock) now() time.Time          { return *c.t.Load() }
func (c *clock) set(t time.Time)         { c.t.Store(&t) }
func (c *clock) advance(d time.Duration) { c.set(c.now().Add(d)) }

// TestNodeCredentialsExpireAndRenew checks a credential stops working at
// its expiry (cached or not), and that renewing gives a new one that
// works, and a client switched to it, while the old one ends soon after.
func TestNodeCredentialsExpireAndRenew(t *testing.T) {
	s := apiservertest.StartServer(t)
	clk := newClock()
	apiserver.SetClock(s.Server, clk.now)
	ctx := t.Context()
	cred := mustJoin(t, s, client.JoinRequest{NodeName: "node-a", Password: passwordOne})
	if got := cred.ExpiresAt.Sub(clk.now()); got < apiserver.DefaultNodeCredentialTTL-time.Minute || got > apiserver.DefaultNodeCredentialTTL {
		t.Errorf("the credential expires in %s; want %s", got, apiserver.DefaultNodeCredentialTTL)
	}
	node := httpClient(t, s, cred.Token)
	if _, err := node.Create(ctx, nodes, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a"}}); err != nil {
		t.Fatal(err)
	}

	// Renewal: a new token, the client switched to it without a new one.
	clk.advance(16 * time.Hour)
	var renewed client.Credential
	if err := node.Do(ctx, http.MethodPost, client.RenewPath, nil, &renewed); err != nil || renewed.Token == "" || renewed.Token == cred.Token {
		t.Fatalf("renew: %v (token %q)", err, renewed.Token)
	}
	if !renewed.ExpiresAt.After(cred.ExpiresAt) {
		t.Errorf("the renewed credential expires at %s, not after the old one (%s)", renewed.ExpiresAt, cred.ExpiresAt)
	}
	node.SetToken(renewed.Token)
	if _, err := node.Get(ctx, nodes, "", "node-a"); err != nil {
		t.Fatalf("the client switched to the renewed credential: %v", err)
	}
	old := httpClient(t, s, cred.Token)
	if _, err := old.Get(ctx, nodes, "", "node-a"); err != nil {
		t.Errorf("the old credential right after the renewal (requests under way use it): %v", err)
	}
	clk.advance(2 * time.Minute)
	if _, err := old.Get(ctx, nodes, "", "node-a"); !apierrors.IsUnauthorized(err) {
		t.Errorf("the old credential 2 minutes after its renewal: %v; want 401", err)
	}
	if _, err := node.Get(ctx, nodes, "", "node-a"); err != nil {
		t.Errorf("the renewed credential: %v", err)
	}
	if err := httpClient(t, s, s.JoinToken).Do(ctx, http.MethodPost, client.RenewPath, nil, nil); !apierrors.IsForbidden(err) {
		t.Errorf("renew with the join token: %v; want 403", err)
	}

	// Expiry: 401, for a credential just used (cached) too.
	clk.advance(apiserver.DefaultNodeCredentialTTL)
	if _, err := node.Get(ctx, nodes, "", "node-a"); !apierrors.IsUnauthorized(err) {
		t.Errorf("an expired credential: %v; want 401", err)
	}
	if err := node.Do(ctx, http.MethodPost, client.RenewPath, nil, nil); !apierrors.IsUnauthorized(err) {
		t.Errorf("renew with an expired credential: %v; want 401", err)
	}
	// The agent, restarted, joins again with the join token and its password.
	again := mustJoin(t, s, client.JoinRequest{NodeName: "node-a", Password: passwordOne})
	if _, err := httpClient(t, s, again.Token).Get(ctx, nodes, "", "node-a"); err != nil {
		t.Errorf("the credential of the re-join: %v", err)
	}
}

// TestNodeDeletionRevokes checks that deleting a Node ends its
// credentials and frees its name, on another API server of the same
// store too: one that had the credential cached, and one started after
// the deletion.
func TestNodeDeletionRevokes(t *testing.T) {
	st := storetest.Open(t)
	a, b := apiservertest.StartServerOn(t, st, nil), apiservertest.StartServerOn(t, st, nil)
	ctx, cancel := context.WithCancel(t.Context())
	t.Cleanup(cancel)
	go a.Run(ctx)
	go b.Run(ctx)
	cred := mustJoin(t, a, client.JoinRequest{NodeName: "node2", Password: passwordOne})
	onA, onB := httpClient(t, a, cred.Token), httpClient(t, b, cred.Token)
	if _, err := onA.Create(ctx, nodes, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node2"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := onB.Get(ctx, nodes, "", "node2"); err != nil {
		t.Fatalf("the credential on the other server: %v", err)
	}
	if err := httpClient(t, a, a.AdminToken).Delete(ctx, nodes, "", "node2", client.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}

	// The attack: the old credential re-creates the Node, through either
	// server (both had it cached).
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node2"}}
	deadline := time.Now().Add(5 * time.Second)
	for _, c := range []*client.HTTP{onA, onB} {
		for {
			_, err := c.Create(ctx, nodes, node)
			if apierrors.IsUnauthorized(err) {
				break
			}
			if err == nil || time.Now().After(deadline) {
				t.Fatalf("the deleted node's credential after the deletion: %v; want 401 within 5s", err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	c := apiservertest.StartServerOn(t, st, nil)
	if _, err := httpClient(t, c, cred.Token).Get(ctx, nodes, "", "node2"); !apierrors.IsUnauthorized(err) {
		t.Errorf("the deleted node's credential on a server started after the deletion: %v; want 401", err)
	}
	if err := httpClient(t, b, cred.Token).Do(ctx, http.MethodPost, client.RenewPath, nil, nil); !apierrors.IsUnauthorized(err) {
		t.Errorf("renew with the deleted node's credential: %v; want 401", err)
	}
	// The stored password went with the Node: the name is free for a
	// machine with another password, and the old one's credentials stay
	// dead.
	fresh := mustJoin(t, b, client.JoinRequest{NodeName: "node2", Password: passwordTwo})
	if _, err := httpClient(t, a, fresh.Token).Create(ctx, nodes, node); err != nil {
		t.Errorf("the new machine's credential: %v", err)
	}
	if _, err := onA.Get(ctx, nodes, "", "node2"); !apierrors.IsUnauthorized(err) {
		t.Errorf("the deleted node's credential once the name was taken again: %v; want 401", err)
	}
	if _, err := join(t, a, client.JoinRequest{NodeName: "node2", Password: passwordOne}); !apierrors.IsForbidden(err) {
		t.Errorf("the old machine's password after the name was taken again: %v; want 403", err)
	}
}

// TestJoinRateLimit checks a burst of joins gets 429s with Retry-After
// rather than credentials, and costs the server little CPU: less than
// 40 password hashes (unlimited, it would hash 300).
func TestJoinRateLimit(t *testing.T) {
	s := apiservertest.StartServer(t)
	// The clock stands still: the burst is one instant, however slow
	// this machine (or the race detector) makes it.
	clk := newClock()
	apiserver.SetClock(s.Server, clk.now)
	hashCost := cpuTime(t)
	if _, err := bcrypt.GenerateFromPassword([]byte(passwordOne), bcrypt.DefaultCost); err != nil {
		t.Fatal(err)
	}
	hashCost = cpuTime(t) - hashCost
	hc := httpsClient(t, s)
	// The handshakes are made before the clock starts: the burst measures
	// the joins, not TLS.
	warm, _ := http.NewRequest(http.MethodGet, s.URL+"/healthz", nil)
	for range 8 {
		if resp, err := hc.Do(warm); err == nil {
			resp.Body.Close()
		}
	}
	before := cpuTime(t)
	var ok, limited, noRetryAfter atomic.Int32
	var wg sync.WaitGroup
	work := make(chan int)
	for range 8 {
		wg.Go(func() {
			for i := range work {
				body, _ := json.Marshal(client.JoinRequest{NodeName: "burst-" + strconv.Itoa(i), Password: passwordOne})
				req, _ := http.NewRequest(http.MethodPost, s.URL+client.JoinPath, strings.NewReader(string(body)))
				req.Header.Set("Authorization", "Bearer "+s.JoinToken)
				resp, err := hc.Do(req)
				if err != nil {
					t.Error(err)
					continue
				}
				resp.Body.Close()
				switch resp.StatusCode {
				case http.StatusOK:
					ok.Add(1)
				case http.StatusTooManyRequests:
					limited.Add(1)
					if n, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || n < 1 {
						noRetryAfter.Add(1)
					}
				default:
					t.Errorf("join %d: %d", i, resp.StatusCode)
				}
			}
		})
	}
	for i := range 300 {
		work <- i
	}
	close(work)
	wg.Wait()
	cpu := cpuTime(t) - before
	t.Logf("300 joins: %d credentials, %d answered 429, %s of CPU (a password hash: %s)", ok.Load(), limited.Load(), cpu, hashCost)
	if ok.Load() > 20 || limited.Load() < 280 {
		t.Errorf("300 joins in a burst from one address: %d credentials, %d answered 429; want at most 20 and at least 280", ok.Load(), limited.Load())
	}
	if noRetryAfter.Load() > 0 {
		t.Errorf("%d answers 429 without a Retry-After of 1 s or more", noRetryAfter.Load())
	}
	if cpu > 40*hashCost {
		t.Errorf("300 joins took %s of CPU; want less than 40 password hashes (%s)", cpu, 40*hashCost)
	}
}

// cpuTime is the CPU time this process (the server, in the test) used.
func cpuTime(t *testing.T) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestNodeDeletedAtOnceRevokes: a Node deleted right after its agent
// created it, before the credential was used again, still takes the
// credential with it (found in review: the identity was bound to the Node
// only at a later authentication, so it stood for a whole TTL), and on
// another server too.
func TestNodeDeletedAtOnceRevokes(t *testing.T) {
	st := storetest.Open(t)
	a, b := apiservertest.StartServerOn(t, st, nil), apiservertest.StartServerOn(t, st, nil)
	ctx, cancel := context.WithCancel(t.Context())
	t.Cleanup(cancel)
	go a.Run(ctx)
	go b.Run(ctx)
	cred := mustJoin(t, a, client.JoinRequest{NodeName: "node3", Password: passwordOne})
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node3"}}
	if _, err := httpClient(t, a, cred.Token).Create(ctx, nodes, node); err != nil {
		t.Fatal(err)
	}
	if err := httpClient(t, b, b.AdminToken).Delete(ctx, nodes, "", "node3", client.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, s := range []*apiservertest.Server{a, b} {
		if _, err := httpClient(t, s, cred.Token).Create(ctx, nodes, node); !apierrors.IsUnauthorized(err) {
			t.Fatalf("the credential of a Node deleted at once: %v; want 401", err)
		}
	}
}

// TestRenewOnce: a credential is exchanged for one successor, not many
// (found in review: a stolen credential minted 20 of 24 h in its grace
// minute).
func TestRenewOnce(t *testing.T) {
	s := apiservertest.StartServer(t)
	cred := mustJoin(t, s, client.JoinRequest{NodeName: "node4", Password: passwordOne})
	c := httpClient(t, s, cred.Token)
	var next client.Credential
	if err := c.Do(t.Context(), http.MethodPost, client.RenewPath, nil, &next); err != nil || next.Token == "" {
		t.Fatalf("first renewal: %v", err)
	}
	if err := c.Do(t.Context(), http.MethodPost, client.RenewPath, nil, nil); !apierrors.IsUnauthorized(err) {
		t.Fatalf("second renewal of the same credential: %v; want 401", err)
	}
	if _, err := c.Get(t.Context(), nodes, "", "node4"); apierrors.IsUnauthorized(err) {
		t.Fatalf("the renewed credential within its grace: %v; want it still accepted", err)
	}
	if err := httpClient(t, s, next.Token).Do(t.Context(), http.MethodPost, client.RenewPath, nil, nil); err != nil {
		t.Fatalf("renewal of the successor: %v", err)
	}
}

// TestAddressRace: two machines joining at once under different names
// with the same address: one gets it, the other a 403 (found in review:
// with a check over a list of identities, both got it in 3 of 20 rounds).
func TestAddressRace(t *testing.T) {
	s := apiservertest.StartServerWith(t, func(cfg *apiserver.Config) { cfg.NodeJoinRate = 1000 })
	for i := range 20 {
		addr := fmt.Sprintf("198.18.9.%d", i+1)
		errs := make(chan error, 2)
		for j := range 2 {
			go func() {
				_, err := join(t, s, client.JoinRequest{NodeName: fmt.Sprintf("race%d-%d", i, j), Password: passwordOne, Addresses: []string{addr}})
				errs <- err
			}()
		}
		e1, e2 := <-errs, <-errs
		if (e1 == nil) == (e2 == nil) {
			t.Fatalf("round %d, two joins claiming %s: %v and %v; want exactly one to get it", i, addr, e1, e2)
		}
		for _, err := range []error{e1, e2} {
			if err != nil && !apierrors.IsForbidden(err) {
				t.Fatalf("round %d: the loser got %v; want 403", i, err)
			}
		}
	}
}
