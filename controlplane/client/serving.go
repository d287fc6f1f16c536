package client

import (
	"crypto"
	"net/netip"

	"github.com/skep-io/skep/controlplane/pki"
)

// What an agent needs of the cluster's certificates, so that it reaches
// the control plane through this package alone: the pin of a join token,
// its serving certificate's request, and the one client it serves.

// APIServerClientName is the common name of the API server's client
// certificate, the only client an agent's endpoint answers.
const APIServerClientName = pki.APIServerClientName

// JoinTokenCAHash returns the hash of the CA a join token pins (a token
// K10<hash>::...), or "" when it pins none.
func JoinTokenCAHash(joinToken string) string { return pki.SplitJoinToken(joinToken) }

// CAHash is the hash a join token pins a CA by, of the CA's PEM as the
// server hands it out.
func CAHash(caPEM []byte) string { return pki.CAHash(caPEM) }

// NewServingRequest makes the key of node's serving certificate and the
// request, for its name and ips, that the API server signs at
// ServingCertificatePath.
func NewServingRequest(node string, ips []netip.Addr) (csrPEM []byte, key crypto.Signer, err error) {
	return pki.NewServingRequest(node, ips)
}
