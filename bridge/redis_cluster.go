package bridge

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync/atomic"

	"github.com/redis/go-redis/v9"
)

// watchClusterTopology makes a Redis Cluster client reload its slot map as
// soon as a command fails in a way that may mean the map is stale: a
// connection error, MOVED or ASK, CLUSTERDOWN, TRYAGAIN, READONLY or
// MASTERDOWN. go-redis reloads by itself only on MOVED and once a minute,
// so after a master dies it keeps dialling the dead address until that
// minute is up, long after Redis promoted the replica. Reloads are
// coalesced by go-redis (at most one in flight, then 200 ms apart).
// Dial errors are watched on every node's own client too: the pub/sub
// connection dials its node directly when it reconnects.
//
// The dials of every node's client are also counted in dials: the epoch
// watch reads the epoch again after one (see epochWatch).
func watchClusterTopology(ctx context.Context, cc *redis.ClusterClient, dials *atomic.Uint64) {
	h := reloadHook{cc}
	cc.AddHook(h)
	node := func(c *redis.Client) {
		c.AddHook(h)
		c.AddHook(dialCounter{dials})
	}
	cc.OnNewNode(node)
	// Nodes the client already knows were created before OnNewNode.
	_ = cc.ForEachShard(ctx, func(_ context.Context, c *redis.Client) error {
		node(c)
		return nil
	})
}

type reloadHook struct{ cc *redis.ClusterClient }

func (h reloadHook) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := next(ctx, network, addr)
		if err != nil && ctx.Err() == nil {
			h.cc.ReloadState(ctx)
		}
		return c, err
	}
}

func (h reloadHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if cmd.Name() != "cluster" && staleTopology(ctx, err) {
			h.cc.ReloadState(ctx)
		}
		return err
	}
}

func (h reloadHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		reload := staleTopology(ctx, err)
		for _, c := range cmds {
			if reload {
				break
			}
			reload = staleTopology(ctx, c.Err())
		}
		if reload {
			h.cc.ReloadState(ctx)
		}
		return err
	}
}

// staleTopology reports whether err may come from a stale slot map.
func staleTopology(ctx context.Context, err error) bool {
	if err == nil || errors.Is(err, redis.Nil) || ctx.Err() != nil ||
		errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var re redis.Error
	if errors.As(err, &re) {
		// A reply from a server: only the ones about the cluster's shape.
		for _, p := range []string{"MOVED", "ASK", "CLUSTERDOWN", "TRYAGAIN", "READONLY", "MASTERDOWN", "LOADING"} {
			if redis.HasErrorPrefix(err, p) {
				return true
			}
		}
		return false
	}
	return true // network errors: refused, reset, timeout, closed
}

// probeShards reads every stream shard's key, so that a QoS 1 publish to
// any topic is known to reach a master, and in Redis Cluster pings every
// master the client knows, which CONNECTs write client records to.
func (r *Redis) probeShards(ctx context.Context) error {
	cmds, err := r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for s := range streamShards {
			p.Exists(ctx, r.streamKey(s))
		}
		return nil
	})
	if err != nil {
		for _, c := range cmds {
			if c.Err() != nil {
				return unavailable(fmt.Sprintf("probe %s", c.Args()[1]), c.Err())
			}
		}
		return unavailable("probe stream shards", err)
	}
	if cc, ok := r.rdb.(*redis.ClusterClient); ok {
		err := cc.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
			if err := m.Ping(ctx).Err(); err != nil {
				return fmt.Errorf("%s: %w", m.Options().Addr, err)
			}
			return nil
		})
		if err != nil {
			return unavailable("probe cluster masters", err)
		}
	}
	return nil
}
