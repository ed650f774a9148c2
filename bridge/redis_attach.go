package bridge

import (
	"context"
	"fmt"
	"maps"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bridgemq/server/broker"
	"github.com/bridgemq/server/topics"
)

// casClaimScript makes a connection the owner of a client id if the record
// still names the connection the caller saw there (empty: none), so that of
// two CONNECTs racing on two replicas exactly one claims the id and the
// other takes it over [MQTT-3.1.4-2]. It also removes the record's expiry.
// The record also names the username that holds the id while it is
// connected, so that of two users racing for a new id the second is refused.
// It records the client's address (peerhost, EMQX's name; the real one
// behind a PROXY header), and when the connection claimed it, in unix
// milliseconds by its replica's clock (claimed_ms: after Redis lost its
// data, the older of two users' connections keeps the id, see
// reRegisterClientScript). KEYS[1] client; ARGV expected conn, conn, node,
// online_at, owner, peerhost, claimed_ms.
var casClaimScript = redis.NewScript(`
local cur = redis.call('HGET', KEYS[1], 'conn')
if (cur or '') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'state', '1', 'online_at', ARGV[4], 'node', ARGV[3], 'conn', ARGV[2], 'owner', ARGV[5], 'peerhost', ARGV[6], 'claimed_ms', ARGV[7])
redis.call('PERSIST', KEYS[1])
return 1
`)

// maxClaimAttempts bounds how often Attach re-reads a client record that
// other replicas keep claiming.
const maxClaimAttempts = 8

// Claim implements broker.Store.
//
// The client id is claimed in Redis by a compare-and-set on its record,
// after ending the connection the record names on another live node by a
// control message that node answers once the old connection has stored its
// session [MQTT-3.1.4-2] (the core has already ended one on this node). A
// CONNECT that lost a race to another replica takes the winner over and
// claims again. The stored session is returned with its subscriptions for
// the core to route; until Resume has replayed its streams, live messages
// for it wait in the gate (see Gate), the SessionGate this returns: c.
//
// With life.CleanStart the stored session is not read, and Resume deletes
// it [MQTT-3.1.2-4]; a persistent one is then stored anew from where the
// streams end. Without life.Persistent a resumed session ends with this
// connection [MQTT-3.1.2-23]: Resume removes it from Redis once it has
// been read, so that nothing of it outlives the connection.
func (r *Redis) Claim(ctx context.Context, clientID, owner string, sub Subscriber, life Lifetime, will *Message) (*StoredSession, broker.SessionGate, error) {
	// A Detach of this id that is still storing its session is waited
	// for, so that the claim reads what it stored.
	r.waitDetached(clientID)
	c := &redisClient{r: r, id: clientID, owner: owner, sub: sub, addr: sub.RemoteAddr(), conn: randomToken(),
		clean: !life.Persistent, cleanStart: life.CleanStart, subs: make(map[string]byte), will: willCopy(will),
		attached: make(chan struct{})}
	if life.Persistent {
		c.expiry = life.Expiry
	}
	got, err := r.claim(ctx, c)
	if err != nil {
		return nil, nil, fmt.Errorf("claim %q: %w", clientID, err)
	}
	var stored *StoredSession
	r.mu.Lock()
	defer r.mu.Unlock()
	if !c.cleanStart {
		var cursor [streamShards]streamID
		stored, cursor, c.hasCursor = r.parseSession(clientID, got.sub, got.session, c)
		c.replaying = c.hasCursor
		if c.hasCursor {
			floor := cursor
			c.floor = &floor
			c.cursor = &cursor
		}
	}
	if !c.hasCursor && !c.clean {
		// A new session starts where the streams ended before it was
		// claimed, never at this replica's own position, which may lie
		// far in the past for a shard it had no subscription on
		// [MQTT-4.5.0-1].
		floor := got.ends
		c.floor = &floor
	}
	if stored != nil {
		stored.Subscriptions = maps.Clone(c.subs)
		stored.Options = maps.Clone(c.opts)
	}
	return stored, c, nil
}

// Resume implements broker.Store: it stores the connection's record and
// will, and replays what a resumed session missed from its stored cursor,
// merged by stream id with the live messages the gate held back meanwhile,
// so that none is lost and none is returned twice.
func (r *Redis) Resume(ctx context.Context, clientID string, stored *StoredSession) (*StoredSession, error) {
	r.mu.Lock()
	c := r.conns[clientID]
	r.mu.Unlock()
	if c == nil {
		return nil, fmt.Errorf("resume %q: not claimed on this node", clientID)
	}
	out, err := r.resume(ctx, c, stored)
	if err != nil {
		return nil, fmt.Errorf("resume %q: %w", clientID, err)
	}
	r.mu.Lock()
	c.resumed = true
	r.mu.Unlock()
	close(c.attached)
	return out, nil
}

