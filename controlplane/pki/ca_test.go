package pki

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// TestNodeCA signs a node's serving request and checks what each
// certificate may be used for: the node's serves its addresses only, the
// API server's authenticates a client only.
func TestNodeCA(t *testing.T) {
	certPEM, keyPEM, err := NewCA("skep-node-ca")
	if err != nil {
		t.Fatal(err)
	}
	ca, err := ParseCA(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	nodeIP := netip.MustParseAddr("198.18.5.11")
	allowed := []netip.Addr{nodeIP}

	csr, key, err := NewServingRequest("node1", []netip.Addr{nodeIP})
	if err != nil {
		t.Fatal(err)
	}
	served, err := ca.SignNodeServing(csr, "node1", allowed, time.Hour)
	if err != nil {
		t.Fatalf("sign node1's own request: %v", err)
	}
	b, _ := pem.Decode(served)
	cert, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if !cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(key.Public()) {
		t.Error("the serving certificate is not for the requester's key")
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), DNSName: "198.18.5.11", KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		t.Errorf("the serving certificate does not serve 198.18.5.11: %v", err)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err == nil {
		t.Error("a node's serving certificate authenticates a client; want server use only")
	}

	client, err := ca.ClientCert(APIServerClientName, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(client.Certificate[0])
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("the API server's client certificate: %v", err)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: ca.Pool()}); err == nil {
		t.Error("the API server's client certificate serves; want client use only")
	}
	var _ tls.Certificate = client

	other, _, _ := NewServingRequest("node2", []netip.Addr{nodeIP})
	foreign, _, _ := NewServingRequest("node1", []netip.Addr{netip.MustParseAddr("198.18.5.12")})
	cases := []struct {
		name string
		csr  []byte
		want string
	}{
		{"another node's name", other, `may ask only for "system:node:node1"`},
		{"an address not the node's", foreign, "198.18.5.12, which is not an address of node node1"},
		{"no PEM", []byte("junk"), "not a PEM CERTIFICATE REQUEST"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ca.SignNodeServing(c.csr, "node1", allowed, time.Hour)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("SignNodeServing: %v; want an error saying %q", err, c.want)
			}
		})
	}
}
