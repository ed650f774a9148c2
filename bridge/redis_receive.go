package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bridgemq/server/bridge/pattern"
	"github.com/bridgemq/server/topics"
)

// healthInterval is how long the reader waits for a message before it
// pings the subscription connection, so that a dead connection is noticed.
const healthInterval = 15 * time.Second

// barrierTimeout bounds the wait for a subscription to take effect.
const barrierTimeout = 5 * time.Second

// readLoop is the replica's one reader of its Redis subscription. It loops
// on Receive (not Channel, which drops messages when its buffer is full)
// and never blocks on a client.
//
// go-redis reconnects and re-subscribes by itself; whatever was published
// meanwhile never arrives. The loop notices a reconnect by a receive error
// or by a subscription confirmation it did not ask for, and then replays
// every shard's stream from the last id it saw, through the same dedupe and
// matching path, before handling the live messages that follow.
func (r *Redis) readLoop() {
	defer r.wg.Done()
	gap := false
	backoff := 10 * time.Millisecond
	for {
		v, err := r.ps.ReceiveTimeout(r.ctx, healthInterval)
		if err != nil {
			if r.ctx.Err() != nil {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				// Quiet, not broken: a PING proves the connection.
				_ = r.ps.Ping(r.ctx)
				continue
			}
			if !gap {
				r.log.Warn("redis subscription lost; will replay streams after reconnect", "err", err)
			}
			gap = true
			select {
			case <-time.After(backoff):
			case <-r.ctx.Done():
				return
			}
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 10 * time.Millisecond
		switch v := v.(type) {
		case *redis.Subscription:
			if (v.Kind == "subscribe" || v.Kind == "psubscribe") && !r.confirmed(v.Channel) {
				gap = true // a re-subscription go-redis made by itself
			}
			if gap {
				gap = !r.replayGap()
			}
		case *redis.Pong:
			if gap {
				gap = !r.replayGap()
			}
			r.pong(v.Payload)
		case *redis.Message:
			if gap {
				gap = !r.replayGap()
			}
			r.receive(v)
		}
	}
}

// receive routes one pub/sub message.
func (r *Redis) receive(m *redis.Message) {
	switch {
	case strings.HasPrefix(m.Channel, r.msgPrefix):
		r.receiveEnvelope(m.Payload)
	case m.Channel == r.retainCtlChannel():
		r.applyRetainAnnouncement(m.Payload)
	case m.Channel == r.nodeCtlChannel(r.node):
		r.control(m.Payload)
	}
}

// receiveEnvelope decodes an application message and delivers it unless it
// is a repeat.
func (r *Redis) receiveEnvelope(payload string) {
	m := new(Message)
	sidText, err := DecodeEnvelope(payload, m)
	if err != nil {
		r.stats.decodeErrors.Add(1)
		r.log.Error("dropping message that does not decode", "err", err)
		return
	}
	r.stats.received.Add(1)
	if sidText == "" {
		if r.recent.seen(m.ID) {
			r.stats.deduplicated.Add(1)
			return
		}
		r.deliverLocal(m, -1, streamID{})
		return
	}
	sid, err := parseStreamID(sidText)
	if err != nil {
		r.stats.decodeErrors.Add(1)
		r.log.Error("dropping message with a bad stream id", "err", err)
		return
	}
	if r.recent.seen(m.ID) {
		// A copy through another channel or pattern, or a message published
		// again after a Redis restart (see redis_epoch.go).
		r.stats.deduplicated.Add(1)
		return
	}
	r.deliverLocal(m, shardOf(m.Topic), sid)
}

// deliverLocal hands m to every local client with a matching subscription,
// once each, at the highest QoS granted among its matches [MQTT-3.3.5-1].
// shard is -1 for a message without a stream id (QoS 0). A message whose
// stream id is not after the last one seen on its shard was handled before
// (Redis sends one copy per matching channel and pattern, and a replay may
// overlap live delivery): it is dropped.
func (r *Redis) deliverLocal(m *Message, shard int, sid streamID) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if shard >= 0 {
		if !sid.after(r.lastSeen[shard]) {
			r.stats.deduplicated.Add(1)
			return false
		}
		r.lastSeen[shard] = sid
		r.seenGen++
	}
	// The trie re-matches: Redis's '*' also matches '/', and a generalised
	// pattern over-delivers.
	r.trie.Subscribers(m.Topic, r.matched)
	old := !m.Time.IsZero() && time.Since(m.Time) > lateMessage
	for id, granted := range r.matched {
		c := r.clients[id]
		if c == nil {
			continue
		}
		if old && c.since != nil {
			var ok bool
			if granted, ok = eligibleGrant(c, m); !ok {
				continue // every matching filter is newer than the message
			}
		}
		qos := min(granted, m.QoS)
		if shard >= 0 {
			if c.replaying {
				c.pending = append(c.pending, pendingDelivery{Delivery{Message: m, QoS: qos}, shard, sid})
				continue
			}
			if c.skip != nil && !sid.after(c.skip[shard]) {
				continue // already returned by this session's replay
			}
		}
		r.stats.delivered.Add(1)
		if !c.sub.Deliver(m, qos) && qos > 0 {
			c.late = append(c.late, Delivery{Message: m, QoS: qos})
		}
	}
	clear(r.matched)
	return true
}