func (r *Redis) resume(ctx context.Context, c *redisClient, stored *StoredSession) (*StoredSession, error) {
	if !c.clean && !c.hasCursor && len(c.subs) > 0 {
		// Stored subscriptions without a cursor: they begin now.
		if err := r.startFloor(ctx, c); err != nil {
			return nil, err
		}
	}
	var loaded *[streamShards]streamID
	if c.hasCursor {
		loaded = c.cursor
	}
	if err := r.claimRecord(ctx, c, c.will, loaded); err != nil {
		return nil, err
	}
	if c.cleanStart || stored == nil {
		r.endReplay(c, nil)
		return nil, nil
	}
	if c.hasCursor {
		replayed, ends, err := r.replaySession(ctx, c, *c.cursor)
		if err != nil {
			return nil, err
		}
		stored.Queued = append(stored.Queued, replayed...)
		stored.Queued = append(stored.Queued, r.endReplay(c, &ends)...)
	}
	if c.clean {
		// Resumed by a connection with which it ends [MQTT-3.1.2-5]
		// [MQTT-3.1.2-23]: all of it is with the connection now.
		if err := r.dropStored(ctx, c); err != nil {
			return nil, err
		}
	}
	stored.Queued = r.queue.Bound(stored.Queued)
	return stored, nil
}

// dropStored removes from Redis the stored state and subscriptions of the
// session c resumed and ends with its connection (5.0 Clean Start 0 with
// a Session Expiry Interval of 0): read by Claim and replayed, they live
// in the connection now, and nothing of the session may come back after
// it [MQTT-3.1.2-23], whether the connection detaches or its replica dies.
// It runs after the replay, so that a failed attach before it leaves the
// session stored as Claim found it.
func (r *Redis) dropStored(ctx context.Context, c *redisClient) error {
	_, err := r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.HDel(ctx, r.sessionKey(c.id), "state", "cursor", "stored_at", "expiry")
		p.Del(ctx, r.subKey(c.id))
		return nil
	})
	if err != nil {
		return unavailable("drop resumed session", err)
	}
	return nil
}

// Abandon implements broker.Store: the connection that claimed clientID
// leaves the bridge, and its client record goes offline, so that the next
// CONNECT need not wait for a takeover nobody can answer. The session
// stays stored as Claim found it.
func (r *Redis) Abandon(ctx context.Context, clientID string) {
	r.mu.Lock()
	c := r.conns[clientID]
	if c == nil || c.resumed {
		r.mu.Unlock()
		return
	}
	delete(r.conns, clientID)
	r.mu.Unlock()
	close(c.attached)
	now := strconv.FormatInt(time.Now().Unix(), 10)
	if err := detachScript.Run(context.WithoutCancel(ctx), r.rdb, []string{r.clientKey(clientID)}, c.conn, now, r.recordTTL(nil)).Err(); err != nil {
		r.log.Warn("client record not marked offline after failed attach", "client", clientID, "err", err)
	}
}

// claimRead is what Attach read in the round trip that preceded its claim:
// the session stored for the client id, and the streams' ends.
type claimRead struct {
	sub, session map[string]string
	ends         [streamShards]streamID
}

