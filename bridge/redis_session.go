package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bridgemq/server/topics"
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
// outlives it: a clean session's a few minutes, a persistent session's as
// long as the session, so that no key is left forever.
func (r *Redis) recordTTL(persistent bool) string {
	if !persistent {
		return strconv.FormatInt(cleanRecordTTL.Milliseconds(), 10)
	}
	return strconv.FormatInt(r.sessionTTL.Milliseconds(), 10)
}

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

// takeoverPoll is how often a takeover that waits for its answer also
// reads the client record, in case the answer was lost.
const takeoverPoll = 50 * time.Millisecond

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
	stored.Queued = r.boundQueue(stored.Queued)
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

// takeOverLocal ends the connection of clientID on this node, outside the
// bridge's locks since its Detach takes them.
func (r *Redis) takeOverLocal(clientID string) error {
	for attempt := 0; ; attempt++ {
		r.mu.Lock()
		old := r.clients[clientID]
		r.mu.Unlock()
		if old == nil {
			r.waitDetached(clientID)
			return nil
		}
		if attempt > 3 {
			return fmt.Errorf("attach %q: previous connection did not detach", clientID)
		}
		r.stats.takeovers.Add(1)
		old.sub.TakeOver()
	}
}

// waitDetached waits, at most takeoverTimeout, for a Detach of clientID
// that is storing its session on this node.
func (r *Redis) waitDetached(clientID string) {
	r.mu.Lock()
	done := r.detaching[clientID]
	r.mu.Unlock()
	if done == nil {
		return
	}
	t := time.NewTimer(takeoverTimeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		r.log.Warn("session store still running; proceeding", "client", clientID)
	}
}

// control is a message on a node's control channel.
type control struct {
	Op     string `json:"op"` // "takeover" or "ack"
	Client string `json:"client,omitempty"`
	Conn   string `json:"conn,omitempty"`  // the connection to end; empty: any
	Reply  string `json:"reply,omitempty"` // node to acknowledge to
	Token  string `json:"token"`
}

// takeOverRemote asks node to end its connection of clientID and waits
// for the acknowledgement, at most takeoverTimeout. A node whose liveness
// key is gone cannot answer; the reaper publishes its clients' wills.
func (r *Redis) takeOverRemote(ctx context.Context, node, clientID, conn string) (acked bool, err error) {
	held, err := r.rdb.Get(ctx, r.aliveKey(node)).Result()
	if err != nil && err != redis.Nil {
		return false, unavailable("check node liveness", err)
	}
	if held == "" || strings.HasPrefix(held, tombstonePrefix) {
		return false, nil // dead, or being reaped: nobody there to answer
	}
	token := randomToken()
	ack, done := r.waitFor(r.acks, token)
	defer done()
	b, _ := json.Marshal(control{Op: "takeover", Client: clientID, Conn: conn, Reply: r.node, Token: token})
	if err := r.rdb.Publish(ctx, r.nodeCtlChannel(node), b).Err(); err != nil {
		return false, unavailable("send takeover", err)
	}
	r.stats.takeovers.Add(1)
	t := time.NewTimer(takeoverTimeout)
	defer t.Stop()
	// The answer travels by pub/sub, which loses what is published while
	// this replica's subscription connection is being re-established (a
	// Redis restart): the old connection's end also shows in the client
	// record, which Detach marks offline once the session is stored.
	poll := time.NewTicker(takeoverPoll)
	defer poll.Stop()
	for {
		select {
		case <-ack:
			return true, nil
		case <-poll.C:
			rec, err := r.rdb.HMGet(ctx, r.clientKey(clientID), "state", "conn").Result()
			if err == nil && (rec[0] != "1" || rec[1] != conn) {
				return true, nil
			}
		case <-t.C:
			r.log.Warn("takeover not acknowledged; proceeding", "client", clientID, "node", node)
			return false, nil
		case <-ctx.Done():
			return false, fmt.Errorf("wait for takeover by %s: %w", node, ctx.Err())
		}
	}
}

// publishOrphanWill publishes the stored will of connection conn, taken
// over on a node that could not answer (dead, or stalled), as a takeover
// does [MQTT-3.1.2-8]: once, claimed by connection like every will, so
// that neither a reaper nor the old node, should it come back, sends it
// again; in the background, retried until Redis takes it.
func (r *Redis) publishOrphanWill(clientID, conn, env string) {
	if env == "" {
		return
	}
	will := new(Message)
	if _, err := DecodeEnvelope(env, will); err != nil {
		r.log.Error("dropping stored will that does not decode", "client", clientID, "err", err)
		return
	}
	r.retryWill(clientID, conn, will)
}

