package main

import (
	"context"
	"errors"
	"log/slog"

	"github.com/redis/go-redis/v9"

	"github.com/bridgemq/server/bridge"
)

// newRedisBridge is replaced by the Redis bridge as it lands; until then a
// Redis configuration is refused at start-up rather than ignored.
func newRedisBridge(_ context.Context, _ *Config, client redis.UniversalClient, _ *slog.Logger) (bridge.Bridge, error) {
	_ = client.Close()
	return nil, errors.New("-redis-url: the Redis bridge is not part of this build yet")
}
