package main

import (
	"context"
	"log/slog"

	"github.com/skep-io/skep/controlplane/apiserver"
	"github.com/skep-io/skep/controlplane/controllers"
)

// startControllers runs the scheduler and controllers beside the API
// server on its in-process client. With several servers on one NATS, a
// lease in the store makes one of them the leader that runs them.
func startControllers(ctx context.Context, srv *apiserver.Server, cfg serverConfig, log *slog.Logger) {
	go func() {
		err := controllers.Run(ctx, srv.Client(), controllers.Config{
			ClusterCIDR:            cfg.ClusterCIDR,
			NodeMonitorGracePeriod: cfg.NodeMonitorGracePeriod,
			PodEvictionTimeout:     cfg.PodEvictionTimeout,
			LeaseDuration:          cfg.LeaderLeaseDuration,
		}, log)
		if err != nil && ctx.Err() == nil {
			log.Error("controller manager stopped", "err", err)
		}
	}()
}