// control handles a message on this node's control channel. It runs on the
// reader goroutine, so a takeover runs on its own.
func (r *Redis) control(payload string) {
	var c control
	if err := json.Unmarshal([]byte(payload), &c); err != nil {
		r.log.Error("dropping malformed control message", "err", err)
		return
	}
	switch c.Op {
	case "ack":
		r.signal(r.acks, c.Token)
	case "takeover":
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			r.mu.Lock()
			old := r.clients[c.Client]
			claimed := r.claiming[c.Client]
			r.mu.Unlock()
			if old == nil && c.Conn != "" && c.Conn == claimed {
				// The connection asked for has claimed the id and is still
				// attaching: wait for its Attach (which waits for no other
				// node once it has claimed), then end it.
				r.lockClient(c.Client)()
				r.mu.Lock()
				old = r.clients[c.Client]
				r.mu.Unlock()
			}
			if old != nil && (c.Conn == "" || c.Conn == old.conn) {
				old.sub.TakeOver() // returns after its Detach stored the session
			} else {
				r.waitDetached(c.Client)
			}
			b, _ := json.Marshal(control{Op: "ack", Token: c.Token})
			ctx, cancel := context.WithTimeout(r.ctx, takeoverTimeout)
			defer cancel()
			if err := r.rdb.Publish(ctx, r.nodeCtlChannel(c.Reply), b).Err(); err != nil {
				r.log.Warn("takeover acknowledgement failed", "client", c.Client, "err", err)
			}
		}()
	}
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
	stored.Queued = r.dropExpired(stored.Queued)
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

// replaySession reads every shard's stream after cursor and returns the
// messages matching c's subscriptions, at the QoS to send, with the last
// stream id read per shard. QoS 0 messages are not kept for an offline
// session. Shards trimmed past cursor are counted (countTrimmed).
func (r *Redis) replaySession(ctx context.Context, c *redisClient, cursor [streamShards]streamID) ([]Delivery, [streamShards]streamID, error) {
	r.countTrimmed(ctx, c.id, cursor)
	var out []Delivery
	ends := cursor
	cutoff := r.expiryCutoff()
	seen := make(map[ID]struct{}) // a Redis failover republishes messages the streams may still hold
	err := r.readStreams(ctx, cursor, func(s int, m *Message, sid streamID) {
		ends[s] = sid
		granted, ok := highestGrant(c.subs, m.Topic)
		if !ok {
			return
		}
		qos := min(granted, m.QoS)
		if qos == 0 {
			return
		}
		if !cutoff.IsZero() && m.Time.Before(cutoff) {
			r.stats.expired.Add(1)
			return
		}
		if _, dup := seen[m.ID]; dup {
			r.stats.deduplicated.Add(1)
			return
		}
		seen[m.ID] = struct{}{}
		out = append(out, Delivery{Message: m, QoS: qos})
	})
	if err != nil {
		return nil, ends, err
	}
	return out, ends, nil
}

// highestGrant returns the highest QoS among subs' filters matching topic.
// subs is only written by Subscribe, which waits for Attach to return.
func highestGrant(subs map[string]byte, topic string) (byte, bool) {
	var best byte
	found := false
	for f, q := range subs {
		if topics.Match(f, topic) {
			found = true
			best = max(best, q)
		}
	}
	return best, found
}

// endReplay switches c to live delivery: held-back messages the replay did
// not return are handed back to go after it, and live copies of replayed
// messages are skipped from now on. ends is nil when nothing was replayed.
func (r *Redis) endReplay(c *redisClient, ends *[streamShards]streamID) []Delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	var after []Delivery
	for _, p := range c.pending {
		if ends == nil || p.sid.after(ends[p.shard]) {
			after = append(after, p.d)
		}
	}
	if ends != nil {
		skip := *ends
		c.skip = &skip
	}
	c.pending = nil
	c.replaying = false
	return after
}

func (r *Redis) expiryCutoff() time.Time {
	if r.expiry <= 0 {
		return time.Time{}
	}
	return time.Now().Add(-r.expiry)
}

// dropExpired removes queued messages older than the message expiry.
func (r *Redis) dropExpired(q []Delivery) []Delivery {
	cutoff := r.expiryCutoff()
	if cutoff.IsZero() {
		return q
	}
	kept := q[:0]
	for _, d := range q {
		if d.Message.Time.Before(cutoff) {
			r.stats.expired.Add(1)
			continue
		}
		kept = append(kept, d)
	}
	return kept
}

