package bridge

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// detachScript marks a client offline only if the record still belongs to
// the connection that is detaching; a connection taken over elsewhere must
// not touch its successor's record. The record then expires after ARGV[3]
// milliseconds (0: never). KEYS[1] client; ARGV conn, offline_at, ttl.
var detachScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'conn') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'state', '0', 'offline_at', ARGV[2])
if tonumber(ARGV[3]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
return 1
`)

// recordTTL is how long the client record of a connection that ended
// outlives it: a clean session's (st nil) a few minutes, a persistent
// session's as long as the session, so that no key is left forever.
func (r *Redis) recordTTL(st *StoredSession) string {
	if st == nil {
		return strconv.FormatInt(cleanRecordTTL.Milliseconds(), 10)
	}
	return strconv.FormatInt(r.sessionKeep(st.Expiry).Milliseconds(), 10)
}

// sessionKeep is how long a persistent session whose own interval is
// expiry (0: none of its own) is kept offline: that interval
// [MQTT-3.1.2-23], at most SessionExpiry; 0 for ever.
func (r *Redis) sessionKeep(expiry time.Duration) time.Duration {
	ttl := r.sessionTTL
	if expiry > 0 && (ttl == 0 || expiry < ttl) {
		ttl = expiry
	}
	return ttl
}

// Leave implements broker.SessionGate: the connection stops receiving,
// under the core's delivery lock, and its session's cursor is taken now:
// this replica's last seen id per shard, raised by what the gate decided
// for it (cursorLocked). Everything after it is found again on reconnect;
// everything before it was delivered, is in the state the core saves next,
// or was never the session's.
func (c *redisClient) Leave() {
	r := c.r
	r.mu.Lock()
	defer r.mu.Unlock()
	clientID := c.id
	if r.conns[clientID] != c {
		return // abandoned, or its claim failed: nothing of it is stored
	}
	delete(r.conns, clientID)
	left := r.cursorLocked(c)
	if c.superseded {
		left = *c.cut
	}
	c.left = &left
	c.done = make(chan struct{})
	// A new connection with its id waits for Save (waitDetached) before
	// it claims anything.
	r.detaching[clientID] = c
}

// Save implements broker.Store: it stores what the end of the connection
// that left (Leave) changes in Redis. A nil state ends the session and
// removes what is stored for it. If Redis refuses, it keeps trying in the
// background and returns the first error.
func (r *Redis) Save(ctx context.Context, clientID string, state *StoredSession) error {
	r.mu.Lock()
	c := r.detaching[clientID]
	r.mu.Unlock()
	if c == nil {
		return nil // never claimed here: nothing of it is stored
	}
	defer func() {
		r.mu.Lock()
		if r.detaching[clientID] == c {
			delete(r.detaching, clientID)
		}
		r.mu.Unlock()
		close(c.done)
	}()
	var st *StoredSession
	if state != nil {
		s := *state
		st = &s
	}
	// A checkpoint that took this connection's cursor before it left
	// writes it first: the cursor stored here is the newer.
	r.checkpointMu.Lock()
	//lint:ignore SA2001 an empty critical section: waiting is the point
	r.checkpointMu.Unlock()
	if err := r.storeDetach(ctx, c, st, c.left); err != nil {
		// Redis refused or could not be reached: the connection is gone
		// all the same, so its records must follow, or its will would stay
		// armed for a reaper and its keys would never expire.
		r.retryDetach(c, st, *c.left)
		return fmt.Errorf("save session %q: %w (retrying in the background)", clientID, err)
	}
	return nil
}

// Enqueue implements broker.Store: never called, since the Redis store
// does not RoutesOffline: an offline session's messages are read from the
// streams when it returns.
func (r *Redis) Enqueue(string, Delivery) {}

// RoutesOffline implements broker.Store: false, the streams hold what an
// offline session misses.
func (r *Redis) RoutesOffline() bool { return false }

// storeDetach writes what the end of c's connection changes in Redis, each
// step guarded by c's connection id so that it touches nothing a newer
// connection owns. The will goes first: it is published by the caller when
// due, and otherwise must never be [MQTT-3.1.2-10]; removing it (DEL, HDEL)
// works even when Redis refuses writes that need memory. The session is
// then stored before the client is marked offline: a replica that sees it
// offline may load the session at once.
func (r *Redis) storeDetach(ctx context.Context, c *redisClient, st *StoredSession, cursor *[streamShards]streamID) error {
	clearWill := func() error {
		if _, err := r.batch.script(ctx, clearWillScript, []string{r.sessionKey(c.id)}, c.conn); err != nil {
			return unavailable("clear will", err)
		}
		return nil
	}
	if st == nil && !c.clean {
		// A session attached as persistent that ends with its connection
		// (an MQTT 5.0 Session Expiry Interval set to 0 by DISCONNECT):
		// its hash and subscriptions go before the client is marked
		// offline, as a stored session is written before, so that no
		// replica loads them in between.
		if err := r.endSession(ctx, c); err != nil {
			return err
		}
	} else if st == nil {
		// A clean session's hash, will included, goes at once.
		if err := clearWill(); err != nil {
			return err
		}
	} else if err := r.storeSession(ctx, c, st, cursor); err != nil {
		// storeSession drops the will with the rest; when Redis refuses
		// the state, the will still goes.
		return errors.Join(err, clearWill())
	}
	now := strconv.FormatInt(time.Now().Unix(), 10)
	cmd, err := r.batch.script(ctx, detachScript, []string{r.clientKey(c.id)}, c.conn, now, r.recordTTL(st))
	var owned int
	if err == nil {
		owned, err = cmd.Int()
	}
	if err != nil {
		return unavailable("mark client offline", err)
	}
	if owned == 0 {
		return nil // taken over on another node
	}
	err = r.batch.pipelined(ctx, func(ctx context.Context, p redis.Pipeliner) {
		p.HDel(ctx, r.nodeKey(r.node), c.id)
		if st == nil {
			p.Del(ctx, r.subKey(c.id))
			p.Del(ctx, r.sessionKey(c.id))
		}
	})
	if err != nil {
		return unavailable("remove client from node index", err)
	}
	return nil
}

// endSessionScript deletes a session's hash when the connection ARGV[1]
// still owns it.
var endSessionScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'conn') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
`)

