package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/redis/go-redis/v9"

	"github.com/bridgemq/server/bridge"
)

// newRedisBridge starts the Redis bridge on client. Redis must answer at
// start-up; once running, a replica survives Redis going away.
func newRedisBridge(ctx context.Context, cfg *Config, client redis.UniversalClient, log *slog.Logger) (bridge.Bridge, error) {
	b, err := bridge.NewRedis(ctx, bridge.RedisOptions{
		Client:        client,
		Prefix:        cfg.RedisPrefix,
		NodeID:        cfg.NodeID,
		NodeTTL:       cfg.NodeTTL,
		MessageExpiry: cfg.MessageExpiry,
		SessionExpiry: cfg.SessionExpiry,
		MaxQueued:     cfg.MaxQueuedMessages,
		MaxPatterns:   cfg.RedisMaxPatterns,
		Logger:        log,

		MinReplicasAcked: cfg.RedisMinReplicasAcked,
	})
	if err != nil {
		_ = client.Close()
		return nil, fmt.Errorf("redis bridge: %w", err)
	}
	log.Info("redis bridge ready", "node", cfg.NodeID, "prefix", cfg.RedisPrefix)
	return b, nil
}
