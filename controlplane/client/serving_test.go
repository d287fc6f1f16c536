package client

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"net/netip"
	"slices"
	"testing"

	"github.com/skep-io/skep/controlplane/pki"
)

// TestJoinTokenPinsTheServersCA checks that the token a server makes pins,
// as the agent reads it, the CA that server hands out.
func TestJoinTokenPinsTheServersCA(t *testing.T) {
	b, err := pki.Ensure(t.TempDir(), []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	pin := JoinTokenCAHash(b.NodeToken)
	if pin == "" || pin != CAHash(b.CAPEM) {
		t.Errorf("token %q pins %q; want the hash of the server's CA, %q", b.NodeToken, pin, CAHash(b.CAPEM))
	}
	if got := JoinTokenCAHash("K10::secret"); got != "" {
		t.Errorf("a token with an empty pin reads as pinning %q", got)
	}
	if got := JoinTokenCAHash("plainsecret"); got != "" {
		t.Errorf("a token without K10 reads as pinning %q", got)
	}
}

// TestNewServingRequest checks the request names the node and only its
// addresses, as the API server signs it.
func TestNewServingRequest(t *testing.T) {
	ip := netip.MustParseAddr("10.0.0.7")
	csrPEM, key, err := NewServingRequest("node-1", []netip.Addr{ip})
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(csrPEM)
	if block == nil {
		t.Fatalf("not PEM: %q", csrPEM)
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if err := csr.CheckSignature(); err != nil {
		t.Errorf("request not signed by its key: %v", err)
	}
	if csr.Subject.CommonName != pki.NodeServingName("node-1") || !slices.Equal(csr.DNSNames, []string{"node-1"}) {
		t.Errorf("request for %q, DNS names %v; want %q and node-1", csr.Subject.CommonName, csr.DNSNames, pki.NodeServingName("node-1"))
	}
	if len(csr.IPAddresses) != 1 || !csr.IPAddresses[0].Equal(ip.AsSlice()) {
		t.Errorf("request IPs %v, want only %s", csr.IPAddresses, ip)
	}
	if key == nil || !key.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(csr.PublicKey) {
		t.Errorf("the key returned is not the request's")
	}
}