// lateMessage is how old a message must be, by the publishing replica's
// clock, for its receivers to check that the matching filter is older than
// it: far above transit times and the clock differences of replicas kept by
// NTP, so that no message published after a subscription is ever withheld.
const lateMessage = time.Second

// eligibleGrant is the highest QoS among c's filters matching m that
// existed when m was published (within lateMessage); false when none did.
// Only old messages pay for it. r.mu is held.
func eligibleGrant(c *redisClient, m *Message) (byte, bool) {
	var best byte
	found := false
	limit := m.Time.Add(lateMessage)
	for f, q := range c.subs {
		if at, ok := c.since[f]; ok && at.After(limit) {
			continue
		}
		if topics.Match(f, m.Topic) {
			best, found = max(best, q), true
		}
	}
	return best, found
}

// replayGap reads every shard's stream after the last id seen and delivers
// what was missed; it reloads the retained index, whose announcements may
// have been lost too. It reports false when Redis could not be read, to be
// retried on the next event.
func (r *Redis) replayGap() bool {
	ctx, cancel := context.WithTimeout(r.ctx, 30*time.Second)
	defer cancel()
	r.stats.replays.Add(1)
	r.mu.Lock()
	seen := r.lastSeen
	r.mu.Unlock()
	r.countTrimmed(ctx, "", seen)
	for s := range streamShards {
		r.mu.Lock()
		from := r.lastSeen[s]
		r.mu.Unlock()
		err := r.readStream(ctx, s, from, func(m *Message, sid streamID) {
			if r.recent.seen(m.ID) {
				r.stats.deduplicated.Add(1) // e.g. republished after a Redis restart
				return
			}
			if r.deliverLocal(m, s, sid) {
				r.stats.replayed.Add(1)
			}
		})
		if err != nil {
			r.log.Warn("stream replay failed; retrying", "shard", s, "err", err)
			return false
		}
	}
	if err := r.loadRetainedIndex(ctx); err != nil {
		r.log.Warn("retained index reload failed; retrying", "err", err)
		return false
	}
	r.log.Info("redis subscription restored; streams replayed")
	// Redis may have come back without our state (a restart, a failover):
	// check the epoch and our liveness key now, not at the next heartbeat,
	// so that client records, wills and ownership are re-registered at once.
	r.askEpochCheck()
	r.askBeat()
	return true
}

// expect records subscribe confirmations this replica is about to ask for,
// so that the reader can tell them from a reconnect's re-subscriptions.
func (r *Redis) expect(names []string) {
	r.waitMu.Lock()
	defer r.waitMu.Unlock()
	for _, n := range names {
		r.expected[n]++
	}
}

