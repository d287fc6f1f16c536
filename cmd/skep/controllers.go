package main

import (
	"context"
	"log/slog"

	"github.com/skep-io/skep/controlplane/apiserver"
)

// startControllers runs the scheduler and controllers beside the API
// server, on its in-process client.
func startControllers(ctx context.Context, srv *apiserver.Server, cfg serverConfig, log *slog.Logger) {
	_ = ctx
	_ = srv
	_ = cfg
	_ = log
}
