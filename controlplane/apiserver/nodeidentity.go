package apiserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"

	"golang.org/x/crypto/bcrypt"

	"github.com/skep-io/skep/controlplane/client"
	"github.com/skep-io/skep/controlplane/pki"
	"github.com/skep-io/skep/controlplane/store"
)

// A node's identity is kept as k3s keeps it: the agent holds a random
// password in its data directory and sends it with every join; the first
// join for a name stores its hash (with the addresses the node declares),
// and a later join for that name must bring the same password. Both live
// in the store, so every API server of an HA set agrees.
//
// A credential names the identity it was issued under (its random ID).
// The identity is bound to the Node's UID once the Node exists, and dies
// with that Node: a credential whose identity is gone, replaced, or bound
// to a Node that no longer exists is refused, on every API server,
// whether or not it saw the deletion. Credentials also expire (the
// server's --node-credential-ttl); the agent renews its own before then.

const (
	nodeTokens    = "nodetokens"    // hash of a token → tokenRecord
	nodePasswords = "nodepasswords" // node name → identityRecord
	nodeAddresses = "nodeaddresses" // address → addressClaim
)

// DefaultNodeCredentialTTL is how long a node credential lives.
const DefaultNodeCredentialTTL = 24 * time.Hour

// renewGrace is how long a credential keeps working once it has been
// renewed, for the requests the agent sent before it switched.
const renewGrace = time.Minute

// identityRecord is what the store keeps of a node's identity.
type identityRecord struct {
	Hash []byte `json:"hash"` // bcrypt of the node password
	// ID is made at each new identity for the name; credentials carry it,
	// so that a new identity voids the old one's credentials.
	ID        string    `json:"id"`
	Addresses []string  `json:"addresses,omitempty"`
	NodeUID   types.UID `json:"nodeUID,omitempty"`
	Created   time.Time `json:"created"`
}

// tokenRecord is what the store keeps of one node credential.
type tokenRecord struct {
	Node     string    `json:"node"`
	Identity string    `json:"identity"`
	Expires  time.Time `json:"expires"`
	// Renewed is set once the credential was exchanged for a new one: it
	// works on for renewGrace, but is never exchanged again, so one
	// credential (a stolen one too) yields one successor, not many.
	Renewed bool `json:"renewed,omitempty"`
}

var (
	errNameTaken    = errors.New("name taken")
	errAddressTaken = errors.New("address taken")
)

func (a *authenticator) loadIdentity(ctx context.Context, node string) (identityRecord, uint64, error) {
	e, err := a.store.Get(ctx, store.Key{Resource: nodePasswords, Name: node})
	if err != nil {
		return identityRecord{}, 0, err
	}
	var rec identityRecord
	if err := json.Unmarshal(e.Value, &rec); err != nil {
		return identityRecord{}, 0, fmt.Errorf("read the identity of node %s: %w", node, err)
	}
	return rec, e.Revision, nil
}

// nodeCreated binds the node's identity to the Node just created, at
// once: from then on deleting that Node revokes the identity's credentials
// (an identity bound only at a later authentication could outlive a Node
// deleted in between). A failure leaves the binding to live.
func (a *authenticator) nodeCreated(ctx context.Context, node string) {
	rec, rev, err := a.loadIdentity(ctx, node)
	if err != nil || rec.NodeUID != "" {
		return
	}
	if _, err := a.live(ctx, node, rec, rev); err != nil {
		a.log.Warn("bind the node's identity to its Node", "node", node, "err", err)
	}
}

// nodeDeleted drops the identity of a deleted Node that was never bound
// to it (a bound one is dead already: its Node's UID is gone). Its
// credentials stop working and its name is free.
func (a *authenticator) nodeDeleted(ctx context.Context, node string) {
	a.forgetNode(node)
	rec, rev, err := a.loadIdentity(ctx, node)
	if err != nil || rec.NodeUID != "" {
		return
	}
	if err := a.store.Delete(ctx, store.Key{Resource: nodePasswords, Name: node}, rev); err != nil && !errors.Is(err, store.ErrNotFound) && !errors.Is(err, store.ErrConflict) {
		a.log.Warn("drop the identity of a deleted node", "node", node, "err", err)
	}
}