// confirmed consumes an expected confirmation for name.
func (r *Redis) confirmed(name string) bool {
	r.waitMu.Lock()
	defer r.waitMu.Unlock()
	n := r.expected[name]
	if n == 0 {
		return false
	}
	if n == 1 {
		delete(r.expected, name)
	} else {
		r.expected[name] = n - 1
	}
	return true
}

func (r *Redis) pong(token string) { r.signal(r.pongs, token) }

// waitFor registers a channel that signal(waiters, token) closes; done
// unregisters it.
func (r *Redis) waitFor(waiters map[string]chan struct{}, token string) (ch chan struct{}, done func()) {
	ch = make(chan struct{})
	r.waitMu.Lock()
	waiters[token] = ch
	r.waitMu.Unlock()
	return ch, func() {
		r.waitMu.Lock()
		delete(waiters, token)
		r.waitMu.Unlock()
	}
}

// signal wakes the waiter registered for token in waiters, if any.
func (r *Redis) signal(waiters map[string]chan struct{}, token string) {
	r.waitMu.Lock()
	defer r.waitMu.Unlock()
	if ch, ok := waiters[token]; ok {
		close(ch)
		delete(waiters, token)
	}
}

// barrier returns once every command sent on the subscription connection
// before it has taken effect: Redis answers one connection's commands in
// order, so the reply to a PING sent now comes after every earlier
// SUBSCRIBE is in place.
func (r *Redis) barrier(ctx context.Context) error {
	token := "barrier:" + randomToken()
	ch, done := r.waitFor(r.pongs, token)
	defer done()
	if err := r.ps.Ping(ctx, token); err != nil {
		return unavailable("subscription barrier", err)
	}
	t := time.NewTimer(barrierTimeout)
	defer t.Stop()
	select {
	case <-ch:
		return nil
	case <-t.C:
		return fmt.Errorf("subscription barrier: no reply in %v: %w", barrierTimeout, ErrUnavailable)
	case <-ctx.Done():
		return fmt.Errorf("subscription barrier: %w", ctx.Err())
	}
}

// applyChange issues the Redis commands of c, subscriptions first so that
// nothing falls between them; psMu is held by the caller.
func (r *Redis) applyChange(ctx context.Context, c pattern.Change) error {
	if c.Empty() {
		return nil
	}
	var errs []error
	if len(c.Subscribe) > 0 {
		r.expect(c.Subscribe)
		errs = append(errs, r.ps.Subscribe(ctx, c.Subscribe...))
	}
	if len(c.PSubscribe) > 0 {
		r.expect(c.PSubscribe)
		errs = append(errs, r.ps.PSubscribe(ctx, c.PSubscribe...))
	}
	if len(c.Unsubscribe) > 0 {
		errs = append(errs, r.ps.Unsubscribe(ctx, c.Unsubscribe...))
	}
	if len(c.PUnsubscribe) > 0 {
		errs = append(errs, r.ps.PUnsubscribe(ctx, c.PUnsubscribe...))
	}
	if err := errors.Join(errs...); err != nil {
		// go-redis keeps the names and re-subscribes them on reconnect.
		return unavailable("update redis subscriptions", err)
	}
	return nil
}