// claim makes c the owner of its client id in Redis, ending whichever
// connection owned it, and returns what was stored for the id when the
// claim succeeded. It refuses with ErrNotOwner a client id whose session
// belongs to another user, before anything is touched.
func (r *Redis) claim(ctx context.Context, c *redisClient) (*claimRead, error) {
	// tried is the connection a takeover was asked of; orphan, the one
	// whose node could not answer (dead, or too slow): its will is then
	// published here once the id is ours, as a takeover publishes it.
	// unanswered is the node of orphan when it was alive but did not
	// answer: it is asked again once the id is ours (repeatTakeover).
	var tried, orphan, unanswered string
	for attempt := 0; attempt < maxClaimAttempts; attempt++ {
		var recCmd, subCmd, sessCmd *redis.MapStringStringCmd
		var endCmds [streamShards]*redis.XMessageSliceCmd
		readRecord := func(ctx context.Context, p redis.Pipeliner) {
			recCmd = p.HGetAll(ctx, r.clientKey(c.id))
		}
		if r.bus != nil {
			// In Redis Cluster the client record and the session are on
			// different masters, which one pipeline reads at once: it
			// could read the session before a connection leaving on
			// another replica stored it, and the record after that
			// connection went offline, and so resume the session from a
			// cursor it had passed. The record is read first, in a round
			// trip of its own: once it says offline, the session read
			// after it is the one stored (storeDetach stores the session
			// before it marks the client offline). One Redis runs the
			// pipeline below in order, record first.
			if err := r.batch.pipelined(ctx, readRecord); err != nil {
				return nil, unavailable("read client record", err)
			}
		}
		err := r.batch.pipelined(ctx, func(ctx context.Context, p redis.Pipeliner) {
			if r.bus == nil {
				readRecord(ctx, p)
			}
			sessCmd = p.HGetAll(ctx, r.sessionKey(c.id))
			if !c.cleanStart {
				subCmd = p.HGetAll(ctx, r.subKey(c.id))
			}
			if !c.cleanStart || !c.clean {
				for s := range streamShards {
					endCmds[s] = p.XRevRangeN(ctx, r.streamKey(s), "+", "-", 1)
				}
			}
		})
		if err != nil {
			return nil, unavailable("read client record", err)
		}
		got := &claimRead{session: sessCmd.Val()}
		if prev, ok := got.session["owner"]; ok && prev != c.owner {
			return nil, fmt.Errorf("%w: user %q may not use the session of user %q", ErrNotOwner, c.owner, prev)
		}
		rec := recCmd.Val()
		if prev, ok := rec["owner"]; ok && rec["state"] == "1" && prev != c.owner {
			return nil, fmt.Errorf("%w: user %q may not take over the connection of user %q", ErrNotOwner, c.owner, prev)
		}
		if rec["state"] == "1" && rec["node"] != "" && rec["node"] != r.node && rec["conn"] != tried {
			// End it, then read again what it stored.
			res, err := r.takeOverRemote(ctx, rec["node"], c.id, rec["conn"])
			if err != nil {
				return nil, err
			}
			tried = rec["conn"]
			if res != takeoverAcked {
				orphan, unanswered = tried, ""
				if res == takeoverUnanswered {
					unanswered = rec["node"]
				}
			}
			continue
		}
		if subCmd != nil {
			got.sub = subCmd.Val()
		}
		for s, cmd := range endCmds {
			if cmd == nil {
				continue
			}
			if e := cmd.Val(); len(e) > 0 {
				if got.ends[s], err = parseStreamID(e[0].ID); err != nil {
					return nil, fmt.Errorf("read stream ends: %w", err)
				}
			}
		}
		// Registered before the claim: once Redis names this connection,
		// a takeover for it may arrive at once, and must wait for this
		// attach (c.attached) rather than find nothing to end.
		r.mu.Lock()
		r.conns[c.id] = c
		r.mu.Unlock()
		now := strconv.FormatInt(time.Now().Unix(), 10)
		won, err := r.claimID(ctx, c, rec["conn"], now)
		if err == nil && won == 1 {
			if orphan != "" && orphan == rec["conn"] && got.session["conn"] == orphan {
				r.publishOrphanWill(c.id, got.session["owner"], orphan, got.session["will"], got.session["will_delay"])
			}
			if unanswered != "" {
				r.repeatTakeover(unanswered, c.id, orphan)
			}
			return got, nil
		}
		r.mu.Lock()
		if r.conns[c.id] == c {
			delete(r.conns, c.id)
		}
		r.mu.Unlock()
		if err != nil {
			return nil, unavailable("claim client record", err)
		}
		r.stats.claimConflicts.Add(1)
	}
	return nil, fmt.Errorf("claim client record: still changing hands after %d attempts: %w", maxClaimAttempts, ErrUnavailable)
}

// claimID runs casClaimScript for c, in a shared pipeline: c's connection
// becomes the owner of its client id if the record still names prev.
func (r *Redis) claimID(ctx context.Context, c *redisClient, prev, now string) (int, error) {
	c.claimedMS = time.Now().UnixMilli()
	cmd, err := r.batch.script(ctx, casClaimScript, []string{r.clientKey(c.id)}, prev, c.conn, r.node, now, c.owner, c.addr, c.claimedMS)
	if err != nil {
		return 0, err
	}
	return cmd.Int()
}

// startFloor raises c's floor to every stream's current end. The barrier
// after reading the ends makes sure that every message up to them has been
// through this replica's reader, so that a cursor at the floor skips
// nothing c's subscriptions took.
func (r *Redis) startFloor(ctx context.Context, c *redisClient) error {
	ends, err := r.streamEnds(ctx)
	if err != nil {
		return err
	}
	if err := r.barrier(ctx); err != nil {
		return err
	}
	r.mu.Lock()
	if c.floor == nil {
		c.floor = new([streamShards]streamID)
	}
	raise(c.floor, &ends)
	c.checkGen = r.seenGen - 1 // the next checkpoint stores the raised floor
	r.mu.Unlock()
	return nil
}

