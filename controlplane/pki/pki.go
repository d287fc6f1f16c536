// Package pki makes the control plane's certificates and tokens on first
// start and reads them back on every later one: a CA, a serving certificate
// signed by it, an admin token and a node-join token, all under the data
// dir, and an admin client config in kubeconfig format.
package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Files are the paths of everything pki keeps under a data dir.
type Files struct {
	Dir string
}

func (f Files) CACert() string     { return filepath.Join(f.Dir, "tls", "ca.crt") }
func (f Files) CAKey() string      { return filepath.Join(f.Dir, "tls", "ca.key") }
func (f Files) ServerCert() string { return filepath.Join(f.Dir, "tls", "server.crt") }
func (f Files) ServerKey() string  { return filepath.Join(f.Dir, "tls", "server.key") }
func (f Files) AdminToken() string { return filepath.Join(f.Dir, "tls", "admin-token") }
func (f Files) NodeToken() string  { return filepath.Join(f.Dir, "node-token") }
func (f Files) AdminConf() string  { return filepath.Join(f.Dir, "admin.conf") }

// Bundle is what a running server needs.
type Bundle struct {
	CAPEM      []byte
	ServerCert tls.Certificate
	AdminToken string
	// NodeToken is the join token agents present: "K10<ca hash>::<secret>",
	// as k3s spells it, so an agent given only the token can pin the CA.
	NodeToken string
}

// Ensure loads the bundle from dir, creating what is missing. The serving
// certificate is remade when it does not cover every name in sans.
func Ensure(dir string, sans []string) (*Bundle, error) {
	f := Files{Dir: dir}
	if err := os.MkdirAll(filepath.Join(dir, "tls"), 0o700); err != nil {
		return nil, fmt.Errorf("create tls dir: %w", err)
	}
	caCert, caKey, err := ensureCA(f)
	if err != nil {
		return nil, err
	}
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caCert.Raw})
	serverCert, err := ensureServerCert(f, caCert, caKey, sans)
	if err != nil {
		return nil, err
	}
	admin, err := ensureSecret(f.AdminToken(), func() (string, error) { return randomHex(24) })
	if err != nil {
		return nil, err
	}
	node, err := ensureSecret(f.NodeToken(), func() (string, error) {
		secret, err := randomHex(24)
		return "K10" + CAHash(caPEM) + "::" + secret, err
	})
	if err != nil {
		return nil, err
	}
	return &Bundle{CAPEM: caPEM, ServerCert: serverCert, AdminToken: admin, NodeToken: node}, nil
}

// CAHash is the SHA-256 of a CA certificate's PEM, the pin a join token
// carries.
func CAHash(caPEM []byte) string {
	sum := sha256.Sum256(caPEM)
	return hex.EncodeToString(sum[:])
}

// SplitJoinToken returns the CA hash a join token pins ("" when it pins
// none) and the whole token, which is what the server checks.
func SplitJoinToken(token string) (caHash string) {
	if rest, ok := strings.CutPrefix(token, "K10"); ok {
		if h, _, ok := strings.Cut(rest, "::"); ok {
			return h
		}
	}
	return ""
}

func ensureSecret(path string, make func() (string, error)) (string, error) {
	if b, err := os.ReadFile(path); err == nil {
		return strings.TrimSpace(string(b)), nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	s, err := make()
	if err != nil {
		return "", err
	}
	if err := writeFileAtomic(path, []byte(s+"\n"), 0o600); err != nil {
		return "", err
	}
	return s, nil
}

func ensureCA(f Files) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	if cert, key, err := loadPair(f.CACert(), f.CAKey()); err == nil {
		return cert, key, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate CA key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: fmt.Sprintf("skep-ca@%d", time.Now().Unix())},
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
	if err := writePair(f.CACert(), f.CAKey(), der, key); err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	return cert, key, err
}

func ensureServerCert(f Files, ca *x509.Certificate, caKey *ecdsa.PrivateKey, sans []string) (tls.Certificate, error) {
	if cert, _, err := loadPair(f.ServerCert(), f.ServerKey()); err == nil && covers(cert, sans) && cert.CheckSignatureFrom(ca) == nil && time.Until(cert.NotAfter) > 30*24*time.Hour {
		return tls.LoadX509KeyPair(f.ServerCert(), f.ServerKey())
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("generate server key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: "skep-apiserver"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().AddDate(1, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, s := range sans {
		if ip := net.ParseIP(s); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if s != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, s)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("sign server certificate: %w", err)
	}
	if err := writePair(f.ServerCert(), f.ServerKey(), der, key); err != nil {
		return tls.Certificate{}, err
	}
	return tls.LoadX509KeyPair(f.ServerCert(), f.ServerKey())
}

func covers(cert *x509.Certificate, sans []string) bool {
	for _, s := range sans {
		if s != "" && cert.VerifyHostname(s) != nil {
			return false
		}
	}
	return true
}

func loadPair(certPath, keyPath string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return nil, nil, err
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, nil, err
	}
	cb, _ := pem.Decode(certPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil {
		return nil, nil, fmt.Errorf("read %s: not PEM", certPath)
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("parse %s: %w", certPath, err)
	}
	key, err := x509.ParseECPrivateKey(kb.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("parse %s: %w", keyPath, err)
	}
	return cert, key, nil
}

func writePair(certPath, keyPath string, der []byte, key *ecdsa.PrivateKey) error {
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	if err := writeFileAtomic(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		return err
	}
	return writeFileAtomic(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	return n
}

func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("read random: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// RandomToken returns a new random secret, for per-node credentials.
func RandomToken() (string, error) { return randomHex(24) }
