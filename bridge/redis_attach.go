package bridge

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bridgemq/server/topics"
)

// casClaimScript makes a connection the owner of a client id if the record
// still names the connection the caller saw there (empty: none), so that of
// two CONNECTs racing on two replicas exactly one claims the id and the
// other takes it over [MQTT-3.1.4-2]. It also removes the record's expiry.
// The record also names the username that holds the id while it is
// connected, so that of two users racing for a new id the second is refused.
// KEYS[1] client; ARGV expected conn, conn, node, online_at, owner.
var casClaimScript = redis.NewScript(`
local cur = redis.call('HGET', KEYS[1], 'conn')
if (cur or '') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'state', '1', 'online_at', ARGV[4], 'node', ARGV[3], 'conn', ARGV[2], 'owner', ARGV[5])
redis.call('PERSIST', KEYS[1])
return 1
`)

// maxClaimAttempts bounds how often Attach re-reads a client record that
// other replicas keep claiming.
const maxClaimAttempts = 8

// Attach implements Bridge.
//
// The client id is first claimed in Redis by a compare-and-set on its
// record, after ending the connection the record names: on this node by
// calling its TakeOver, on another live node by a control message that node
// answers once the old connection has stored its session [MQTT-3.1.4-2]. A
// CONNECT that lost a race to another replica takes the winner over and
// claims again. A persistent session then gets its subscriptions routed
// here before its streams are replayed from the stored cursor, and live
// messages that race with the replay are held back and merged by stream id,
// so that none is lost and none is returned twice.
func (r *Redis) Attach(ctx context.Context, clientID, owner string, sub Subscriber, clean bool, will *Message) (*StoredSession, error) {
	unlock := r.lockClient(clientID)
	defer unlock()
	r.mu.Lock()
	local := r.clients[clientID]
	r.mu.Unlock()
	if local != nil && local.owner != owner {
		// Refused before anything is touched, the live connection included.
		return nil, fmt.Errorf("attach %q: %w: user %q may not take over the connection of user %q", clientID, ErrNotOwner, owner, local.owner)
	}
	if err := r.takeOverLocal(clientID); err != nil {
		return nil, err
	}
	c := &redisClient{id: clientID, owner: owner, sub: sub, conn: randomToken(), clean: clean, subs: make(map[string]byte), will: willCopy(will)}
	got, err := r.claim(ctx, c)
	if err != nil {
		return nil, fmt.Errorf("attach %q: %w", clientID, err)
	}
	defer func() {
		r.mu.Lock()
		delete(r.claiming, clientID)
		r.mu.Unlock()
	}()
	stored, err := r.attachClaimed(ctx, c, got, will)
	if err != nil {
		// Leave the record offline so the next CONNECT need not wait for
		// a takeover nobody can answer.
		now := strconv.FormatInt(time.Now().Unix(), 10)
		_ = detachScript.Run(context.WithoutCancel(ctx), r.rdb, []string{r.clientKey(clientID)}, c.conn, now, r.recordTTL(false)).Err()
		return nil, fmt.Errorf("attach %q: %w", clientID, err)
	}
	return stored, nil
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
	var tried, orphan string
	for attempt := 0; attempt < maxClaimAttempts; attempt++ {
		var recCmd, subCmd, sessCmd *redis.MapStringStringCmd
		var endCmds [streamShards]*redis.XMessageSliceCmd
		_, err := r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			recCmd = p.HGetAll(ctx, r.clientKey(c.id))
			sessCmd = p.HGetAll(ctx, r.sessionKey(c.id))
			if !c.clean {
				subCmd = p.HGetAll(ctx, r.subKey(c.id))
				for s := range streamShards {
					endCmds[s] = p.XRevRangeN(ctx, r.streamKey(s), "+", "-", 1)
				}
			}
			return nil
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
			acked, err := r.takeOverRemote(ctx, rec["node"], c.id, rec["conn"])
			if err != nil {
				return nil, err
			}
			tried = rec["conn"]
			if !acked {
				orphan = tried
			}
			continue
		}
		if !c.clean {
			got.sub = subCmd.Val()
			for s, cmd := range endCmds {
				if e := cmd.Val(); len(e) > 0 {
					if got.ends[s], err = parseStreamID(e[0].ID); err != nil {
						return nil, fmt.Errorf("read stream ends: %w", err)
					}
				}
			}
		}
		// Marked before the claim: once Redis names this connection, a
		// takeover for it may arrive at once, and must wait for this
		// Attach rather than find nothing to end.
		r.mu.Lock()
		r.claiming[c.id] = c.conn
		r.mu.Unlock()
		now := strconv.FormatInt(time.Now().Unix(), 10)
		won, err := casClaimScript.Run(ctx, r.rdb, []string{r.clientKey(c.id)}, rec["conn"], c.conn, r.node, now, c.owner).Int()
		if err == nil && won == 1 {
			if orphan != "" && orphan == rec["conn"] && got.session["conn"] == orphan {
				r.publishOrphanWill(c.id, orphan, got.session["will"])
			}
			return got, nil
		}
		r.mu.Lock()
		delete(r.claiming, c.id)
		r.mu.Unlock()
		if err != nil {
			return nil, unavailable("claim client record", err)
		}
		r.stats.claimConflicts.Add(1)
	}
	return nil, fmt.Errorf("claim client record: still changing hands after %d attempts: %w", maxClaimAttempts, ErrUnavailable)
}

