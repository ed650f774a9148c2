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
	for id, granted := range r.matched {
		c := r.clients[id]
		if c == nil {
			continue
		}
		qos := min(granted, m.QoS)
		if shard >= 0 {
			if c.replaying {
				c.pending = append(c.pending, pendingDelivery{Delivery{m, qos}, shard, sid})
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
func (r *Redis) applyChange(ctx context.Context, c topics.Change) error {
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
	var change topics.Change
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

// undoSubscribe restores c's subscription to filter as it was before a
// Subscribe that failed: the previous QoS, or none.
func (r *Redis) undoSubscribe(ctx context.Context, c *redisClient, filter string, prev byte, had bool) {
	r.psMu.Lock()
	r.mu.Lock()
	var change topics.Change
	if r.clients[c.id] == c {
		if had {
			c.subs[filter] = prev
			r.trie.Subscribe(filter, c.id, prev)
		} else {
			delete(c.subs, filter)
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
	var change topics.Change
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

// routeLocked adds c's subscriptions to the trie and returns the Redis
// change; r.psMu and r.mu are held.
func (r *Redis) routeLocked(c *redisClient) topics.Change {
	var all topics.Change
	for f, q := range c.subs {
		if r.trie.Subscribe(f, c.id, q) {
			all = mergeChange(all, r.patterns.Add(f))
		}
	}
	return all
}

// unrouteLocked removes c's subscriptions from the trie and returns the
// Redis change; r.psMu and r.mu are held.
func (r *Redis) unrouteLocked(c *redisClient) topics.Change {
	var all topics.Change
	for f := range c.subs {
		if _, empty := r.trie.Unsubscribe(f, c.id); empty {
			all = mergeChange(all, r.patterns.Remove(f))
		}
	}
	return all
}

// mergeChange composes two consecutive changes into one, cancelling a
// name subscribed by one and unsubscribed by the other.
func mergeChange(a, b topics.Change) topics.Change {
	a.Subscribe, a.Unsubscribe = composeLists(a.Subscribe, a.Unsubscribe, b.Subscribe, b.Unsubscribe)
	a.PSubscribe, a.PUnsubscribe = composeLists(a.PSubscribe, a.PUnsubscribe, b.PSubscribe, b.PUnsubscribe)
	return a
}

func composeLists(sub, unsub, sub2, unsub2 []string) ([]string, []string) {
	state := make(map[string]int) // +1 subscribed, -1 unsubscribed, net
	var order []string
	apply := func(names []string, d int) {
		for _, n := range names {
			if _, ok := state[n]; !ok {
				order = append(order, n)
			}
			state[n] += d
		}
	}
	apply(sub, 1)
	apply(unsub, -1)
	apply(sub2, 1)
	apply(unsub2, -1)
	var s, u []string
	for _, n := range order {
		switch {
		case state[n] > 0:
			s = append(s, n)
		case state[n] < 0:
			u = append(u, n)
		}
	}
	return s, u
}
