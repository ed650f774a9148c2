// Command server is an MQTT 3.1.1 broker whose replicas are stateless and
// scale out behind a TCP load balancer, bridged through Redis. With no
// -redis-url it runs as a single node with nothing else to install.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/redis/go-redis/v9"

	"github.com/bridgemq/server/auth"
	"github.com/bridgemq/server/bridge"
)

func main() {
	os.Exit(run(os.Args[1:], os.Getenv, os.Stderr))
}

// run is main with its inputs made explicit; it returns the exit status:
// 0 after a clean stop, 2 for a configuration error, 1 for a runtime failure.
func run(args []string, getenv func(string) string, stderr io.Writer) int {
	cfg, err := ParseConfig(args, getenv)
	if errors.Is(err, ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "server: %v\n", err)
		return 2
	}
	log := cfg.NewLogger(stderr)
	// go-redis logs its own retries; the bridge reports what matters.
	redis.SetLogger(redisLog{log.With("component", "go-redis")})
	authz, err := loadAuth(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "server: %v\n", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	b, err := newBridge(ctx, cfg, log)
	if errors.Is(err, bridge.ErrNodeIDInUse) {
		fmt.Fprintf(stderr, "server: -node-id %s: %v\n", cfg.NodeID, err)
		return 2
	}
	if err != nil {
		fmt.Fprintf(stderr, "server: %v\n", err)
		return 1
	}
	if err := NewServer(cfg, b, authz, log).Run(ctx); err != nil {
		log.Error("server stopped", "err", err)
		return 1
	}
	return 0
}

// loadAuth reads the password and ACL files; errors name the flag.
func loadAuth(cfg *Config) (*auth.Authorizer, error) {
	a := &auth.Authorizer{AllowAnonymous: cfg.AllowAnonymous}
	if cfg.PasswordFile != "" {
		p, err := auth.LoadPasswordFile(cfg.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("-password-file: %w", err)
		}
		a.Passwords = p
	}
	if cfg.ACLFile != "" {
		acl, err := auth.LoadACLFile(cfg.ACLFile)
		if err != nil {
			return nil, fmt.Errorf("-acl-file: %w", err)
		}
		a.ACL = acl
	}
	return a, nil
}

// newBridge builds the in-process bridge, or the Redis one when configured.
func newBridge(ctx context.Context, cfg *Config, log *slog.Logger) (bridge.Bridge, error) {
	client, err := cfg.RedisClient()
	if err != nil {
		return nil, err
	}
	if client == nil {
		log.Info("single node: no Redis configured")
		return bridge.NewMemory(bridge.MemoryOptions{
			MaxQueued:     cfg.MaxQueuedMessages,
			MessageExpiry: cfg.MessageExpiry,
			SessionExpiry: cfg.SessionExpiry,
		}), nil
	}
	b, err := newRedisBridge(ctx, cfg, client, log)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cfg.redisSource(), err)
	}
	return b, nil
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

// redisLog sends go-redis's internal log lines to slog at debug level.
type redisLog struct{ log *slog.Logger }

// Printf implements go-redis's logger.
func (l redisLog) Printf(ctx context.Context, format string, v ...any) {
	l.log.DebugContext(ctx, fmt.Sprintf(format, v...))
}
