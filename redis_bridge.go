package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

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

		StreamMaxBytes: cfg.RedisStreamMaxBytes,
		Logger:         log,

		MinReplicasAcked: cfg.RedisMinReplicasAcked,
	})
	if err != nil {
		_ = client.Close()
		return nil, fmt.Errorf("redis bridge: %w", err)
	}
	log.Info("redis bridge ready", "node", cfg.NodeID, "prefix", cfg.RedisPrefix)
	warnUnneededPassword(ctx, cfg, log)
	return b, nil
}

// warnUnneededPassword logs a warning when -redis-url carries a password
// that the Redis server does not ask for: Redis accepts the AUTH, so a
// deployment that believes its Redis is protected would never find out.
func warnUnneededPassword(ctx context.Context, cfg *Config, log *slog.Logger) {
	if cfg.RedisURL == "" {
		return
	}
	opts, err := redis.ParseURL(cfg.RedisURL)
	if err != nil || opts.Password == "" {
		return
	}
	opts.Username, opts.Password = "", ""
	opts.MaxRetries = -1
	anon := redis.NewClient(opts)
	defer func() { _ = anon.Close() }()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if anon.Ping(ctx).Err() == nil {
		log.Warn("-redis-url has a password but the Redis server accepts clients without one; set requirepass or an ACL user on Redis")
	}
}
