package bridge

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bridgemq/server/bridge/pattern"
	"github.com/bridgemq/server/topics"
)

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

// SubscribeMany implements Bridge: one HSET stores a persistent
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