// live says whether a stored identity still stands: bound to a Node that
// exists with the same UID, or not bound yet and younger than a
// credential's life (a node that joined and never registered leaves its
// name free again after that). An identity found unbound while its Node
// exists is bound to it here.
func (a *authenticator) live(ctx context.Context, node string, rec identityRecord, rev uint64) (bool, error) {
	n, err := a.getNode(ctx, node)
	if apierrors.IsNotFound(err) {
		n, err = nil, nil
	}
	if err != nil {
		return false, err
	}
	switch {
	case rec.NodeUID != "":
		return n != nil && n.UID == rec.NodeUID, nil
	case n == nil:
		return a.now().Sub(rec.Created) < a.ttl, nil
	}
	rec.NodeUID = n.UID
	data, _ := json.Marshal(rec)
	// Another server may bind it at the same time, to the same UID.
	if _, err := a.store.Update(ctx, store.Key{Resource: nodePasswords, Name: node}, data, rev); err != nil && !errors.Is(err, store.ErrConflict) {
		return false, err
	}
	return true, nil
}

// join checks a node's password against the identity stored for its
// name, or stores a new identity when there is none (or the old one's
// Node was deleted), and issues a credential under it.
func (a *authenticator) join(ctx context.Context, req client.JoinRequest) (client.Credential, error) {
	key := store.Key{Resource: nodePasswords, Name: req.NodeName}
	for range 5 {
		rec, rev, err := a.loadIdentity(ctx, req.NodeName)
		exists := err == nil
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return client.Credential{}, err
		}
		live := false
		if exists {
			if live, err = a.live(ctx, req.NodeName, rec, rev); err != nil {
				return client.Credential{}, err
			}
		}
		if live {
			if bcrypt.CompareHashAndPassword(rec.Hash, []byte(req.Password)) != nil {
				return client.Credential{}, errNameTaken
			}
			// The bind in live may have moved the revision on.
			if rec, rev, err = a.loadIdentity(ctx, req.NodeName); err != nil {
				return client.Credential{}, err
			}
		} else {
			hash, err := bcrypt.GenerateFromPassword([]byte(req.Password), bcrypt.DefaultCost)
			if err != nil {
				return client.Credential{}, err
			}
			id, err := pki.RandomToken()
			if err != nil {
				return client.Credential{}, err
			}
			rec = identityRecord{Hash: hash, ID: id, Created: a.now()}
		}
		if err := a.claimAddresses(ctx, req.NodeName, req.Addresses); err != nil {
			return client.Credential{}, err
		}
		a.releaseAddresses(ctx, req.NodeName, without(rec.Addresses, req.Addresses))
		rec.Addresses = req.Addresses
		data, _ := json.Marshal(rec)
		if exists {
			_, err = a.store.Update(ctx, key, data, rev)
		} else {
			_, err = a.store.Create(ctx, key, data)
		}
		if errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrExists) || errors.Is(err, store.ErrNotFound) {
			continue // another join or a deletion came between: look again
		}
		if err != nil {
			return client.Credential{}, err
		}
		return a.issue(ctx, req.NodeName, rec.ID)
	}
	return client.Credential{}, apierrors.NewConflict(gr(nodesResource()), req.NodeName, errors.New("the node's identity changed under five joins in a row; try again"))
}

// addressClaim is the store's record that an address is one node's: a
// key per address, so that of two joins claiming one address at once,
// one create wins (a check over a list of identities let both through).
type addressClaim struct {
	Node    string    `json:"node"`
	Claimed time.Time `json:"claimed"`
}

// claimGrace is how long a claim stands before its node's identity is
// written: the claim is made first.
const claimGrace = time.Minute

// claimAddresses makes each address node's, or refuses with
// errAddressTaken naming the node whose live identity holds it. A claim
// whose node has no live identity (its Node was deleted, it never joined
// to the end) is taken over by compare-and-set.
func (a *authenticator) claimAddresses(ctx context.Context, node string, addrs []string) error {
	for _, ad := range addrs {
		if err := a.claimAddress(ctx, node, ad); err != nil {
			return err
		}
	}
	return nil
}

func (a *authenticator) claimAddress(ctx context.Context, node, addr string) error {
	key := store.Key{Resource: nodeAddresses, Name: addr}
	mine, _ := json.Marshal(addressClaim{Node: node, Claimed: a.now()})
	for range 5 {
		_, err := a.store.Create(ctx, key, mine)
		if err == nil {
			return nil
		}
		if !errors.Is(err, store.ErrExists) {
			return err
		}
		e, err := a.store.Get(ctx, key)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		var claim addressClaim
		_ = json.Unmarshal(e.Value, &claim)
		if claim.Node == node {
			return nil
		}
		if held, err := a.holds(ctx, claim, addr); err != nil {
			return err
		} else if held {
			return fmt.Errorf("%w: %s is recorded for node %s", errAddressTaken, addr, claim.Node)
		}
		if _, err := a.store.Update(ctx, key, mine, e.Revision); err == nil {
			return nil
		} else if !errors.Is(err, store.ErrConflict) && !errors.Is(err, store.ErrNotFound) {
			return err
		}
	}
	return apierrors.NewConflict(gr(nodesResource()), node, fmt.Errorf("address %s changed hands five times while claimed; try again", addr))
}

