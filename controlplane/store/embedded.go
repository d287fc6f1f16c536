package store

import (
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// EmbeddedConfig configures the NATS server that `skep server` runs inside
// its own process when no external NATS is named.
type EmbeddedConfig struct {
	StoreDir string // JetStream's files
	// Listen is host:port for clients outside the process; the default
	// 127.0.0.1:4222 keeps it on loopback. Port -1 picks a free one.
	Listen   string
	User     string
	Password string
	// SyncAlways makes JetStream fsync every write before acknowledging
	// it, so an acknowledged write survives a machine crash and not only a
	// process crash.
	SyncAlways bool
}

// maxPayload is the embedded NATS's largest message: a value of
// MaxObjectBytes plus the KV headers and subject must fit, and NATS's
// default of 1 MiB does not. An external NATS needs as much (README).
const maxPayload = 2 << 20

// Embedded is a running in-process NATS server with JetStream.
type Embedded struct {
	srv *server.Server
	cfg EmbeddedConfig
}

// StartEmbedded starts the server and waits until it takes connections.
func StartEmbedded(cfg EmbeddedConfig) (*Embedded, error) {
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:4222"
	}
	host, portStr, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("parse NATS listen address %q: %w", cfg.Listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("parse NATS listen port %q: %w", portStr, err)
	}
	opts := &server.Options{
		ServerName:         "skep",
		Host:               host,
		Port:               port,
		JetStream:          true,
		StoreDir:           cfg.StoreDir,
		SyncAlways:         cfg.SyncAlways,
		Username:           cfg.User,
		Password:           cfg.Password,
		NoSigs:             true,
		NoLog:              true,
		JetStreamMaxMemory: 256 << 20,
		// Every watch of the API (4 per agent) is a consumer of the one
		// stream; nats-server's default of 1,000 consumers per stream
		// would cap a cluster at about 250 nodes.
		JetStreamLimits: server.JSLimitOpts{DefaultMaxConsumers: -1},
		MaxPayload:      maxPayload,
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("create NATS server: %w", err)
	}
	srv.Start()
	if !srv.ReadyForConnections(30 * time.Second) {
		srv.Shutdown()
		return nil, fmt.Errorf("NATS server on %s not ready after 30s", cfg.Listen)
	}
	return &Embedded{srv: srv, cfg: cfg}, nil
}

// Connect opens a client connection inside the process.
func (e *Embedded) Connect() (*nats.Conn, error) {
	return nats.Connect("", nats.InProcessServer(e.srv), nats.UserInfo(e.cfg.User, e.cfg.Password),
		nats.Name("skep-server"), nats.MaxReconnects(-1))
}

// ClientURL is the address clients outside the process use.
func (e *Embedded) ClientURL() string { return e.srv.ClientURL() }

// Shutdown stops the server and waits until it has.
func (e *Embedded) Shutdown() {
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
}
