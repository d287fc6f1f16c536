package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"
)

// Names in the certificates of the channel from the API server to the
// agents, as Kubernetes spells its kubelet's and its API server's.
const (
	// APIServerClientName is the common name of the client certificate
	// the API server presents to agents; an agent serves no one else.
	APIServerClientName = "system:skep-apiserver"
	// nodeNamePrefix starts the common name of a node's serving
	// certificate: "system:node:<node>".
	nodeNamePrefix = "system:node:"
)

// NodeServingName is the common name of node's serving certificate.
func NodeServingName(node string) string { return nodeNamePrefix + node }

// CA is a certificate authority held in memory: the API server's node CA,
// which signs the agents' serving certificates and the API server's client
// certificate for reaching them.
type CA struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	certPEM []byte
}

// NewCA makes a CA named name and returns its certificate and key in PEM.
func NewCA(name string) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate CA key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: fmt.Sprintf("%s@%d", name, time.Now().Unix())},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("sign CA: %w", err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("encode CA key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), nil
}

// ParseCA reads a CA made by NewCA.
func ParseCA(certPEM, keyPEM []byte) (*CA, error) {
	cb, _ := pem.Decode(certPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil {
		return nil, errors.New("parse CA: not PEM")
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse CA certificate: %w", err)
	}
	key, err := x509.ParseECPrivateKey(kb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse CA key: %w", err)
	}
	if !cert.IsCA || !key.PublicKey.Equal(cert.PublicKey) {
		return nil, errors.New("parse CA: the key does not belong to the certificate, or it is no CA")
	}
	return &CA{cert: cert, key: key, certPEM: certPEM}, nil
}

// CertPEM is the CA's certificate, which verifies what it signed.
func (ca *CA) CertPEM() []byte { return ca.certPEM }

// Pool is a pool holding only the CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// ClientCert makes a client certificate for name (server authentication
// is not among its uses, so it serves nothing).
func (ca *CA) ClientCert(name string, validity time.Duration) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("generate client key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("sign client certificate %s: %w", name, err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// SignNodeServing signs a node's request for a serving certificate
// (NewServingRequest). The request must name the node
// (NodeServingName) and ask only for addresses in allowed and for the
// node's name as a DNS name. The certificate names the node both ways
// (CheckNodeServing), serves and does not authenticate clients, so one
// node cannot pose as the API server to another.
func (ca *CA) SignNodeServing(csrPEM []byte, node string, allowed []netip.Addr, validity time.Duration) ([]byte, error) {
	b, _ := pem.Decode(csrPEM)
	if b == nil || b.Type != "CERTIFICATE REQUEST" {
		return nil, errors.New("the certificate request is not a PEM CERTIFICATE REQUEST")
	}
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse the certificate request: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("the certificate request's signature: %w", err)
	}
	if want := NodeServingName(node); csr.Subject.CommonName != want {
		return nil, fmt.Errorf("the certificate request names %q; node %s may ask only for %q", csr.Subject.CommonName, node, want)
	}
	if len(csr.IPAddresses) == 0 {
		return nil, errors.New("the certificate request names no IP address")
	}
	for _, ip := range csr.IPAddresses {
		a, ok := netip.AddrFromSlice(ip)
		if !ok || !slices.Contains(allowed, a.Unmap()) {
			return nil, fmt.Errorf("the certificate request asks for %s, which is not an address of node %s (%v)", ip, node, allowed)
		}
	}
	for _, d := range csr.DNSNames {
		if d != node {
			return nil, fmt.Errorf("the certificate request asks for DNS name %q; node %s may ask only for its own name", d, node)
		}
	}
	if len(csr.EmailAddresses) > 0 || len(csr.URIs) > 0 {
		return nil, errors.New("the certificate request asks for e-mail or URI names, which node certificates do not carry")
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: csr.Subject.CommonName},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  csr.IPAddresses,
		// The certificate names the node whatever the request asked, so
		// that the API server can check whose it is (CheckNodeServing).
		DNSNames: []string{node},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, csr.PublicKey, ca.key)
	if err != nil {
		return nil, fmt.Errorf("sign the serving certificate of node %s: %w", node, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

// CheckNodeServing says whether cert, already verified against the node
// CA, is node's serving certificate: named "system:node:<node>", with the
// node's name among its DNS names. An address alone does not say whose it
// is.
func CheckNodeServing(cert *x509.Certificate, node string) error {
	if want := NodeServingName(node); cert.Subject.CommonName != want || !slices.Contains(cert.DNSNames, node) {
		return fmt.Errorf("the agent presented the certificate of %q (DNS names %v), not of node %s", cert.Subject.CommonName, cert.DNSNames, node)
	}
	return nil
}

// NewServingRequest makes a key and a request for a serving certificate
// of node for its addresses, to be signed by the API server. The key never
// leaves the agent.
func NewServingRequest(node string, ips []netip.Addr) (csrPEM []byte, key crypto.Signer, err error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate serving key: %w", err)
	}
	tmpl := &x509.CertificateRequest{Subject: pkix.Name{CommonName: NodeServingName(node)}, DNSNames: []string{node}}
	for _, ip := range ips {
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.IP(ip.AsSlice()))
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, k)
	if err != nil {
		return nil, nil, fmt.Errorf("make certificate request: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), k, nil
}