// holds says whether a claim still stands: its node's identity is live
// and lists the address, or the claim is too new for the identity to be
// written yet.
func (a *authenticator) holds(ctx context.Context, claim addressClaim, addr string) (bool, error) {
	rec, rev, err := a.loadIdentity(ctx, claim.Node)
	if errors.Is(err, store.ErrNotFound) {
		return a.now().Sub(claim.Claimed) < claimGrace, nil
	}
	if err != nil {
		return false, err
	}
	if !slices.Contains(rec.Addresses, addr) {
		return a.now().Sub(claim.Claimed) < claimGrace, nil
	}
	return a.live(ctx, claim.Node, rec, rev)
}

// releaseAddresses gives up node's claims on addrs.
func (a *authenticator) releaseAddresses(ctx context.Context, node string, addrs []string) {
	for _, ad := range addrs {
		key := store.Key{Resource: nodeAddresses, Name: ad}
		e, err := a.store.Get(ctx, key)
		if err != nil {
			continue
		}
		var claim addressClaim
		if json.Unmarshal(e.Value, &claim) == nil && claim.Node == node {
			_ = a.store.Delete(ctx, key, e.Revision)
		}
	}
}

// without is the elements of a not in b.
func without(a, b []string) []string {
	var out []string
	for _, x := range a {
		if !slices.Contains(b, x) {
			out = append(out, x)
		}
	}
	return out
}

// issue stores a new credential for node under identity.
func (a *authenticator) issue(ctx context.Context, node, identity string) (client.Credential, error) {
	token, err := pki.RandomToken()
	if err != nil {
		return client.Credential{}, err
	}
	exp := a.now().Add(a.ttl).UTC().Truncate(time.Second)
	data, _ := json.Marshal(tokenRecord{Node: node, Identity: identity, Expires: exp})
	if _, err := a.store.Create(ctx, store.Key{Resource: nodeTokens, Name: hashToken(token)}, data); err != nil {
		return client.Credential{}, err
	}
	return client.Credential{Token: token, ExpiresAt: exp}, nil
}

// renew issues a new credential for the node holding token, and has the
// old one expire after renewGrace, so that a node holds few live ones.
func (a *authenticator) renew(ctx context.Context, node, token string) (client.Credential, error) {
	tr, rev, err := a.loadToken(ctx, hashToken(token))
	if err != nil || tr.Node != node || tr.Renewed {
		return client.Credential{}, errUnauthorized
	}
	// Marked first, by compare-and-set: of two renewals of one credential
	// at once, one wins and the other is refused.
	tr.Renewed = true
	if end := a.now().Add(renewGrace); end.Before(tr.Expires) {
		tr.Expires = end
	}
	data, _ := json.Marshal(tr)
	if _, err := a.store.Update(ctx, store.Key{Resource: nodeTokens, Name: hashToken(token)}, data, rev); err != nil {
		if errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrNotFound) {
			return client.Credential{}, errUnauthorized
		}
		return client.Credential{}, err
	}
	a.mu.Lock()
	delete(a.cache, hashToken(token))
	a.mu.Unlock()
	return a.issue(ctx, node, tr.Identity)
}

func (a *authenticator) loadToken(ctx context.Context, hash string) (tokenRecord, uint64, error) {
	e, err := a.store.Get(ctx, store.Key{Resource: nodeTokens, Name: hash})
	if err != nil {
		return tokenRecord{}, 0, err
	}
	var tr tokenRecord
	// A credential of the format before expiry existed does not parse,
	// and is refused: its agent joins again with its password.
	if err := json.Unmarshal(e.Value, &tr); err != nil || tr.Node == "" {
		return tokenRecord{}, 0, errUnauthorized
	}
	return tr, e.Revision, nil
}

