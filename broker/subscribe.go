package broker

import (
	"context"
	"fmt"
	"time"

	"github.com/bridgemq/server/topics"
)

// client returns the registry entry of clientID.
func (b *Broker) client(clientID string) (*client, error) {
	b.mu.RLock()
	c := b.clients[clientID]
	b.mu.RUnlock()
	if c == nil {
		return nil, fmt.Errorf("client %q is not attached", clientID)
	}
	return c, nil
}

// Subscribe routes messages matching filter to clientID's connection at
// up to qos, replacing an existing subscription to the same filter.
func (b *Broker) Subscribe(ctx context.Context, clientID, filter string, qos byte) error {
	if err := b.subscribe(ctx, clientID, []Subscription{{Filter: filter, QoS: qos}}); err != nil {
		return fmt.Errorf("subscribe %q: %w", filter, err)
	}
	return nil
}

// SubscribeMany is Subscribe for each of subs, in order, all or nothing:
// on error none of them is routed (a filter subscribed before keeps its
// previous QoS). The filters of one SUBSCRIBE packet go together.
func (b *Broker) SubscribeMany(ctx context.Context, clientID string, subs []Subscription) error {
	if err := b.subscribe(ctx, clientID, subs); err != nil {
		return fmt.Errorf("subscribe %d filters: %w", len(subs), err)
	}
	return nil
}

func (b *Broker) subscribe(ctx context.Context, clientID string, subs []Subscription) error {
	at := time.Now()
	for _, s := range subs {
		if err := topics.ValidateFilter(s.Filter); err != nil {
			return err // [MQTT-4.7.1-2] [MQTT-4.7.1-3]
		}
		if _, _, _, err := topics.ParseShared(s.Filter); err != nil {
			return err // [MQTT-4.8.2-1] [MQTT-4.8.2-2]
		}
	}
	c, err := b.client(clientID)
	if err != nil {
		return err
	}
	c.mu.Lock()
	persistent := !c.clean
	attached := c.live != nil || c.offline
	c.mu.Unlock()
	if !attached {
		return fmt.Errorf("client %q is not attached", clientID)
	}
	if persistent {
		if err := b.store.SaveSubscriptions(ctx, clientID, subs); err != nil {
			return err
		}
	}
	b.routeMu.Lock()
	fresh := make([]string, 0, len(subs))
	prev := make([]prevSub, len(subs))
	isNew := make([]bool, len(subs))
	c.mu.Lock()
	if c.live == nil && !c.offline {
		// Detached meanwhile: its subscriptions are being released.
		c.mu.Unlock()
		b.routeMu.Unlock()
		return fmt.Errorf("client %q is not attached", clientID)
	}
	for i, s := range subs {
		q, had := c.subs[s.Filter]
		prev[i] = prevSub{s.Filter, q, c.opts[s.Filter], had}
		isNew[i] = !had // a filter named twice is new the first time only
		c.subs[s.Filter] = s.QoS
		c.setOptions(s.Filter, s.Options)
	}
	// Before the trie matches the new filters: Gate, under c.mu, sees
	// their start with the first message they match.
	c.gate.Subscribing(subs, isNew, at)
	for _, s := range subs {
		if f := b.subscribeLocked(c, s.Filter, s.QoS); f != "" {
			fresh = append(fresh, f)
		}
	}
	c.mu.Unlock()
	if len(fresh) > 0 {
		if err := b.cluster.Route(ctx, fresh); err != nil {
			b.undoSubscribe(ctx, c, prev)
			b.routeMu.Unlock()
			return fmt.Errorf("route: %w", err)
		}
	}
	b.routeMu.Unlock()
	if err := b.cluster.Subscribed(ctx, clientID, subs, persistent); err != nil {
		b.routeMu.Lock()
		b.undoSubscribe(ctx, c, prev)
		b.routeMu.Unlock()
		return err
	}
	return nil
}

// prevSub is a client's subscription to a filter before a change.
type prevSub struct {
	filter string
	qos    byte
	opts   SubOptions
	had    bool
}

// setOptions records the options of c's subscription to filter; c.mu is
// held. A client that never uses options keeps no map.
func (c *client) setOptions(filter string, o SubOptions) {
	if o.IsZero() {
		delete(c.opts, filter)
		return
	}
	if c.opts == nil {
		c.opts = make(map[string]SubOptions)
	}
	c.opts[filter] = o
}

// undoSubscribe restores c's subscriptions to the filters of prev as they
// were before a subscribe that could not be routed; routeMu is held. prev
// is undone from its end, so that a filter named twice in one SUBSCRIBE
// gets back what it had before the first.
func (b *Broker) undoSubscribe(ctx context.Context, c *client, prev []prevSub) {
	var empty []string
	c.mu.Lock()
	if c.live == nil && !c.offline {
		c.mu.Unlock()
		return // detached meanwhile: release removes what it subscribed
	}
	for i := len(prev) - 1; i >= 0; i-- {
		p := prev[i]
		if p.had {
			c.subs[p.filter] = p.qos
			c.setOptions(p.filter, p.opts)
			c.gate.Subscribing([]Subscription{{Filter: p.filter, QoS: p.qos, Options: p.opts}}, []bool{false}, time.Time{})
			b.subscribeLocked(c, p.filter, p.qos) // routed: it was held
			continue
		}
		if _, ok := c.subs[p.filter]; ok {
			delete(c.subs, p.filter)
			delete(c.opts, p.filter)
			c.gate.Unsubscribing(p.filter)
		}
		if f := b.unsubscribeLocked(c, p.filter); f != "" {
			empty = append(empty, f)
		}
	}
	persistent := !c.clean
	c.mu.Unlock()
	ctx = context.WithoutCancel(ctx)
	_ = b.cluster.Unroute(ctx, empty)
	if persistent {
		for i := len(prev) - 1; i >= 0; i-- {
			if p := prev[i]; p.had {
				_ = b.store.SaveSubscriptions(ctx, c.id, []Subscription{{Filter: p.filter, QoS: p.qos, Options: p.opts}})
			} else {
				_ = b.store.DropSubscription(ctx, c.id, p.filter)
			}
		}
	}
}

// Unsubscribe removes clientID's subscription to filter, if any.
func (b *Broker) Unsubscribe(ctx context.Context, clientID, filter string) error {
	c, err := b.client(clientID)
	if err != nil {
		return fmt.Errorf("unsubscribe %q: %w", filter, err)
	}
	b.routeMu.Lock()
	c.mu.Lock()
	if c.live == nil && !c.offline {
		c.mu.Unlock()
		b.routeMu.Unlock()
		return fmt.Errorf("unsubscribe %q: client %q is not attached", filter, clientID)
	}
	_, had := c.subs[filter]
	if had {
		delete(c.subs, filter)
		delete(c.opts, filter)
		c.gate.Unsubscribing(filter)
	}
	unroute := b.unsubscribeLocked(c, filter)
	persistent := !c.clean
	c.mu.Unlock()
	if unroute != "" {
		err = b.cluster.Unroute(ctx, []string{unroute})
	}
	b.routeMu.Unlock()
	if err != nil {
		return fmt.Errorf("unsubscribe %q: %w", filter, err)
	}
	if had && persistent {
		if err := b.store.DropSubscription(ctx, clientID, filter); err != nil {
			return fmt.Errorf("unsubscribe %q: %w", filter, err)
		}
	}
	if had {
		b.cluster.Unsubscribed(ctx, clientID, filter)
	}
	return nil
}
