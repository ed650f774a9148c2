package bridge

import (
	"context"
	"errors"
	"fmt"
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

// nodeLoop refreshes the liveness key every TTL/3 (and at once when asked,
// e.g. after the publisher saw Redis restart) and looks for dead nodes every
// TTL/2.
func (r *Redis) nodeLoop() {
	defer r.wg.Done()
	beat := time.NewTicker(r.ttl / 3)
	defer beat.Stop()
	reap := time.NewTicker(r.ttl / 2)
	defer reap.Stop()
	missing := make(map[string]time.Time) // node → first seen without liveness key
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-beat.C:
			r.beatOnce()
			r.askEpochCheck()
		case <-r.beatNow:
			r.beatOnce()
		case <-reap.C:
			ctx, cancel := context.WithTimeout(r.ctx, reapHold/2)
			if err := r.reapDeadNodes(ctx, missing); err != nil {
				r.log.Warn("dead node check failed", "err", err)
			}
			cancel()
			r.stats.deadNodeChecks.Add(1)
		}
	}
}

func (r *Redis) beatOnce() {
	ctx, cancel := context.WithTimeout(r.ctx, max(r.ttl/3, 2*time.Second))
	defer cancel()
	if err := r.heartbeat(ctx); err != nil {
		r.log.Warn("heartbeat failed", "err", err)
	}
}

// reapDeadNodes finds registered nodes whose liveness key is gone and, for
// each one this replica claims, publishes the wills of its clients that
// were still online, marks them offline and removes the node's records.
//
// A node is dead only when its key was seen gone on two reads at least
// TTL/2 apart (it refreshes every TTL/3): after Redis failed over, or was
// unreachable, a live node needs a moment to write its key again. An error
// reading a key says nothing about the node. A replica whose own heartbeat
// is failing judges nobody.
func (r *Redis) reapDeadNodes(ctx context.Context, missing map[string]time.Time) error {
	if time.Since(time.Unix(0, r.lastBeat.Load())) > r.ttl/2 {
		clear(missing)
		return nil
	}
	nodes, err := r.rdb.SMembers(ctx, r.nodesKey()).Result()
	if err != nil {
		return unavailable("list nodes", err)
	}
	listed := make(map[string]bool, len(nodes))
	var errs []error
	for _, n := range nodes {
		listed[n] = true
		if n == r.node {
			continue
		}
		alive, err := r.rdb.Exists(ctx, r.aliveKey(n)).Result()
		if err != nil {
			errs = append(errs, unavailable("check liveness of "+n, err))
			continue // unknown, not dead
		}
		if alive > 0 {
			delete(missing, n)
			continue
		}
		first, seen := missing[n]
		if !seen {
			missing[n] = time.Now()
			continue
		}
		if time.Since(first) < r.ttl/2 {
			continue
		}
		tomb := tombstonePrefix + r.node + ":" + randomToken()
		won, err := r.rdb.SetNX(ctx, r.aliveKey(n), tomb, reapHold).Result()
		if err != nil {
			errs = append(errs, unavailable("claim dead node "+n, err))
			continue
		}
		delete(missing, n)
		if !won {
			continue // came back, or another survivor reaps it
		}
		err = r.reapNode(ctx, n)
		// Let the node register again at once should it be alive.
		if rerr := releaseScript.Run(ctx, r.rdb, []string{r.aliveKey(n)}, tomb).Err(); rerr != nil && err == nil {
			err = unavailable("release dead node", rerr)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("reap node %s: %w", n, err))
		}
	}
	for n := range missing {
		if !listed[n] {
			delete(missing, n)
		}
	}
	return errors.Join(errs...)
}