// Subscribe implements Bridge. It returns once Redis routes matching
// messages to this replica, so that a message published after SUBACK
// reaches the client.
//
// A persistent session's subscription is stored before it is routed: one
// that Redis refuses to store is answered 0x80 and is not routed either.
// Its floor is then raised to the streams' current ends, so that no replay
// ever hands it a message from before it began [MQTT-4.5.0-1].
func (r *Redis) Subscribe(ctx context.Context, clientID, filter string, qos byte) error {
	started := time.Now()
	if err := topics.ValidateFilter(filter); err != nil {
		return fmt.Errorf("subscribe %q: %w", filter, err)
	}
	r.mu.Lock()
	c := r.clients[clientID]
	r.mu.Unlock()
	if c == nil {
		return fmt.Errorf("subscribe %q: client %q is not attached", filter, clientID)
	}
	persistent := !c.clean
	if persistent {
		if err := r.rdb.HSet(ctx, r.subKey(clientID), filter, int(qos)).Err(); err != nil {
			return fmt.Errorf("subscribe %q: %w", filter, unavailable("store subscription", err))
		}
	}
	r.psMu.Lock()
	r.mu.Lock()
	if r.clients[clientID] != c {
		r.mu.Unlock()
		r.psMu.Unlock()
		return fmt.Errorf("subscribe %q: client %q is not attached", filter, clientID)
	}
	prev, had := c.subs[filter]
	c.subs[filter] = qos
	if !had {
		// A filter made again keeps its start: the flow of messages is
		// not interrupted [MQTT-3.8.4-3].
		c.markSince(filter, started)
	}
	var change pattern.Change
	if r.trie.Subscribe(filter, clientID, qos) {
		change = r.patterns.Add(filter)
	}
	r.mu.Unlock()
	err := r.applyChange(ctx, change)
	r.psMu.Unlock()
	switch {
	case err != nil:
	case persistent:
		err = r.startFloor(ctx, c)
	case !change.Empty():
		err = r.barrier(ctx)
	}
	if err != nil {
		r.undoSubscribe(ctx, c, filter, prev, had)
		return fmt.Errorf("subscribe %q: %w", filter, err)
	}
	if err := r.rdb.Publish(ctx, r.eventChannel(), subscriptionEvent("subscribe", clientID, filter, qos)).Err(); err != nil {
		r.log.Warn("subscription event not published", "client", clientID, "filter", filter, "err", err)
	}
	return nil
}

// SubscribeMany implements BatchSubscriber: one HSET stores a persistent
// session's filters, the routing goes in chunks (see route), one barrier
// (or one floor) follows, and the EMQX events go in one pipeline. A
// SUBSCRIBE of 20,000 filters takes tens of milliseconds, not the seconds
// of 20,000 Subscribe calls, and never holds up other clients.
func (r *Redis) SubscribeMany(ctx context.Context, clientID string, subs []Subscription) error {
	if len(subs) == 0 {
		return nil
	}
	started := time.Now()
	for _, s := range subs {
		if err := topics.ValidateFilter(s.Filter); err != nil {
			return fmt.Errorf("subscribe %q: %w", s.Filter, err)
		}
	}
	r.mu.Lock()
	c := r.clients[clientID]
	r.mu.Unlock()
	if c == nil {
		return fmt.Errorf("subscribe %d filters: client %q is not attached", len(subs), clientID)
	}
	persistent := !c.clean
	if persistent {
		args := make([]any, 0, 2*len(subs))
		for _, s := range subs {
			args = append(args, s.Filter, int(s.QoS))
		}
		if err := r.rdb.HSet(ctx, r.subKey(clientID), args...).Err(); err != nil {
			return fmt.Errorf("subscribe %d filters: %w", len(subs), unavailable("store subscriptions", err))
		}
	}
	// Record the new QoS and what it replaces, under the lock route checks
	// c under; route then reads the QoS from c.subs.
	prev := make(map[string]prevSub, len(subs))
	filters := make([]string, 0, len(subs))
	r.mu.Lock()
	if r.clients[clientID] != c {
		r.mu.Unlock()
		return fmt.Errorf("subscribe %d filters: client %q is not attached", len(subs), clientID)
	}
	for _, s := range subs {
		if _, seen := prev[s.Filter]; !seen {
			q, had := c.subs[s.Filter]
			prev[s.Filter] = prevSub{q, had}
			if !had {
				c.markSince(s.Filter, started)
			}
			filters = append(filters, s.Filter)
		}
		c.subs[s.Filter] = s.QoS
	}
	r.mu.Unlock()
	changed, err := r.route(ctx, c, filters)
	switch {
	case err != nil:
	case persistent:
		err = r.startFloor(ctx, c)
	case changed:
		err = r.barrier(ctx)
	}
	if err != nil {
		r.undoMany(ctx, c, prev)
		return fmt.Errorf("subscribe %d filters: %w", len(subs), err)
	}
	_, err = r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, s := range subs {
			p.Publish(ctx, r.eventChannel(), subscriptionEvent("subscribe", clientID, s.Filter, s.QoS))
		}
		return nil
	})
	if err != nil {
		r.log.Warn("subscription events not published", "client", clientID, "filters", len(subs), "err", err)
	}
	return nil
}

