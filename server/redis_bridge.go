package server

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/bridgemq/server/bridge"
	"github.com/bridgemq/server/broker"
)

// redisProtocol is the RESP version the server's Redis client speaks: 2.
// With RESP3 (go-redis's default) the client peeks for push notifications
// before every reply it reads, which cost the subscription reader 8% of a
// replica's CPU with synchronous publishers; the bridge uses nothing that
// only RESP3 offers. A -redis-url may still ask for ?protocol=3.
const redisProtocol = 2

// newBridge builds the in-process bridge, or the Redis one when configured.
// Redis publish batches' round trips go to redisLatency; the Redis bridge
// asks auth whether a will it publishes for another replica's connection
// is still allowed.
func newBridge(ctx context.Context, cfg *Config, log *slog.Logger, redisLatency prometheus.Observer, auth *liveAuth) (*broker.Broker, error) {
	client, err := cfg.RedisClient()
	if err != nil {
		return nil, err
	}
	if client == nil {
		log.Info("single node: no Redis configured")
		return broker.NewMemory(broker.MemoryOptions{
			MaxQueued:      cfg.MaxQueuedMessages,
			MaxQueuedBytes: cfg.MaxQueuedBytes,
			MessageExpiry:  cfg.MessageExpiry,
			SessionExpiry:  cfg.SessionExpiry,
		}), nil
	}
	b, err := newRedisBridge(ctx, cfg, client, log, redisLatency, auth)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cfg.redisSource(), err)
	}
	return b, nil
}

// usesRedis reports whether a Redis topology is configured.
func (c *Config) usesRedis() bool {
	return c.RedisURL != "" || c.RedisSentinelMaster != "" || len(c.RedisCluster) > 0
}

// redisSource names the flag that chose the Redis topology, for errors.
func (c *Config) redisSource() string {
	switch {
	case c.RedisURL != "":
		if u, err := url.Parse(c.RedisURL); err == nil {
			return "-redis-url " + u.Redacted()
		}
		return "-redis-url"
	case c.RedisSentinelMaster != "":
		return "-redis-sentinel-master " + c.RedisSentinelMaster
	default:
		return "-redis-cluster " + strings.Join(c.RedisCluster, ",")
	}
}

// newRedisBridge starts the Redis bridge on client. Redis must answer at
// start-up; once running, a replica survives Redis going away.
func newRedisBridge(ctx context.Context, cfg *Config, client redis.UniversalClient, log *slog.Logger, redisLatency prometheus.Observer, auth *liveAuth) (*broker.Broker, error) {
	b, _, err := bridge.NewRedisBroker(ctx, bridge.RedisOptions{
		Client:         client,
		Prefix:         cfg.RedisPrefix,
		NodeID:         cfg.NodeID,
		NodeTTL:        cfg.NodeTTL,
		MessageExpiry:  cfg.MessageExpiry,
		SessionExpiry:  cfg.SessionExpiry,
		MaxQueued:      cfg.MaxQueuedMessages,
		MaxQueuedBytes: cfg.MaxQueuedBytes,
		MaxPatterns:    cfg.RedisMaxPatterns,

		StreamMaxBytes: cfg.RedisStreamMaxBytes,
		Logger:         log,

		MinReplicasAcked: cfg.RedisMinReplicasAcked,
		PublishLatency:   redisLatency,
		WillAuth:         auth.CanWrite,
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

// SetRedisLogger sends go-redis's own log lines (its retries and reconnects)
// to log at debug level; the bridge reports what matters. go-redis has one
// logger per process, so this is process-wide.
func SetRedisLogger(log *slog.Logger) {
	redis.SetLogger(redisLog{log})
}

// redisLog sends go-redis's internal log lines to slog at debug level.
type redisLog struct{ log *slog.Logger }

// Printf implements go-redis's logger.
func (l redisLog) Printf(ctx context.Context, format string, v ...any) {
	l.log.DebugContext(ctx, fmt.Sprintf(format, v...))
}