// endSession removes what c's session stored, when c still owns it: the
// hash (will included), then the subscriptions. One key per call, so that
// it works in Redis Cluster, where the two keys are in different slots.
func (r *Redis) endSession(ctx context.Context, c *redisClient) error {
	owned, err := endSessionScript.Run(ctx, r.rdb, []string{r.sessionKey(c.id)}, c.conn).Int()
	if err != nil {
		return unavailable("end session", err)
	}
	if owned == 1 {
		if err := r.rdb.Del(ctx, r.subKey(c.id)).Err(); err != nil {
			return unavailable("end session subscriptions", err)
		}
	}
	return nil
}

// retryDetach repeats storeDetach in the background until Redis takes it or
// the bridge closes.
func (r *Redis) retryDetach(c *redisClient, st *StoredSession, cursor [streamShards]streamID) {
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		backoff := 100 * time.Millisecond
		for attempt := 1; ; attempt++ {
			select {
			case <-time.After(backoff):
			case <-r.ctx.Done():
				r.log.Error("connection end not stored: bridge closed while Redis refused it", "client", c.id, "attempts", attempt)
				return
			}
			backoff = min(2*backoff, 2*time.Second)
			ctx, cancel := context.WithTimeout(r.ctx, 5*time.Second)
			err := r.storeDetach(ctx, c, st, &cursor)
			cancel()
			if err == nil {
				r.log.Info("connection end stored after retrying", "client", c.id, "attempts", attempt)
				return
			}
		}
	}()
}

// storeSession writes a persistent session's state, cursor and
// subscriptions, and drops its will (the caller publishes one that is due),
// in one MULTI: a write Redis refuses (for example at maxmemory with
// noeviction) aborts the whole transaction and leaves the session stored
// before whole, never half replaced. In Redis Cluster, where the two keys
// live in different slots, each key has a MULTI of its own: each is still
// replaced whole.
//
// A connection whose session another connection has meanwhile claimed (it
// was taken over while this replica was unreachable) stores nothing: the
// session hash names its owner's connection, and the newer state wins.
func (r *Redis) storeSession(ctx context.Context, c *redisClient, st *StoredSession, cursor *[streamShards]streamID) error {
	sk := r.sessionKey(c.id)
	owner, err := r.rdb.HGet(ctx, sk, "conn").Result()
	if err != nil && err != redis.Nil {
		return unavailable("read session owner", err)
	}
	if owner != "" && owner != c.conn {
		r.log.Info("session not stored: taken over by another connection", "client", c.id)
		return nil
	}
	// [MQTT-3.1.2-4] kept while offline, here for as long as
	// -session-expiry (or the session's shorter interval) allows, by
	// Redis itself.
	ttl := r.sessionKeep(st.Expiry)
	hash := func(p redis.Pipeliner) {
		p.HSet(ctx, sk, "state", appendSessionState(nil, st), "cursor", encodeCursor(cursor), "clean", "0", "owner", c.owner,
			"stored_at", time.Now().UnixMilli())
		p.HDel(ctx, sk, "will")
		if ttl > 0 {
			p.PExpire(ctx, sk, ttl)
		}
	}
	subs := func(p redis.Pipeliner) {
		// The core's record of the subscriptions is the truth.
		p.Del(ctx, r.subKey(c.id))
		if len(st.Subscriptions) > 0 {
			p.HSet(ctx, r.subKey(c.id), subscriptionArgs(st.Subscriptions, st.Options)...)
		}
		if ttl > 0 {
			p.PExpire(ctx, r.subKey(c.id), ttl)
		}
	}
	if r.bus == nil {
		_, err = r.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
			hash(p)
			subs(p)
			return nil
		})
	} else {
		// Redis Cluster refuses a MULTI over two slots (CROSSSLOT), and
		// go-redis sends one: one transaction per key, subscriptions
		// first, as a single Redis would apply them.
		_, err = r.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
			subs(p)
			return nil
		})
		if err == nil {
			_, err = r.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
				hash(p)
				return nil
			})
		}
	}
	if err != nil {
		return unavailable("store session", err)
	}
	return nil
}