// parseSession reads a persistent session's stored subscriptions (sub)
// into c's subs and opts, and its stored state (session). stored is nil
// when nothing is stored.
func (r *Redis) parseSession(clientID string, sub, h map[string]string, c *redisClient) (stored *StoredSession, cursor [streamShards]streamID, hasCursor bool) {
	for f, v := range sub {
		q, o, err := decodeSubscription(v)
		if err != nil || topics.ValidateFilter(f) != nil {
			r.log.Error("skipping malformed stored subscription", "client", clientID, "filter", f, "qos", v)
			continue
		}
		c.subs[f] = q
		c.setOptions(f, o)
	}
	if ms, err := strconv.ParseInt(h["stored_at"], 10, 64); err == nil && ms > 0 {
		// What the session held when it was stored reached it (or is in
		// its state, or after its cursor): an old message published again
		// (after Redis restarted empty) must not reach it once more
		// through a restored filter, whichever replica it resumes on.
		c.storedAt = time.UnixMilli(ms)
	}
	if len(c.subs) == 0 && h["state"] == "" && h["cursor"] == "" {
		return nil, cursor, false
	}
	stored = &StoredSession{}
	if st := h["state"]; st != "" {
		if err := decodeSessionState(st, stored); err != nil {
			r.log.Error("discarding unreadable session state", "client", clientID, "err", err)
			stored = &StoredSession{}
		}
	}
	stored.Queued = r.queue.DropExpired(stored.Queued)
	if cs := h["cursor"]; cs != "" {
		var err error
		if cursor, err = decodeCursor(cs); err != nil {
			r.log.Error("ignoring unreadable session cursor", "client", clientID, "err", err)
			return stored, cursor, false
		}
		hasCursor = true
	}
	return stored, cursor, hasCursor
}

// claimRecord writes the session's owner, connection and will, and the
// node's client index, for the connection that claimed the client id.
func (r *Redis) claimRecord(ctx context.Context, c *redisClient, will *Message, loaded *[streamShards]streamID) error {
	now := time.Now()
	// A resumed session keeps the cursor it was stored with until its
	// connection ends cleanly: what follows it may still be unacknowledged.
	// A new session starts at its floor, where the streams ended when it
	// began. This replica's position may lag behind a cursor written
	// elsewhere, so it must never replace a loaded one.
	var cursor [streamShards]streamID
	if loaded != nil {
		cursor = *loaded
	} else {
		r.mu.Lock()
		cursor = r.cursorLocked(c)
		r.mu.Unlock()
	}
	var cancelWill *redis.IntCmd
	err := r.batch.pipelined(ctx, func(ctx context.Context, p redis.Pipeliner) {
		sk := r.sessionKey(c.id)
		if c.cleanStart {
			// [MQTT-3.1.2-4] [MQTT-3.1.2-6] Clean Start discards any
			// previous session.
			p.Del(ctx, r.subKey(c.id))
			p.Del(ctx, sk)
		}
		fields := []any{"conn", c.conn, "clean", boolField(c.clean), "owner", c.owner}
		if !c.clean {
			// If this node dies, the next connection replays from here,
			// and the session is kept for its own interval (expireOffline).
			fields = append(fields, "cursor", encodeCursor(&cursor))
			if c.expiry > 0 {
				fields = append(fields, "expiry", c.expiry.Milliseconds())
			}
		}
		if c.clean || c.expiry <= 0 {
			p.HDel(ctx, sk, "expiry")
		}
		if will != nil {
			// will_delay is what a survivor waits before publishing the
			// will of a connection whose replica died (ms; 0: at once).
			fields = append(fields, "will", AppendEnvelope(nil, will, ""), "will_delay", will.WillDelay.Milliseconds())
		} else {
			p.HDel(ctx, sk, "will")
		}
		p.HSet(ctx, sk, fields...)
		p.Persist(ctx, sk)
		if !c.clean {
			// A session that ends with its connection keeps the expiry of
			// what it resumed until Resume drops it (dropStored).
			p.Persist(ctx, r.subKey(c.id))
		}
		p.HSet(ctx, r.nodeKey(r.node), c.id, strconv.FormatInt(now.Unix(), 10))
		// A new connection before a delayed will was due: it is not sent
		// [MQTT-3.1.3-9]. Cancelled here, in the same round trip, once the
		// connection is sure to attach (an attach abandoned after Claim
		// leaves the will as it found it).
		cancelWill = p.ZRem(ctx, r.delayedWillsKey(), c.id)
	})
	if err != nil {
		return unavailable("write client record", err)
	}
	if cancelWill.Val() > 0 {
		r.stats.willsCancelled.Add(1)
		if err := r.rdb.Del(ctx, r.delayedWillKey(c.id)).Err(); err != nil {
			r.log.Warn("cancelled delayed will not removed; it expires an hour after it was due", "client", c.id, "err", err)
		}
	}
	return nil
}

func boolField(b bool) string {
	if b {
		return "1"
	}
	return "0"
}
