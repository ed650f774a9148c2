package bridge

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bridgemq/server/topics"
)

// detachScript marks a client offline only if the record still belongs to
// the connection that is detaching; a connection taken over elsewhere must
// not touch its successor's record. KEYS[1] client; ARGV conn, offline_at.
var detachScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'conn') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'state', '0', 'offline_at', ARGV[2])
return 1
`)

// Attach implements Bridge.
//
// An existing connection is ended first: on this node by calling its
// TakeOver, on another live node by a control message that node answers
// once the old connection has stored its session [MQTT-3.1.4-2]. A
// persistent session then gets its subscriptions routed here before its
// streams are replayed from the stored cursor, and live messages that race
// with the replay are held back and merged by stream id, so that none is
// lost and none is returned twice.
func (r *Redis) Attach(ctx context.Context, clientID string, sub Subscriber, clean bool, will *Message) (*Session, error) {
	unlock := r.lockClient(clientID)
	defer unlock()
	if err := r.takeOverLocal(clientID); err != nil {
		return nil, err
	}
	rec, err := r.rdb.HGetAll(ctx, r.clientKey(clientID)).Result()
	if err != nil {
		return nil, fmt.Errorf("attach %q: %w", clientID, unavailable("read client record", err))
	}
	if rec["state"] == "1" && rec["node"] != "" && rec["node"] != r.node {
		if err := r.takeOverRemote(ctx, rec["node"], clientID); err != nil {
			return nil, fmt.Errorf("attach %q: %w", clientID, err)
		}
	}

	c := &redisClient{id: clientID, sub: sub, conn: randomToken(), clean: clean, subs: make(map[string]byte), will: willCopy(will)}
	var stored *Session
	var cursor [streamShards]streamID
	hasCursor := false
	if clean {
		// [MQTT-3.1.2-6] a clean session discards any previous one.
		// One key per DEL: in Redis Cluster the two live in different slots.
		_, err := r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			p.Del(ctx, r.subKey(clientID))
			p.Del(ctx, r.sessionKey(clientID))
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("attach %q: %w", clientID, unavailable("drop stored session", err))
		}
	} else {
		stored, cursor, hasCursor, err = r.loadSession(ctx, clientID, c.subs)
		if err != nil {
			return nil, fmt.Errorf("attach %q: %w", clientID, err)
		}
		c.replaying = hasCursor
	}

	if err := r.register(ctx, c); err != nil {
		return nil, fmt.Errorf("attach %q: %w", clientID, err)
	}
	var loaded *[streamShards]streamID
	if hasCursor {
		loaded = &cursor
	}
	if err := r.claimRecord(ctx, c, will, loaded); err != nil {
		r.forget(ctx, c)
		return nil, fmt.Errorf("attach %q: %w", clientID, err)
	}
	if clean || stored == nil {
		r.endReplay(c, nil)
		return nil, nil
	}
	if hasCursor {
		replayed, ends, err := r.replaySession(ctx, c, cursor)
		if err != nil {
			r.forget(ctx, c)
			return nil, fmt.Errorf("attach %q: %w", clientID, err)
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
	Reply  string `json:"reply,omitempty"` // node to acknowledge to
	Token  string `json:"token"`
}

// takeOverRemote asks node to end its connection of clientID and waits
// for the acknowledgement, at most takeoverTimeout. A node whose liveness
// key is gone cannot answer; the reaper publishes its clients' wills.
func (r *Redis) takeOverRemote(ctx context.Context, node, clientID string) error {
	alive, err := r.rdb.Exists(ctx, r.aliveKey(node)).Result()
	if err != nil {
		return unavailable("check node liveness", err)
	}
	if alive == 0 {
		return nil
	}
	token := randomToken()
	ack, done := r.waitFor(r.acks, token)
	defer done()
	b, _ := json.Marshal(control{Op: "takeover", Client: clientID, Reply: r.node, Token: token})
	if err := r.rdb.Publish(ctx, r.nodeCtlChannel(node), b).Err(); err != nil {
		return unavailable("send takeover", err)
	}
	r.stats.takeovers.Add(1)
	t := time.NewTimer(takeoverTimeout)
	defer t.Stop()
	select {
	case <-ack:
		return nil
	case <-t.C:
		r.log.Warn("takeover not acknowledged; proceeding", "client", clientID, "node", node)
		return nil
	case <-ctx.Done():
		return fmt.Errorf("wait for takeover by %s: %w", node, ctx.Err())
	}
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
			r.mu.Unlock()
			if old != nil {
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

// loadSession reads a persistent session's subscriptions into subs and its
// stored state. stored is nil when nothing is stored.
func (r *Redis) loadSession(ctx context.Context, clientID string, subs map[string]byte) (stored *Session, cursor [streamShards]streamID, hasCursor bool, err error) {
	var subCmd, sessCmd *redis.MapStringStringCmd
	_, err = r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		subCmd = p.HGetAll(ctx, r.subKey(clientID))
		sessCmd = p.HGetAll(ctx, r.sessionKey(clientID))
		return nil
	})
	if err != nil {
		return nil, cursor, false, unavailable("load session", err)
	}
	for f, q := range subCmd.Val() {
		n, err := strconv.Atoi(q)
		if err != nil || n < 0 || n > 2 || topics.ValidateFilter(f) != nil {
			r.log.Error("skipping malformed stored subscription", "client", clientID, "filter", f, "qos", q)
			continue
		}
		subs[f] = byte(n)
	}
	h := sessCmd.Val()
	if len(subs) == 0 && h["state"] == "" && h["cursor"] == "" {
		return nil, cursor, false, nil
	}
	stored = &Session{}
	if st := h["state"]; st != "" {
		if err := decodeSessionState(st, stored); err != nil {
			r.log.Error("discarding unreadable session state", "client", clientID, "err", err)
			stored = &Session{}
		}
	}
	stored.Queued = r.dropExpired(stored.Queued)
	if cs := h["cursor"]; cs != "" {
		if cursor, err = decodeCursor(cs); err != nil {
			r.log.Error("ignoring unreadable session cursor", "client", clientID, "err", err)
			return stored, cursor, false, nil
		}
		hasCursor = true
	}
	return stored, cursor, hasCursor, nil
}

// register makes c a local client and routes its subscriptions, returning
// once Redis routes them here.
func (r *Redis) register(ctx context.Context, c *redisClient) error {
	r.psMu.Lock()
	r.mu.Lock()
	r.clients[c.id] = c
	change := r.routeLocked(c)
	r.mu.Unlock()
	err := r.applyChange(ctx, change)
	r.psMu.Unlock()
	if err == nil && !change.Empty() {
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
	r.psMu.Lock()
	defer r.psMu.Unlock()
	r.mu.Lock()
	if r.clients[c.id] != c {
		r.mu.Unlock()
		return
	}
	delete(r.clients, c.id)
	change := r.unrouteLocked(c)
	r.mu.Unlock()
	if err := r.applyChange(ctx, change); err != nil {
		r.log.Warn("unsubscribe after failed attach", "client", c.id, "err", err)
	}
}

// claimRecord writes the EMQX client record, the node's client index and
// the will, making this connection the owner of the client id.
func (r *Redis) claimRecord(ctx context.Context, c *redisClient, will *Message, loaded *[streamShards]streamID) error {
	now := time.Now()
	// A resumed session keeps the cursor it was stored with until its
	// connection ends cleanly: what follows it may still be unacknowledged.
	// A new session starts from what this replica has seen. This replica's
	// position may lag behind a cursor written elsewhere, so it must never
	// replace a loaded one.
	var cursor [streamShards]streamID
	if loaded != nil {
		cursor = *loaded
	} else {
		r.mu.Lock()
		cursor = r.lastSeen
		r.mu.Unlock()
	}
	_, err := r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		sk := r.sessionKey(c.id)
		fields := []any{"conn", c.conn, "clean", boolField(c.clean)}
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
		p.HSet(ctx, r.clientKey(c.id),
			"state", "1",
			"online_at", strconv.FormatInt(now.Unix(), 10),
			"node", r.node,
			"conn", c.conn)
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
// session.
func (r *Redis) replaySession(ctx context.Context, c *redisClient, cursor [streamShards]streamID) ([]Delivery, [streamShards]streamID, error) {
	var out []Delivery
	ends := cursor
	cutoff := r.expiryCutoff()
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
func (r *Redis) Detach(ctx context.Context, clientID string, sub Subscriber, state *Session) error {
	r.psMu.Lock()
	r.mu.Lock()
	c := r.clients[clientID]
	if c == nil || c.sub != sub {
		r.mu.Unlock()
		r.psMu.Unlock()
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
	change := r.unrouteLocked(c)
	cursor := r.lastSeen
	late := c.late
	for _, p := range c.pending {
		late = append(late, p.d)
	}
	r.mu.Unlock()
	err := r.applyChange(ctx, change)
	r.psMu.Unlock()
	if err != nil {
		r.log.Warn("unsubscribe on detach", "client", clientID, "err", err)
	}

	// The session is stored before the client is marked offline: a replica
	// that sees it offline may load the session at once.
	if state != nil {
		st := *state
		st.Queued = r.boundQueue(append(append([]Delivery(nil), state.Queued...), late...))
		_, err = r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			sk := r.sessionKey(clientID)
			p.HDel(ctx, sk, "will") // the caller publishes a will that is due
			p.HSet(ctx, sk, "state", appendSessionState(nil, &st), "cursor", encodeCursor(&cursor), "clean", "0")
			// The bridge's own record of the subscriptions is the truth.
			p.Del(ctx, r.subKey(clientID))
			if len(c.subs) > 0 {
				args := make([]any, 0, 2*len(c.subs))
				for f, q := range c.subs {
					args = append(args, f, int(q))
				}
				p.HSet(ctx, r.subKey(clientID), args...)
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("detach %q: %w", clientID, unavailable("store session", err))
		}
	}
	now := strconv.FormatInt(time.Now().Unix(), 10)
	owned, err := detachScript.Run(ctx, r.rdb, []string{r.clientKey(clientID)}, c.conn, now).Int()
	if err != nil {
		return fmt.Errorf("detach %q: %w", clientID, unavailable("mark client offline", err))
	}
	if owned == 0 {
		return nil // taken over on another node
	}
	_, err = r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.HDel(ctx, r.nodeKey(r.node), clientID)
		if state == nil {
			p.Del(ctx, r.subKey(clientID))
			p.Del(ctx, r.sessionKey(clientID))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("detach %q: %w", clientID, unavailable("store session", err))
	}
	return nil
}