// reapNode publishes the wills of node's clients that are still online
// there and marks them offline. A will is claimed per connection before it
// is published (see redis_liveness.go), so a client of a node that comes
// back finds out its will is spent, and a reaper that fails half way can be
// run again. node may be this replica itself at start-up, for the clients
// of its previous run.
func (r *Redis) reapNode(ctx context.Context, node string) error {
	clients, err := r.rdb.HKeys(ctx, r.nodeKey(node)).Result()
	if err != nil {
		return unavailable("list dead node's clients", err)
	}
	if len(clients) > 0 {
		r.log.Info("reaping dead node", "dead", node, "clients", len(clients))
	}
	now := strconv.FormatInt(time.Now().Unix(), 10)
	for _, id := range clients {
		rec, err := r.rdb.HMGet(ctx, r.clientKey(id), "node", "state", "conn").Result()
		if err != nil {
			return unavailable("read client of dead node", err)
		}
		if s, _ := rec[0].(string); s != node {
			continue // reconnected elsewhere
		}
		if s, _ := rec[1].(string); s != "1" {
			continue // already offline
		}
		conn, _ := rec[2].(string)
		sess, err := r.rdb.HMGet(ctx, r.sessionKey(id), "will", "conn", "clean", "will_delay", "expiry", "owner").Result()
		if err != nil {
			return unavailable("read will", err)
		}
		willEnv, _ := sess[0].(string)
		owner, _ := sess[1].(string)
		if willEnv != "" && owner == conn && conn != "" {
			will := new(Message)
			user, _ := sess[5].(string)
			if _, err := DecodeEnvelope(willEnv, will); err != nil {
				r.log.Error("dropping stored will that does not decode", "client", id, "err", err)
			} else if !r.willAllowed(id, user, will) {
				// Not published, by this replica or any: the record's will
				// is cleared below.
			} else if won, err := r.claimWill(ctx, conn); err != nil {
				return err
			} else if delay := storedDelay(sess[3]); won && delay > 0 {
				// [MQTT-3.1.3-9] a delayed will waits its delay from now
				// (when its connection was found gone), for the client to
				// come back on any replica.
				if err := r.delayWill(ctx, id, will, delay); err != nil {
					r.retryWillAfter(id, will, delay)
				}
			} else if won {
				// Not replicated is still published: retrying would send it twice.
				if err := r.publish(ctx, will); err != nil && !isNotReplicated(err) {
					r.retryWill(id, "", will)
				} else {
					r.stats.willsSent.Add(1)
				}
			}
		}
		err = claimScript.Run(ctx, r.rdb, []string{r.clientKey(id)}, node, now).Err()
		if err != nil && err != redis.Nil {
			return unavailable("mark client of dead node offline", err)
		}
		if err == nil {
			// Offline now: its keys expire as if it had disconnected,
			// a persistent session's after its own interval.
			clean, _ := sess[2].(string)
			if err := r.expireOffline(ctx, id, clean != "0", storedDelay(sess[4])); err != nil {
				return err
			}
		}
		if conn != "" {
			if err := clearWillScript.Run(ctx, r.rdb, []string{r.sessionKey(id)}, conn).Err(); err != nil {
				return unavailable("clear will", err)
			}
		}
	}
	// What its members owed their shared subscription groups goes to
	// other members (redis_shareowed.go).
	if err := r.moveOwed(ctx, node); err != nil {
		return err
	}
	_, err = r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, r.nodeKey(node))
		if node != r.node {
			p.SRem(ctx, r.nodesKey(), node)
		}
		return nil
	})
	if err != nil {
		return unavailable("remove dead node", err)
	}
	return nil
}

// storedDelay reads a session hash's will_delay or expiry (ms), zero when
// absent.
func storedDelay(v any) time.Duration {
	str, _ := v.(string)
	ms, _ := strconv.ParseInt(str, 10, 64)
	return time.Duration(max(ms, 0)) * time.Millisecond
}

// expireOffline gives the keys of a client that went offline without a
// Detach (its replica died) the expiry a Detach would have: a clean
// session's record lingers briefly, a persistent session is kept for the
// interval it was claimed with (expiry, the session hash's field; 0 for a
// 3.1.1 session or an interval as long as the bound), at most
// -session-expiry [MQTT-3.1.2-23].
func (r *Redis) expireOffline(ctx context.Context, id string, clean bool, expiry time.Duration) error {
	ttl := r.sessionKeep(expiry)
	if !clean && ttl <= 0 {
		return nil
	}
	_, err := r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		if clean {
			p.PExpire(ctx, r.clientKey(id), cleanRecordTTL)
			return nil
		}
		for _, k := range []string{r.clientKey(id), r.subKey(id), r.sessionKey(id)} {
			p.PExpire(ctx, k, ttl)
		}
		return nil
	})
	if err != nil {
		return unavailable("expire keys of dead node's client", err)
	}
	return nil
}
