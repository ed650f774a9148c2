package bridge

import (
	"context"
	"encoding/json"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bridgemq/server/broker"
)

// Route implements broker.Cluster: in Redis Cluster, the shards the filters
// need are subscribed (routeShards); otherwise the filters new to this
// replica join the pattern set, routeChunk at a time, each chunk's SUBSCRIBE or PSUBSCRIBE
// issued before the next, and it returns once Redis routes them here (a
// barrier), so that a message published after the SUBACK reaches the
// client.
func (r *Redis) Route(ctx context.Context, filters []string) error {
	if r.bus != nil {
		return r.routeShards(ctx, filters)
	}
	changed := false
	for len(filters) > 0 {
		chunk := filters[:min(routeChunk, len(filters))]
		filters = filters[len(chunk):]
		r.psMu.Lock()
		change := r.patterns.Update(chunk, nil)
		err := r.applyChange(ctx, change)
		r.psMu.Unlock()
		changed = changed || !change.Empty()
		if err != nil {
			return err
		}
	}
	if changed {
		return r.barrier(ctx)
	}
	return nil
}

// Unroute implements broker.Cluster: filters no local client uses any more
// leave the pattern set. It goes on after a Redis error (go-redis keeps the
// names and re-subscribes them on reconnect; the core re-matches, so an
// extra subscription costs bandwidth only) and returns the first.
func (r *Redis) Unroute(ctx context.Context, filters []string) error {
	if r.bus != nil {
		r.unrouteShards(filters)
		return nil
	}
	var first error
	for len(filters) > 0 {
		chunk := filters[:min(routeChunk, len(filters))]
		filters = filters[len(chunk):]
		r.psMu.Lock()
		err := r.applyChange(ctx, r.patterns.Update(nil, chunk))
		r.psMu.Unlock()
		if err != nil && first == nil {
			first = err
		}
	}
	return first
}

// routeChunk is how many filters Route and Unroute change under one hold
// of psMu, so that a client with 100,000 filters never holds up other
// clients' subscriptions for long.
const routeChunk = 256

// Subscribing implements broker.SessionGate: c's mirror of the
// subscriptions follows the core's, and each filter new to the client
// records when it began, so that the gate never hands it an old message
// published before it [MQTT-4.5.0-1]. A filter made again keeps its start:
// the flow of messages is not interrupted [MQTT-3.8.4-3].
func (c *redisClient) Subscribing(subs []Subscription, fresh []bool, at time.Time) {
	c.r.mu.Lock()
	defer c.r.mu.Unlock()
	for i, s := range subs {
		c.subs[s.Filter] = s.QoS
		c.setOptions(s.Filter, s.Options)
		if fresh[i] && !at.IsZero() {
			c.markSince(s.Filter, at)
		}
	}
}

// Unsubscribing implements broker.SessionGate.
func (c *redisClient) Unsubscribing(filter string) {
	c.r.mu.Lock()
	defer c.r.mu.Unlock()
	delete(c.subs, filter)
	delete(c.opts, filter)
	delete(c.since, filter)
}

// Subscribed implements broker.Cluster. A persistent session's floor is
// raised to the streams' current ends, so that no replay ever hands it a
// message from before it subscribed [MQTT-4.5.0-1]; then the EMQX events
// go out, in one pipeline.
func (r *Redis) Subscribed(ctx context.Context, clientID string, subs []Subscription, persistent bool) error {
	if persistent {
		r.mu.Lock()
		c := r.conns[clientID]
		r.mu.Unlock()
		if c != nil {
			if err := r.startFloor(ctx, c); err != nil {
				return err
			}
		}
	}
	_, err := r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
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

// Unsubscribed implements broker.Cluster: the EMQX event goes out.
func (r *Redis) Unsubscribed(ctx context.Context, clientID, filter string) {
	if err := r.rdb.Publish(ctx, r.eventChannel(), subscriptionEvent("unsubscribe", clientID, filter, 0)).Err(); err != nil {
		r.log.Warn("unsubscription event not published", "client", clientID, "filter", filter, "err", err)
	}
}

// SaveSubscriptions implements broker.Store: one HSET stores a persistent
// session's filters before they are routed; one that Redis refuses to
// store is answered 0x80 and is not routed either.
func (r *Redis) SaveSubscriptions(ctx context.Context, clientID string, subs []Subscription) error {
	if len(subs) == 0 {
		return nil
	}
	args := make([]any, 0, 2*len(subs))
	for _, s := range subs {
		args = append(args, s.Filter, encodeSubscription(s.QoS, s.Options))
	}
	if err := r.rdb.HSet(ctx, r.subKey(clientID), args...).Err(); err != nil {
		return unavailable("store subscriptions", err)
	}
	return nil
}

// DropSubscription implements broker.Store.
func (r *Redis) DropSubscription(ctx context.Context, clientID, filter string) error {
	if err := r.rdb.HDel(ctx, r.subKey(clientID), filter).Err(); err != nil {
		return unavailable("remove subscription", err)
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

// markSince records that c subscribed filter at t. r.mu is held.
func (c *redisClient) markSince(filter string, t time.Time) {
	if c.since == nil {
		c.since = make(map[string]time.Time)
	}
	c.since[filter] = t
}

var (
	_ broker.Cluster     = (*Redis)(nil)
	_ broker.Store       = (*Redis)(nil)
	_ broker.SessionGate = (*redisClient)(nil)
)