// nodeToken authenticates a node credential: cached for at most
// a.recheck, then checked again against the store.
func (a *authenticator) nodeToken(ctx context.Context, token string) (Identity, error) {
	h := hashToken(token)
	now := a.now()
	a.mu.Lock()
	c, ok := a.cache[h]
	a.mu.Unlock()
	if ok && now.Before(c.expires) && now.Sub(c.checked) < a.recheck {
		return Identity{Node: c.node}, nil
	}
	tr, _, err := a.loadToken(ctx, h)
	if err != nil || !now.Before(tr.Expires) {
		a.forget(h)
		return Identity{}, errUnauthorized
	}
	rec, rev, err := a.loadIdentity(ctx, tr.Node)
	if err != nil || rec.ID != tr.Identity {
		a.forget(h)
		return Identity{}, errUnauthorized
	}
	if live, err := a.live(ctx, tr.Node, rec, rev); err != nil || !live {
		a.forget(h)
		return Identity{}, errUnauthorized
	}
	a.mu.Lock()
	if len(a.cache) >= maxCachedTokens {
		a.pruneLocked(now)
	}
	a.cache[h] = cachedToken{node: tr.Node, expires: tr.Expires, checked: now}
	a.mu.Unlock()
	return Identity{Node: tr.Node}, nil
}

// maxCachedTokens bounds the cache; past it, entries due a check go.
const maxCachedTokens = 1 << 16

type cachedToken struct {
	node             string
	expires, checked time.Time
}

func (a *authenticator) forget(hash string) {
	a.mu.Lock()
	delete(a.cache, hash)
	a.mu.Unlock()
}

func (a *authenticator) pruneLocked(now time.Time) {
	for h, c := range a.cache {
		if !now.Before(c.expires) || now.Sub(c.checked) >= a.recheck {
			delete(a.cache, h)
		}
	}
}

// forgetNode drops the cached credentials of node, whose Node went.
func (a *authenticator) forgetNode(node string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for h, c := range a.cache {
		if c.node == node {
			delete(a.cache, h)
		}
	}
}

// run keeps the cache in step with Node deletions seen in the store (the
// recheck bounds how stale it is otherwise) and removes expired
// credentials and dead identities, until ctx ends.
func (a *authenticator) run(ctx context.Context) {
	go a.watchNodes(ctx)
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		if err := a.collect(ctx); err != nil && ctx.Err() == nil {
			a.log.Warn("collect expired node credentials", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (a *authenticator) watchNodes(ctx context.Context) {
	for ctx.Err() == nil {
		rev, err := a.store.LastRevision(ctx)
		if err == nil {
			var events <-chan store.Event
			if events, err = a.store.Watch(ctx, nodesResource().Name, "", rev); err == nil {
				for ev := range events {
					if ev.Type == store.Deleted {
						a.nodeDeleted(ctx, ev.Entry.Key.Name)
					}
				}
			}
		}
		if err != nil && ctx.Err() == nil {
			a.log.Warn("watch node deletions", "err", err)
		}
		// A watch that ended may have missed a deletion: start afresh.
		a.mu.Lock()
		clear(a.cache)
		a.mu.Unlock()
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// collect deletes expired credentials and identities that no longer
// stand, so that the store does not grow with every renewal.
func (a *authenticator) collect(ctx context.Context) error {
	tokens, _, err := a.store.List(ctx, nodeTokens, "")
	if err != nil {
		return err
	}
	now := a.now()
	for _, e := range tokens {
		var tr tokenRecord
		if json.Unmarshal(e.Value, &tr) != nil || !now.Before(tr.Expires) {
			_ = a.store.Delete(ctx, e.Key, e.Revision)
		}
	}
	ids, _, err := a.store.List(ctx, nodePasswords, "")
	if err != nil {
		return err
	}
	for _, e := range ids {
		var rec identityRecord
		if json.Unmarshal(e.Value, &rec) != nil {
			continue
		}
		if live, err := a.live(ctx, e.Key.Name, rec, e.Revision); err == nil && !live {
			if a.store.Delete(ctx, e.Key, e.Revision) == nil {
				a.releaseAddresses(ctx, e.Key.Name, rec.Addresses)
			}
		}
	}
	return nil
}

// nodeAddressError says why addr may not be a node's address, or nil.
func nodeAddressError(addr netip.Addr, allowLoopback bool) error {
	switch {
	case addr.IsLoopback() && !allowLoopback:
		return errors.New("a loopback address is no node's own (skep server --allow-loopback-node-addresses allows it, for an agent on the server's machine in development)")
	case addr.IsUnspecified():
		return errors.New("an unspecified address is no node's own")
	case addr.IsMulticast():
		return errors.New("a multicast address is no node's own")
	}
	return nil
}

// getNodeFunc reads a Node for the authenticator.
func getNodeFunc(reg *registry) func(context.Context, string) (*corev1.Node, error) {
	return func(ctx context.Context, name string) (*corev1.Node, error) {
		obj, err := reg.get(ctx, nodesResource(), "", name)
		if err != nil {
			return nil, err
		}
		return obj.(*corev1.Node), nil
	}
}
