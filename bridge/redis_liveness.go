package bridge

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Replica liveness.
//
// Each replica holds <prefix>alive:<node> with a random token of its own
// (SET NX at start, TTL NodeTTL) and refreshes it only while the value is
// still its token. A survivor that finds the key gone twice, NodeTTL/2
// apart, claims the node by putting a tombstone in the key (SET NX), so no
// replica can declare a node dead while that node holds its key, and the
// node cannot register again while a survivor is reaping it.
//
// A connection's will is claimed with SET NX of <prefix>willclaim:<conn>:
// whoever claims it (the connection's own replica when it ends without
// DISCONNECT, or a survivor reaping a replica it believes dead) publishes
// it, so a will is published at most once per connection.
//
// A replica that finds its key gone (it was paused, cut off from Redis,
// reaped, or Redis restarted empty) takes it again and re-registers every
// live connection: client record, node index, will, session hash and the
// subscriptions of persistent sessions. A connection whose will a survivor
// has already claimed is closed instead: its will told the world it was
// gone, and keeping it open would make that a lie. The client reconnects
// and announces itself again. A connection whose record now names another
// connection was taken over while this replica was absent, and is closed
// [MQTT-3.1.4-2].

// ErrNodeIDInUse reports that another live replica holds this replica's
// node id.
var ErrNodeIDInUse = errors.New("node id in use by a live replica")

// willClaimTTL is how long the marker of a claimed will is kept: a replica
// paused for longer than this after being reaped may publish a will again.
const willClaimTTL = 24 * time.Hour

// tombstonePrefix starts the value a reaper leaves in a dead node's
// liveness key while it publishes that node's wills.
const tombstonePrefix = "reaping:"

// reapHold bounds how long a reaper's tombstone blocks the node's return if
// the reaper dies; reapNode's deadline is shorter.
const reapHold = time.Minute

// beatScript refreshes a liveness key only if it holds this node's token,
// and returns the key's value (nil when it is gone).
// KEYS[1] alive key; ARGV token, TTL in ms.
var beatScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return v
`)

// releaseScript deletes a key only if it holds ARGV[1].
var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)

// reRegisterClientScript makes the client record say the connection is
// online here, unless the record belongs to another connection. With
// ARGV[6] = "1" (Redis lost its data since the connection registered), a
// record that another user's connection claimed after this connection
// claimed the id (claimed_ms, later than ARGV[7]) is taken back: that claim
// could only succeed because Redis had forgotten this live connection, and
// a session belongs to its user. The younger connection never takes the
// id from the older one, whichever replica registers again first; two
// claims in the same millisecond are a tie, which the record's holder
// keeps (both replicas then agree, and the other connection is ended).
// KEYS[1] client; ARGV conn, node, online_at, owner, peerhost, reclaim,
// claimed_ms. Returns 1 when written, 0 when another connection holds it,
// and "<node> <conn>" of the connection it was taken back from.
var reRegisterClientScript = redis.NewScript(`
local cur = redis.call('HGET', KEYS[1], 'conn')
local took = nil
if cur and cur ~= ARGV[1] then
  local owner = redis.call('HGET', KEYS[1], 'owner')
  local at = tonumber(redis.call('HGET', KEYS[1], 'claimed_ms') or '')
  if ARGV[6] ~= '1' or owner == false or owner == ARGV[4] or at == nil or at <= tonumber(ARGV[7]) then return 0 end
  took = (redis.call('HGET', KEYS[1], 'node') or '') .. ' ' .. cur
  redis.call('DEL', KEYS[1])
end
redis.call('HSET', KEYS[1], 'state', '1', 'node', ARGV[2], 'conn', ARGV[1], 'owner', ARGV[4], 'peerhost', ARGV[5], 'claimed_ms', ARGV[7])
redis.call('PERSIST', KEYS[1])
if redis.call('HEXISTS', KEYS[1], 'online_at') == 0 then redis.call('HSET', KEYS[1], 'online_at', ARGV[3]) end
if took then return took end
return 1
`)

// reRegisterSessionScript writes the session hash fields a live connection
// owns, unless the hash belongs to another connection. A stored cursor is
// kept. With ARGV[7] = "1" (the client record was taken back from another
// user's connection) the hash is replaced whatever it holds. KEYS[1]
// session; ARGV conn, clean, cursor (” none), will (” none), owner, expiry
// (ms; ” none), replace.
var reRegisterSessionScript = redis.NewScript(`
local cur = redis.call('HGET', KEYS[1], 'conn')
if cur and cur ~= ARGV[1] then
  if ARGV[7] ~= '1' then return 0 end
  redis.call('DEL', KEYS[1])
