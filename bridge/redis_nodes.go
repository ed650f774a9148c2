package bridge

import (
	"context"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// claimScript marks a client of a dead node offline if its record still
// says it is online there, and returns the connection id it claimed, so
// that exactly one replica publishes that connection's will.
// KEYS[1] client; ARGV dead node, offline_at.
var claimScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'node') ~= ARGV[1] or redis.call('HGET', KEYS[1], 'state') ~= '1' then return false end
redis.call('HSET', KEYS[1], 'state', '0', 'offline_at', ARGV[2])
return redis.call('HGET', KEYS[1], 'conn')
`)

// clearWillScript removes a will once published, and a clean session's
// record entirely, if the session hash still belongs to conn.
// KEYS[1] session; ARGV[1] conn.
var clearWillScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'conn') ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[1], 'clean') == '1' then redis.call('DEL', KEYS[1]) else redis.call('HDEL', KEYS[1], 'will') end
return 1
`)

// heartbeat registers this node and refreshes its liveness key.
func (r *Redis) heartbeat(ctx context.Context) error {
	_, err := r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.SAdd(ctx, r.nodesKey(), r.node)
		p.Set(ctx, r.aliveKey(r.node), strconv.FormatInt(time.Now().Unix(), 10), r.ttl)
		return nil
	})
	if err != nil {
		return unavailable("node heartbeat", err)
	}
	return nil
}

// nodeLoop refreshes the liveness key every TTL/3 and looks for dead nodes
// every TTL/2.
func (r *Redis) nodeLoop() {
	defer r.wg.Done()
	beat := time.NewTicker(r.ttl / 3)
	defer beat.Stop()
	reap := time.NewTicker(r.ttl / 2)
	defer reap.Stop()
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-beat.C:
			ctx, cancel := context.WithTimeout(r.ctx, r.ttl/3)
			if err := r.heartbeat(ctx); err != nil {
				r.log.Warn("heartbeat failed", "err", err)
			}
			r.askEpochCheck()
			cancel()
		case <-reap.C:
			ctx, cancel := context.WithTimeout(r.ctx, 30*time.Second)
			if err := r.reapDeadNodes(ctx); err != nil {
				r.log.Warn("dead node check failed", "err", err)
			}
			cancel()
		}
	}
}

// reapDeadNodes finds registered nodes whose liveness key has expired and,
// for each one this replica claims, publishes the wills of its clients that
// were still online, marks them offline and removes the node's records.
func (r *Redis) reapDeadNodes(ctx context.Context) error {
	nodes, err := r.rdb.SMembers(ctx, r.nodesKey()).Result()
	if err != nil {
		return unavailable("list nodes", err)
	}
	for _, n := range nodes {
		if n == r.node {
			continue
		}
		alive, err := r.rdb.Exists(ctx, r.aliveKey(n)).Result()
		if err != nil {
			return unavailable("check node liveness", err)
		}
		if alive > 0 {
			continue
		}
		won, err := r.rdb.SetNX(ctx, r.reapKey(n), r.node, time.Minute).Result()
		if err != nil {
			return unavailable("claim dead node", err)
		}
		if !won {
			continue
		}
		if err := r.reapNode(ctx, n); err != nil {
			return err
		}
	}
	return nil
}

// reapNode handles the clients of one dead node.
func (r *Redis) reapNode(ctx context.Context, node string) error {
	clients, err := r.rdb.HKeys(ctx, r.nodeKey(node)).Result()
	if err != nil {
		return unavailable("list dead node's clients", err)
	}
	r.log.Info("reaping dead node", "dead", node, "clients", len(clients))
	now := strconv.FormatInt(time.Now().Unix(), 10)
	for _, id := range clients {
		conn, err := claimScript.Run(ctx, r.rdb, []string{r.clientKey(id)}, node, now).Text()
		if err == redis.Nil {
			continue // reconnected elsewhere, or already offline
		}
		if err != nil {
			return unavailable("claim client of dead node", err)
		}
		willEnv, err := r.rdb.HGet(ctx, r.sessionKey(id), "will").Result()
		if err != nil && err != redis.Nil {
			return unavailable("read will", err)
		}
		ownerConn, _ := r.rdb.HGet(ctx, r.sessionKey(id), "conn").Result()
		if willEnv != "" && ownerConn == conn {
			will := new(Message)
			if _, err := DecodeEnvelope(willEnv, will); err != nil {
				r.log.Error("dropping stored will that does not decode", "client", id, "err", err)
			} else if err := r.Publish(ctx, will); err != nil && !isNotReplicated(err) {
				// Not replicated is still published: retrying would send it twice.
				return err
			} else {
				r.stats.willsSent.Add(1)
			}
		}
		if err := clearWillScript.Run(ctx, r.rdb, []string{r.sessionKey(id)}, conn).Err(); err != nil {
			return unavailable("clear will", err)
		}
	}
	_, err = r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, r.nodeKey(node))
		p.SRem(ctx, r.nodesKey(), node)
		return nil
	})
	if err != nil {
		return unavailable("remove dead node", err)
	}
	return nil
}