// prevSub is a client's subscription to a filter before a change.
type prevSub struct {
	qos byte
	had bool
}

// undoMany restores c's subscriptions to the filters of prev as they were
// before a SubscribeMany that failed.
func (r *Redis) undoMany(ctx context.Context, c *redisClient, prev map[string]prevSub) {
	ctx = context.WithoutCancel(ctx)
	var restore, drop []string
	r.mu.Lock()
	attached := r.clients[c.id] == c
	for f, p := range prev {
		if p.had {
			c.subs[f] = p.qos
			restore = append(restore, f)
		} else {
			delete(c.subs, f)
			delete(c.since, f)
			drop = append(drop, f)
		}
	}
	r.mu.Unlock()
	if attached {
		// route sets the previous QoS again; unroute removes the rest.
		if _, err := r.route(ctx, c, restore); err != nil {
			r.log.Warn("restore subscriptions after failed subscribe", "client", c.id, "err", err)
		}
	}
	if err := r.unroute(ctx, c, drop); err != nil {
		r.log.Warn("unsubscribe after failed subscribe", "client", c.id, "err", err)
	}
	if c.clean {
		return
	}
	_, err := r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for f, s := range prev {
			if s.had {
				p.HSet(ctx, r.subKey(c.id), f, int(s.qos))
			} else {
				p.HDel(ctx, r.subKey(c.id), f)
			}
		}
		return nil
	})
	if err != nil {
		r.log.Warn("stored subscriptions not restored after failed subscribe", "client", c.id, "err", err)
	}
}

// undoSubscribe restores c's subscription to filter as it was before a
// Subscribe that failed: the previous QoS, or none.
func (r *Redis) undoSubscribe(ctx context.Context, c *redisClient, filter string, prev byte, had bool) {
	r.psMu.Lock()
	r.mu.Lock()
	var change pattern.Change
	if r.clients[c.id] == c {
		if had {
			c.subs[filter] = prev
			r.trie.Subscribe(filter, c.id, prev)
		} else {
			delete(c.subs, filter)
			delete(c.since, filter)
			if _, empty := r.trie.Unsubscribe(filter, c.id); empty {
				change = r.patterns.Remove(filter)
			}
		}
	}
	r.mu.Unlock()
	if err := r.applyChange(ctx, change); err != nil {
		r.log.Warn("unsubscribe after failed subscribe", "client", c.id, "filter", filter, "err", err)
	}
	r.psMu.Unlock()
	if c.clean {
		return
	}
	ctx = context.WithoutCancel(ctx)
	var err error
	if had {
		err = r.rdb.HSet(ctx, r.subKey(c.id), filter, int(prev)).Err()
	} else {
		err = r.rdb.HDel(ctx, r.subKey(c.id), filter).Err()
	}
	if err != nil {
		r.log.Warn("stored subscription not restored after failed subscribe", "client", c.id, "filter", filter, "err", err)
	}
}

// Unsubscribe implements Bridge.
func (r *Redis) Unsubscribe(ctx context.Context, clientID, filter string) error {
	r.psMu.Lock()
	r.mu.Lock()
	c := r.clients[clientID]
	if c == nil {
		r.mu.Unlock()
		r.psMu.Unlock()
		return fmt.Errorf("unsubscribe %q: client %q is not attached", filter, clientID)
	}
	_, had := c.subs[filter]
	delete(c.subs, filter)
	delete(c.since, filter)
	var change pattern.Change
	if _, empty := r.trie.Unsubscribe(filter, clientID); had && empty {
		change = r.patterns.Remove(filter)
	}
	persistent := !c.clean
	r.mu.Unlock()
	err := r.applyChange(ctx, change)
	r.psMu.Unlock()
	if err != nil {
		return fmt.Errorf("unsubscribe %q: %w", filter, err)
	}
	if !had {
		return nil
	}
	_, err = r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		if persistent {
			p.HDel(ctx, r.subKey(clientID), filter)
		}
		p.Publish(ctx, r.eventChannel(), subscriptionEvent("unsubscribe", clientID, filter, 0))
		return nil
	})
	if err != nil {
		return fmt.Errorf("unsubscribe %q: %w", filter, unavailable("remove subscription", err))
	}
	return nil
}