end
redis.call('HSET', KEYS[1], 'conn', ARGV[1], 'clean', ARGV[2], 'owner', ARGV[5])
if ARGV[3] ~= '' then redis.call('HSETNX', KEYS[1], 'cursor', ARGV[3]) end
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'will', ARGV[4]) else redis.call('HDEL', KEYS[1], 'will') end
if ARGV[6] ~= '' then redis.call('HSET', KEYS[1], 'expiry', ARGV[6]) else redis.call('HDEL', KEYS[1], 'expiry') end
return 1
`)

// willCopy keeps a will for re-registration: the session that gave it sets
// its ID and time when it publishes it.
func willCopy(w *Message) *Message {
	if w == nil {
		return nil
	}
	c := *w
	return &c
}

func (r *Redis) willClaimKey(conn string) string { return r.prefix + "willclaim:" + conn }

// willAllowed applies the write ACL in force now (RedisOptions.WillAuth)
// to a will kept in Redis that this replica is about to publish for
// another connection of owner: allowed when its connection began, it may
// have been revoked since (SIGHUP, the users in Redis), and a will the ACL
// does not let its user publish is never published. It logs and counts a
// refusal.
func (r *Redis) willAllowed(clientID, owner string, will *Message) bool {
	if r.willAuth == nil || r.willAuth(clientID, owner, will.Topic) {
		return true
	}
	r.stats.willsRefused.Add(1)
	r.log.Info("will refused by ACL", "client", clientID, "user", owner, "topic", will.Topic)
	return false
}

// joinCluster takes this node's liveness key and registers the node. When
// the key is held, it waits until it lapses, at most NodeTTL plus one
// refresh period: a previous run of this node that crashed lets it go by
// then, a live replica with the same id refreshes it and start-up fails
// with ErrNodeIDInUse.
func (r *Redis) joinCluster(ctx context.Context) error {
	deadline := time.Now().Add(r.ttl + r.ttl/3 + 100*time.Millisecond)
	for {
		ok, err := r.rdb.SetNX(ctx, r.aliveKey(r.node), r.token, r.ttl).Result()
		if err != nil {
			return unavailable("take liveness key", err)
		}
		if ok {
			break
		}
		left, err := r.rdb.PTTL(ctx, r.aliveKey(r.node)).Result()
		if err != nil {
			return unavailable("read liveness key", err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: %q is refreshed by another replica (key %s); give each replica its own id",
				ErrNodeIDInUse, r.node, r.aliveKey(r.node))
		}
		r.log.Warn("node id held in Redis, by another replica or a previous run of this one; waiting for it to lapse",
			"key", r.aliveKey(r.node), "expires_in", left, "gives_up_in", time.Until(deadline).Round(time.Millisecond))
		wait := min(max(left, 10*time.Millisecond), r.ttl/4, time.Until(deadline)+time.Millisecond)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return fmt.Errorf("wait for node id %q: %w", r.node, ctx.Err())
		}
	}
	if err := r.rdb.SAdd(ctx, r.nodesKey(), r.node).Err(); err != nil {
		return unavailable("register node", err)
	}
	r.lastBeat.Store(time.Now().UnixNano())
	return nil
}

// reapPreviousRun publishes the wills of the connections a previous run of
// this node left behind: before the first Attach, whatever the node index
// lists is theirs. The publisher must be running.
func (r *Redis) reapPreviousRun(ctx context.Context) error {
	if err := r.reapNode(ctx, r.node); err != nil {
		return fmt.Errorf("publish wills of this node's previous run: %w", err)
	}
	return nil
}

// heartbeat refreshes this node's liveness key and, when the key is gone,
// takes it again and re-registers every live connection.
func (r *Redis) heartbeat(ctx context.Context) error {
	var v *redis.Cmd
	_, err := r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		v = beatScript.EvalSha(ctx, p, []string{r.aliveKey(r.node)}, r.token, r.ttl.Milliseconds())
		p.SAdd(ctx, r.nodesKey(), r.node)
		return nil
	})
	if err != nil && redis.HasErrorPrefix(v.Err(), "NOSCRIPT") {
		v = beatScript.Run(ctx, r.rdb, []string{r.aliveKey(r.node)}, r.token, r.ttl.Milliseconds())
		err = v.Err()
	}
	held, verr := v.Text()
	switch {
	case verr == nil && held == r.token:
		if err != nil {
			return unavailable("node heartbeat", err)
		}
		r.lastBeat.Store(time.Now().UnixNano())
		r.conflict.Store(nil)
		if r.needReconcile.Load() {
			return r.reconcile(ctx)
		}
		return nil
	case verr == nil && strings.HasPrefix(held, tombstonePrefix):
		// A survivor is publishing our clients' wills; come back after.
		r.needReconcile.Store(true)
		r.log.Warn("this replica was declared dead; re-registering once the reaper is done", "reaper", strings.TrimPrefix(held, tombstonePrefix))
		return nil
	case verr == nil:
		err := fmt.Errorf("%w: %q: liveness key %s holds another replica's token", ErrNodeIDInUse, r.node, r.aliveKey(r.node))
		r.conflict.Store(&err)
		return err
	case !errors.Is(verr, redis.Nil):
		return unavailable("node heartbeat", verr)
	}
	// The key is gone: lapsed, or Redis lost it (its epoch changed).
	r.needReconcile.Store(true)
	if ep, err := r.initEpoch(ctx); err == nil {
		if was := r.regEpoch.Load(); was == nil || *was != ep {
			r.dataLost.Store(true)
		}
	}
	ok, err := r.rdb.SetNX(ctx, r.aliveKey(r.node), r.token, r.ttl).Result()
	if err != nil {
		return unavailable("take liveness key again", err)
	}
	if !ok {
		return nil // someone took it first; the next beat tells who
	}
	r.lastBeat.Store(time.Now().UnixNano())
	r.log.Warn("liveness key was gone (replica paused, cut off or reaped, or Redis lost its data); re-registering live connections")
	return r.reconcile(ctx)
}

// askBeat makes the node loop refresh the liveness key now.
func (r *Redis) askBeat() {
	select {
	case r.beatNow <- struct{}{}:
	default:
	}
}

// liveClient is what reconcile needs of one attached connection.
type liveClient struct {
	c      *redisClient
	id     string
	conn   string
	clean  bool
	expiry string // the session hash's expiry field, "" for none
	owner  string
	addr   string
	cursor [streamShards]streamID // where a replay of its session may start
	will   *Message
	subs   map[string]byte
	opts   map[string]SubOptions
	status int // 0 re-register, 1 will claimed, 2 taken over
	// took is "<node> <conn>" of another user's connection this one's
	// record was taken back from (reRegisterClientScript).
	took      string
	claimedMS int64 // when the connection claimed its id (redisClient.claimedMS)
}

// reconcile re-registers every attached connection (see the comment at the
// top of this file). Connections in the middle of Attach are left to it and
// picked up by the next pass.
func (r *Redis) reconcile(ctx context.Context) (err error) {
	epoch, err := r.initEpoch(ctx)
	if err != nil {
		return err
	}
	reclaim := "0"
	if r.dataLost.Swap(false) {
		reclaim = "1"
		defer func() {
			if err != nil {
				r.dataLost.Store(true) // the next pass takes back what this one could not
			}
		}()
	}
	r.mu.Lock()
	all := make([]*liveClient, 0, len(r.conns))
	busy := false
	for id, c := range r.conns {
		if !c.resumed {
			busy = true // still attaching: the next pass picks it up
			continue
		}
		if c.superseded {
			continue // taken over elsewhere: being closed
		}
		l := &liveClient{c: c, id: id, conn: c.conn, clean: c.clean, owner: c.owner, addr: c.addr, claimedMS: c.claimedMS,
			cursor: r.cursorLocked(c), will: c.will, subs: maps.Clone(c.subs), opts: maps.Clone(c.opts)}
		if !c.clean && c.expiry > 0 {
			l.expiry = strconv.FormatInt(c.expiry.Milliseconds(), 10)
		}
		all = append(all, l)
	}
	r.mu.Unlock()

	now := strconv.FormatInt(time.Now().Unix(), 10)
	const chunk = 256
	var closing []*liveClient
	for start := 0; start < len(all); start += chunk {
		batch := all[start:min(start+chunk, len(all))]
		// 1. Wills a survivor claimed while it believed this node dead.
		claims := make([]*redis.IntCmd, len(batch))
		_, err := r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, l := range batch {
				if l.will != nil {
					claims[i] = p.Exists(ctx, r.willClaimKey(l.conn))
				}
			}
			return nil
		})
		if err != nil {
			return unavailable("re-register: read will claims", err)
		}
		// 2. Client records, unless another connection took them.
		recs := make([]*redis.Cmd, len(batch))
		_, err = r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, l := range batch {
				if claims[i] != nil && claims[i].Val() > 0 {
					l.status = 1
					continue
				}
				recs[i] = reRegisterClientScript.EvalSha(ctx, p, []string{r.clientKey(l.id)}, l.conn, r.node, now, l.owner, l.addr, reclaim, l.claimedMS)
			}
			return nil
		})
		if err != nil && !noScript(recs) {
			return unavailable("re-register client records", err)
		}
		for i, l := range batch {
			if recs[i] == nil {
				continue
			}
			if redis.HasErrorPrefix(recs[i].Err(), "NOSCRIPT") {
				recs[i] = reRegisterClientScript.Run(ctx, r.rdb, []string{r.clientKey(l.id)}, l.conn, r.node, now, l.owner, l.addr, reclaim, l.claimedMS)
			}
			v, err := recs[i].Result()
			if err != nil {
				return unavailable("re-register client record", err)
			}
			switch v := v.(type) {
			case int64:
				if v == 0 {
					l.status = 2
				}
			case string:
				l.took = v
			}
		}
		// 3. Session hash, node index, subscriptions.
		sess := make([]*redis.Cmd, len(batch))
		_, err = r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, l := range batch {
				if l.status != 0 {
					continue
				}
				cur, will := "", ""
				if !l.clean {
					cur = encodeCursor(&l.cursor)
				}
				if l.will != nil {
					will = string(AppendEnvelope(nil, l.will, ""))
				}
				sess[i] = reRegisterSessionScript.EvalSha(ctx, p, []string{r.sessionKey(l.id)}, l.conn, boolField(l.clean), cur, will, l.owner, l.expiry, boolField(l.took != ""))
				p.HSet(ctx, r.nodeKey(r.node), l.id, now)
				if l.took != "" {
					p.Del(ctx, r.subKey(l.id)) // the other user's subscriptions
				}
				if !l.clean && len(l.subs) > 0 {
					p.HSet(ctx, r.subKey(l.id), subscriptionArgs(l.subs, l.opts)...)
				}
			}
			return nil
		})
		if err != nil && !noScript(sess) {
			return unavailable("re-register sessions", err)
		}
		for i, l := range batch {
			if sess[i] != nil && redis.HasErrorPrefix(sess[i].Err(), "NOSCRIPT") {
				cur, will := "", ""
				if !l.clean {
					cur = encodeCursor(&l.cursor)
				}
				if l.will != nil {
					will = string(AppendEnvelope(nil, l.will, ""))
				}
				sess[i] = reRegisterSessionScript.Run(ctx, r.rdb, []string{r.sessionKey(l.id)}, l.conn, boolField(l.clean), cur, will, l.owner, l.expiry, boolField(l.took != ""))
			}
			if sess[i] != nil && sess[i].Err() != nil {
				return unavailable("re-register session", sess[i].Err())
			}
		}
		for _, l := range batch {
			if l.status != 0 {
				closing = append(closing, l)
			}
			if l.took != "" {
				r.endStolen(l.id, l.took)
			}
		}
	}

	// A connection that detached while this ran must not stay registered.
	r.mu.Lock()
	var gone []*liveClient
	for _, l := range all {
		if l.status == 0 && r.conns[l.id] != l.c {
			gone = append(gone, l)
		}
	}
	r.mu.Unlock()
	for _, l := range gone {
		if err := detachScript.Run(ctx, r.rdb, []string{r.clientKey(l.id)}, l.conn, now).Err(); err != nil {
			return unavailable("re-register: mark detached client offline", err)
		}
		if err := r.rdb.HDel(ctx, r.nodeKey(r.node), l.id).Err(); err != nil {
			return unavailable("re-register: unlist detached client", err)
		}
	}

	for _, l := range closing {
		r.mu.Lock()
		still := r.conns[l.id] == l.c
		r.mu.Unlock()
		if !still {
			continue
		}
		if l.status == 1 {
			r.log.Warn("closing connection whose will a survivor published while this replica was declared dead", "client", l.id)
		} else {
			r.log.Warn("closing connection taken over while this replica was declared dead [MQTT-3.1.4-2]", "client", l.id)
		}
		r.supersede(l.id, l.conn)
		r.wg.Add(1)
		go func(c *redisClient) {
			defer r.wg.Done()
			c.sub.TakeOver()
		}(l.c)
	}
	r.needReconcile.Store(busy)
	r.regEpoch.Store(&epoch)
	r.log.Info("re-registered live connections", "connections", len(all)-len(closing), "closed", len(closing), "deferred", busy)
	return nil
}

// endStolen ends, in the background, the connection ("<node> <conn>") of
// another user whose claim on clientID reconcile has just taken back for
// this node's live connection: it was accepted only because Redis had
// forgotten this one, and a session belongs to its user [MQTT-3.1.4-2].
// The client record names this node's connection again, so that
// connection's end stores nothing over it.
func (r *Redis) endStolen(clientID, took string) {
	node, conn, _ := strings.Cut(took, " ")
	r.log.Warn("client id claimed by another user while Redis had lost this live connection; taken back, ending the other connection",
		"client", clientID, "other_node", node)
	if node == "" || conn == "" || node == r.node {
		return // this node holds one connection per id: the other is gone
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		ctx, cancel := context.WithTimeout(r.ctx, 2*takeoverTimeout)
		defer cancel()
		if res, err := r.takeOverRemote(ctx, node, clientID, conn); err == nil && res == takeoverUnanswered {
			r.repeatTakeover(node, clientID, conn)
		}
	}()
}

// noScript reports whether a pipeline failed only because Redis lost its
// script cache: the failing calls are then run again one by one.
func noScript(cmds []*redis.Cmd) bool {
	for _, c := range cmds {
		if c != nil && c.Err() != nil && !redis.HasErrorPrefix(c.Err(), "NOSCRIPT") {
			return false
		}
	}
	return true
}

// PublishWill implements broker.Cluster: exactly one of the connection's
// own replica and a replica that declared it dead publishes the will
// [MQTT-3.1.2-8], decided by a claim on the connection id.
func (r *Redis) PublishWill(ctx context.Context, clientID string, sub Subscriber, will *Message) (bool, error) {
	r.mu.Lock()
	conn := ""
	if c := r.conns[clientID]; c != nil && c.sub == sub {
		conn = c.conn
	} else if c := r.detaching[clientID]; c != nil && c.sub == sub {
		conn = c.conn
	}
	r.mu.Unlock()
	if conn == "" {
		// Not attached (Attach failed): nobody else knows of this will.
		err := r.publish(ctx, will)
		if err == nil {
			r.stats.willsSent.Add(1)
			return true, nil
		}
		r.retryWill(clientID, "", will)
		return false, err
	}
	won, err := r.claimWill(ctx, conn)
	if err == nil && !won {
		r.log.Info("will already published by a replica that declared this one dead", "client", clientID)
		return false, nil
	}
	if err == nil && will.WillDelay > 0 {
		if err = r.delayWill(ctx, clientID, will, will.WillDelay); err == nil {
			return false, nil
		}
		// Redis refused the schedule: this replica waits out the delay
		// itself (a reconnection can no longer cancel it), then publishes.
		r.retryWillAfter(clientID, will, will.WillDelay)
		return false, err
	}
	if err == nil {
		if err = r.publish(ctx, will); err == nil {
			r.stats.willsSent.Add(1)
			return true, nil
		}
		conn = "" // claimed: only the publish is left to retry
	}
	r.retryWill(clientID, conn, will)
	return false, err
}

// claimWill claims the will of connection conn; true when this replica is
// to publish it.
func (r *Redis) claimWill(ctx context.Context, conn string) (bool, error) {
	won, err := r.rdb.SetNX(ctx, r.willClaimKey(conn), r.node, willClaimTTL).Result()
	if err != nil {
		return false, unavailable("claim will", err)
	}
	return won, nil
}

// retryWill keeps trying, in the background, to claim (when conn is set)
// and publish a will until it is published or the bridge closes.
func (r *Redis) retryWill(clientID, conn string, will *Message) {
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		claimed := conn == ""
		backoff := 50 * time.Millisecond
		for attempt := 1; ; attempt++ {
			select {
			case <-time.After(backoff):
			case <-r.ctx.Done():
				r.log.Error("will not published: bridge closed while Redis refused it", "client", clientID, "topic", will.Topic, "attempts", attempt)
				return
			}
			backoff = min(2*backoff, time.Second)
			ctx, cancel := context.WithTimeout(r.ctx, 5*time.Second)
			err := error(nil)
			if !claimed {
				var won bool
				won, err = r.claimWill(ctx, conn)
				if err == nil && !won {
					cancel()
					return // a survivor published it
				}
				claimed = err == nil
			}
			if err == nil {
				if err = r.publish(ctx, will); isNotReplicated(err) {
					err = nil // published, if not yet on enough Redis replicas
				}
			}
			cancel()
			if err == nil {
				r.stats.willsSent.Add(1)
				r.log.Info("will published after retrying", "client", clientID, "topic", will.Topic, "attempts", attempt)
				return
			}
			if attempt == 1 || attempt%20 == 0 {
				r.log.Warn("will not published yet; retrying", "client", clientID, "topic", will.Topic, "err", err)
			}
		}
	}()
}