// attachClaimed routes the subscriptions of the session c has claimed,
// stores its connection and replays what it missed.
func (r *Redis) attachClaimed(ctx context.Context, c *redisClient, got *claimRead, will *Message) (*StoredSession, error) {
	var stored *StoredSession
	var cursor [streamShards]streamID
	hasCursor := false
	if !c.clean {
		stored, cursor, hasCursor = r.parseSession(c.id, got.sub, got.session, c.subs)
		c.replaying = hasCursor
		c.floor = cursor
		if !hasCursor {
			// A new session starts where the streams ended before it was
			// claimed, never at this replica's own position, which may
			// lie far in the past for a shard it had no subscription on
			// [MQTT-4.5.0-1].
			c.floor = got.ends
		}
	}
	if err := r.register(ctx, c); err != nil {
		return nil, err
	}
	if !c.clean && !hasCursor && len(c.subs) > 0 {
		// Stored subscriptions without a cursor: they begin now.
		if err := r.startFloor(ctx, c); err != nil {
			r.forget(ctx, c)
			return nil, err
		}
	}
	var loaded *[streamShards]streamID
	if hasCursor {
		loaded = &cursor
	}
	if err := r.claimRecord(ctx, c, will, loaded); err != nil {
		r.forget(ctx, c)
		return nil, err
	}
	if c.clean || stored == nil {
		r.endReplay(c, nil)
		return nil, nil
	}
	if hasCursor {
		replayed, ends, err := r.replaySession(ctx, c, cursor)
		if err != nil {
			r.forget(ctx, c)
			return nil, err
		}
		stored.Queued = append(stored.Queued, replayed...)
		stored.Queued = append(stored.Queued, r.endReplay(c, &ends)...)
	}
	stored.Queued = r.queue.Bound(stored.Queued)
	stored.Subscriptions = make(map[string]byte, len(c.subs))
	for f, q := range c.subs {
		stored.Subscriptions[f] = q
	}
	return stored, nil
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
	raise(&c.floor, &ends)
	c.checkGen = r.seenGen - 1 // the next checkpoint stores the raised floor
	r.mu.Unlock()
	return nil
}

// lockClient serialises Attach for one client id on this node.
func (r *Redis) lockClient(clientID string) (unlock func()) {
	r.attachMu.Lock()
	l := r.attaches[clientID]
	if l == nil {
		l = &clientLock{}
		r.attaches[clientID] = l
	}
	l.refs++
	r.attachMu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		r.attachMu.Lock()
		if l.refs--; l.refs == 0 {
			delete(r.attaches, clientID)
		}
		r.attachMu.Unlock()
	}
}

// clientLock is a per-client-id mutex, dropped when nobody holds or waits.
type clientLock struct {
	mu   sync.Mutex
	refs int // guarded by Redis.attachMu
}

// parseSession reads a persistent session's stored subscriptions (sub)
// into subs and its stored state (session). stored is nil when nothing is
// stored.
func (r *Redis) parseSession(clientID string, sub, h map[string]string, subs map[string]byte) (stored *StoredSession, cursor [streamShards]streamID, hasCursor bool) {
	for f, q := range sub {
		n, err := strconv.Atoi(q)
		if err != nil || n < 0 || n > 2 || topics.ValidateFilter(f) != nil {
			r.log.Error("skipping malformed stored subscription", "client", clientID, "filter", f, "qos", q)
			continue
		}
		subs[f] = byte(n)
	}
	if len(subs) == 0 && h["state"] == "" && h["cursor"] == "" {
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

// register makes c a local client and routes its subscriptions, returning
// once Redis routes them here. Routing goes in chunks (see route), so a
// session with many filters never holds up other clients' deliveries;
// while it routes, live messages for c wait in c.pending (a resumed
// session) or reach it through the filters routed so far, as if they had
// been subscribed one by one.
func (r *Redis) register(ctx context.Context, c *redisClient) error {
	r.mu.Lock()
	r.clients[c.id] = c
	filters := filterList(c.subs)
	r.mu.Unlock()
	changed, err := r.route(ctx, c, filters)
	if err == nil && changed {
		err = r.barrier(ctx)
	}
	if err != nil {
		r.forget(ctx, c)
		return err
	}
	return nil
}

// forget undoes register after a failed Attach.
func (r *Redis) forget(ctx context.Context, c *redisClient) {
	r.mu.Lock()
	if r.clients[c.id] != c {
		r.mu.Unlock()
		return
	}
	delete(r.clients, c.id)
	filters := filterList(c.subs)
	r.mu.Unlock()
	if err := r.unroute(ctx, c, filters); err != nil {
		r.log.Warn("unsubscribe after failed attach", "client", c.id, "err", err)
	}
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
	_, err := r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		sk := r.sessionKey(c.id)
		if c.clean {
			// [MQTT-3.1.2-6] a clean session discards any previous one.
			p.Del(ctx, r.subKey(c.id))
			p.Del(ctx, sk)
		}
		fields := []any{"conn", c.conn, "clean", boolField(c.clean), "owner", c.owner}
		if !c.clean {
			// If this node dies, the next connection replays from here.
			fields = append(fields, "cursor", encodeCursor(&cursor))
		}
		if will != nil {
			fields = append(fields, "will", AppendEnvelope(nil, will, ""))
		} else {
			p.HDel(ctx, sk, "will")
		}
		p.HSet(ctx, sk, fields...)
		p.Persist(ctx, sk)
		p.Persist(ctx, r.subKey(c.id))
		p.HSet(ctx, r.nodeKey(r.node), c.id, strconv.FormatInt(now.Unix(), 10))
		return nil
	})
	if err != nil {
		return unavailable("write client record", err)
	}
	return nil
}

func boolField(b bool) string {
	if b {
		return "1"
	}
	return "0"
}