// subscriptionEvent is EMQX's mqtt_channel event.
func subscriptionEvent(kind, clientID, filter string, qos byte) string {
	b, _ := json.Marshal(struct {
		Type     string `json:"type"`
		Topic    string `json:"topic"`
		ClientID string `json:"clientid"`
		QoS      int    `json:"qos"`
	}{kind, filter, clientID, int(qos)})
	return string(b)
}

// routeChunk is how many subscriptions route, unroute and SubscribeMany
// change under one hold of the delivery lock (r.mu) and of psMu: a few
// hundred microseconds, after which deliveries and other clients'
// subscriptions get their turn. A client with 100,000 filters therefore
// never stops the replica; its own Attach or Detach just takes a little
// longer.
const routeChunk = 256

// route adds c's subscriptions to filters to the trie, at the QoS in
// c.subs, and the filters new to this replica to the pattern set, chunk by
// chunk, issuing each chunk's Redis commands before the next. changed
// reports that Redis subscriptions were changed (the caller then waits for
// a barrier). It stops at the first Redis error, or when c is no longer
// attached; what it routed stays routed, for the caller to undo.
func (r *Redis) route(ctx context.Context, c *redisClient, filters []string) (changed bool, err error) {
	fresh := make([]string, 0, min(routeChunk, len(filters)))
	for len(filters) > 0 {
		chunk := filters[:min(routeChunk, len(filters))]
		filters = filters[len(chunk):]
		fresh = fresh[:0]
		r.psMu.Lock()
		r.mu.Lock()
		if r.clients[c.id] != c {
			r.mu.Unlock()
			r.psMu.Unlock()
			return changed, fmt.Errorf("route subscriptions: client %q is not attached", c.id)
		}
		for _, f := range chunk {
			if q, ok := c.subs[f]; ok && r.trie.Subscribe(f, c.id, q) {
				fresh = append(fresh, f)
			}
		}
		r.mu.Unlock()
		change := r.patterns.Update(fresh, nil)
		err := r.applyChange(ctx, change)
		r.psMu.Unlock()
		changed = changed || !change.Empty()
		if err != nil {
			return changed, err
		}
	}
	return changed, nil
}

// unroute removes c's subscriptions to filters from the trie, and the
// filters no local client uses any more from the pattern set, chunk by
// chunk like route. It goes on after a Redis error (go-redis keeps the
// names and re-subscribes them on reconnect; receivers re-match, so an
// extra subscription costs bandwidth only) and returns the first.
func (r *Redis) unroute(ctx context.Context, c *redisClient, filters []string) error {
	var first error
	gone := make([]string, 0, min(routeChunk, len(filters)))
	for len(filters) > 0 {
		chunk := filters[:min(routeChunk, len(filters))]
		filters = filters[len(chunk):]
		gone = gone[:0]
		r.psMu.Lock()
		r.mu.Lock()
		for _, f := range chunk {
			if _, empty := r.trie.Unsubscribe(f, c.id); empty {
				gone = append(gone, f)
			}
		}
		r.mu.Unlock()
		err := r.applyChange(ctx, r.patterns.Update(nil, gone))
		r.psMu.Unlock()
		if err != nil && first == nil {
			first = err
		}
	}
	return first
}

// filterList returns the filters of subs.
func filterList(subs map[string]byte) []string {
	out := make([]string, 0, len(subs))
	for f := range subs {
		out = append(out, f)
	}
	return out
}

// markSince records that c subscribed filter at t. r.mu is held.
func (c *redisClient) markSince(filter string, t time.Time) {
	if c.since == nil {
		c.since = make(map[string]time.Time)
	}
	c.since[filter] = t
}
