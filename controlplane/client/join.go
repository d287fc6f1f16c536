package client

import "time"

// The paths an agent gets and keeps its node credential at.
const (
	// JoinPath takes the node-join token and a JoinRequest and answers a
	// Credential for the node.
	JoinPath = "/skep/v1/join"
	// RenewPath takes a node's current credential and answers a new
	// Credential for the same node, before the current one expires.
	RenewPath = "/skep/v1/renew"
)

// JoinRequest is what an agent sends with the node-join token.
type JoinRequest struct {
	NodeName string `json:"nodeName"`
	// Password proves on every later join that the same machine asks for
	// the name: the server keeps its hash from the first join, as k3s
	// keeps a node password.
	Password string `json:"password"`
	// Addresses are the node's IP addresses: the only ones the API server
	// signs serving certificates for, and dials the agent at.
	Addresses []string `json:"addresses,omitempty"`
}

// Credential is a node's own bearer token and when it stops working.
type Credential struct {
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expiresAt"`
}
