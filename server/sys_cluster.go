package server

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// sysCluster shares each replica's $SYS figures through Redis so that
// every replica can publish the cluster's totals under $SYS/cluster/...:
//
//	<prefix>sys:<node>  hash  figure → value, expiring after three intervals
//	<prefix>sys:nodes   set   the replicas that have written one
//
// A replica that stops writing drops out of the totals when its hash
// expires. Every command touches one key, so this works in Redis Cluster.
type sysCluster struct {
	rdb    redis.UniversalClient
	prefix string
	node   string
	ttl    time.Duration
}

// sysSummed are the figures added up over the replicas; the retained
// count is shared by all of them, so it is not.
var sysSummed = []string{
	"clients/connected", "messages/received", "messages/sent",
	"bytes/received", "bytes/sent", "subscriptions/count",
}

func (c *sysCluster) key(node string) string { return c.prefix + "sys:" + node }
func (c *sysCluster) nodesKey() string       { return c.prefix + "sys:nodes" }

// exchange stores figures as this replica's and returns the totals over
// every replica whose figures are current, and how many replicas that is.
func (c *sysCluster) exchange(ctx context.Context, figures map[string]int64) (map[string]int64, int, error) {
	args := make([]any, 0, 2*len(figures))
	for k, v := range figures {
		args = append(args, k, v)
	}
	pipe := c.rdb.Pipeline()
	pipe.HSet(ctx, c.key(c.node), args...)
	pipe.PExpire(ctx, c.key(c.node), c.ttl)
	pipe.SAdd(ctx, c.nodesKey(), c.node)
	members := pipe.SMembers(ctx, c.nodesKey())
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, 0, fmt.Errorf("store $SYS figures: %w", err)
	}
	pipe = c.rdb.Pipeline()
	reads := make(map[string]*redis.MapStringStringCmd, len(members.Val()))
	for _, n := range members.Val() {
		reads[n] = pipe.HGetAll(ctx, c.key(n))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, 0, fmt.Errorf("read $SYS figures: %w", err)
	}
	totals := make(map[string]int64, len(sysSummed))
	var gone []any
	nodes := 0
	for n, r := range reads {
		m := r.Val()
		if len(m) == 0 {
			gone = append(gone, n)
			continue
		}
		nodes++
		for _, k := range sysSummed {
			v, _ := strconv.ParseInt(m[k], 10, 64)
			totals[k] += v
		}
	}
	if len(gone) > 0 {
		// Expired: that replica stopped. It adds itself back if it returns.
		_ = c.rdb.SRem(ctx, c.nodesKey(), gone...).Err()
	}
	return totals, nodes, nil
}