// boundQueue keeps the newest MaxQueued messages and counts the rest: a
// session finds the most recent messages on return (as EMQX's queue does),
// and a session resumed after its replica died, whose replay starts at the
// last checkpoint, keeps the messages it had not yet acknowledged.
func (r *Redis) boundQueue(q []Delivery) []Delivery {
	if over := len(q) - r.maxQueued; over > 0 {
		r.stats.queuedDropped.Add(int64(over))
		return q[over:]
	}
	return q
}

// Detach implements Bridge. The stream cursor stored with a persistent
// session is this replica's last seen id per shard at the moment the
// connection stopped receiving: everything after it is found again on
// reconnect, everything before it was delivered or is in state.
func (r *Redis) Detach(ctx context.Context, clientID string, sub Subscriber, state *StoredSession) error {
	r.mu.Lock()
	c := r.clients[clientID]
	if c == nil || c.sub != sub {
		r.mu.Unlock()
		return nil // taken over: the new connection owns the record
	}
	delete(r.clients, clientID)
	done := make(chan struct{})
	r.detaching[clientID] = done
	defer func() {
		r.mu.Lock()
		if r.detaching[clientID] == done {
			delete(r.detaching, clientID)
		}
		r.mu.Unlock()
		close(done)
	}()
	cursor := r.cursorLocked(c)
	filters := filterList(c.subs)
	late := c.late
	for _, p := range c.pending {
		late = append(late, p.d)
	}
	r.mu.Unlock()
	// c is no longer a client: deliveries skip its remaining trie entries
	// while they are removed chunk by chunk, and a new connection with its
	// id waits for this Detach (r.detaching) before it routes anything.
	if err := r.unroute(ctx, c, filters); err != nil {
		r.log.Warn("unsubscribe on detach", "client", clientID, "err", err)
	}

	var st *StoredSession
	if state != nil {
		s := *state
		s.Queued = r.boundQueue(append(append([]Delivery(nil), state.Queued...), late...))
		st = &s
	}
	if err := r.storeDetach(ctx, c, st, &cursor); err != nil {
		// Redis refused or could not be reached: the connection is gone
		// all the same, so its records must follow, or its will would stay
		// armed for a reaper and its keys would never expire.
		r.retryDetach(c, st, cursor)
		return fmt.Errorf("detach %q: %w (retrying in the background)", clientID, err)
	}
	return nil
}

// storeDetach writes what the end of c's connection changes in Redis, each
// step guarded by c's connection id so that it touches nothing a newer
// connection owns. The will goes first: it is published by the caller when
// due, and otherwise must never be [MQTT-3.1.2-10]; removing it (DEL, HDEL)
// works even when Redis refuses writes that need memory. The session is
// then stored before the client is marked offline: a replica that sees it
// offline may load the session at once.
func (r *Redis) storeDetach(ctx context.Context, c *redisClient, st *StoredSession, cursor *[streamShards]streamID) error {
	clearWill := func() error {
		if err := clearWillScript.Run(ctx, r.rdb, []string{r.sessionKey(c.id)}, c.conn).Err(); err != nil {
			return unavailable("clear will", err)
		}
		return nil
	}
	if st == nil {
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
	owned, err := detachScript.Run(ctx, r.rdb, []string{r.clientKey(c.id)}, c.conn, now, r.recordTTL(st != nil)).Int()
	if err != nil {
		return unavailable("mark client offline", err)
	}
	if owned == 0 {
		return nil // taken over on another node
	}
	_, err = r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.HDel(ctx, r.nodeKey(r.node), c.id)
		if st == nil {
			p.Del(ctx, r.subKey(c.id))
			p.Del(ctx, r.sessionKey(c.id))
		}
		return nil
	})
	if err != nil {
		return unavailable("remove client from node index", err)
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
// live in different slots, go-redis runs one MULTI per slot: each key is
// still replaced whole.
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
	_, err = r.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, sk, "state", appendSessionState(nil, st), "cursor", encodeCursor(cursor), "clean", "0", "owner", c.owner)
		p.HDel(ctx, sk, "will")
		// The bridge's own record of the subscriptions is the truth.
		p.Del(ctx, r.subKey(c.id))
		if len(c.subs) > 0 {
			args := make([]any, 0, 2*len(c.subs))
			for f, q := range c.subs {
				args = append(args, f, int(q))
			}
			p.HSet(ctx, r.subKey(c.id), args...)
		}
		if r.sessionTTL > 0 {
			// [MQTT-3.1.2-4] kept while offline, here for as long as
			// -session-expiry allows, by Redis itself.
			p.PExpire(ctx, sk, r.sessionTTL)
			p.PExpire(ctx, r.subKey(c.id), r.sessionTTL)
		}
		return nil
	})
	if err != nil {
		return unavailable("store session", err)
	}
	return nil
}
