package broker

import (
	"context"
	"fmt"
	"maps"
	"sync"
	"time"
)

// Attach makes sub the live connection of clientID, first ending any other
// connection with the same id [MQTT-3.1.4-2]. owner is the username of
// the connection ("" when anonymous): a session belongs to the user that
// created it, and while one is stored or connected under another username
// Attach refuses with ErrNotOwner and changes nothing. With
// life.CleanStart it discards any stored session [MQTT-3.1.2-4]
// [MQTT-3.1.2-6] and returns nil; otherwise it returns the stored session,
// or nil when there is none, with its subscriptions routed to sub
// [MQTT-3.1.2-5]. life.Persistent decides whether the session outlives the
// connection (Detach is then given its state). will is kept so that it is
// published if this node dies with the connection open; nil for none.
func (b *Broker) Attach(ctx context.Context, clientID, owner string, sub Subscriber, life Lifetime, will *Message) (*StoredSession, error) {
	unlock := b.lockClient(clientID)
	defer unlock()
	var release []*client // entries replaced here, their subscriptions to drop
	defer func() {
		for _, c := range release {
			b.release(ctx, c)
		}
	}()
	for attempt := 0; ; attempt++ {
		b.mu.Lock()
		c := b.clients[clientID]
		if c != nil {
			c.mu.Lock()
			if b.expiredLocked(c, time.Now()) {
				// Expired, not yet swept: as if it had never been.
				b.dropLocked(ctx, c)
				c.mu.Unlock()
				release = append(release, c)
				c = nil
			}
		}
		if c == nil {
			c = b.newClientLocked(clientID, owner)
		}
		if c.owner != owner {
			prev := c.owner
			c.mu.Unlock()
			b.mu.Unlock()
			return nil, fmt.Errorf("attach %q: %w: user %q may not use the session of user %q", clientID, ErrNotOwner, owner, prev)
		}
		if old := c.live; old != nil {
			// Another connection owns the id: end it outside the locks,
			// since its Detach takes them [MQTT-3.1.4-2].
			c.mu.Unlock()
			b.mu.Unlock()
			old.TakeOver()
			if attempt > 3 {
				return nil, fmt.Errorf("attach %q: previous connection did not detach", clientID)
			}
			// A connection that ended without detaching (a recovered
			// panic) loses its ownership here.
			c.mu.Lock()
			if c.live == old {
				c.live = nil
			}
			c.mu.Unlock()
			continue
		}
		if life.CleanStart && (c.offline || len(c.subs) > 0) {
			// [MQTT-3.1.2-4] [MQTT-3.1.2-6] Clean Start discards the
			// previous session: a new entry takes its place, and its
			// subscriptions go after the locks (Claim discards what the
			// store keeps).
			c.offline = false
			c.mu.Unlock()
			release = append(release, c)
			c = b.newClientLocked(clientID, owner)
		}
		b.mu.Unlock()
		stored, restored, err := b.claimLocked(ctx, c, sub, life, will)
		unused := err != nil && c.live == nil && !c.offline && len(c.subs) == 0
		c.mu.Unlock()
		if unused {
			b.mu.Lock()
			if b.clients[clientID] == c {
				delete(b.clients, clientID)
			}
			b.mu.Unlock()
		}
		if err == nil && len(restored) > 0 {
			err = b.routeRestored(ctx, c, sub, stored, restored)
		}
		if err != nil {
			return nil, err
		}
		resumed, err := b.store.Resume(ctx, clientID, stored)
		if err != nil {
			b.abandon(ctx, c, sub, stored)
			return nil, fmt.Errorf("attach %q: %w", clientID, err)
		}
		return resumed, nil
	}
}

// abandon undoes the Attach of sub to c after a successful Store.Claim,
// with nothing lost. For a store that RoutesOffline the core's registry is
// the record of the session: it goes back offline as Detach leaves it,
// with stored. Otherwise c leaves the registry, its filters are released,
// and Store.Abandon leaves the session stored as Claim found it. The
// attach lock is held; no other lock is.
func (b *Broker) abandon(ctx context.Context, c *client, sub Subscriber, stored *StoredSession) {
	ctx = context.WithoutCancel(ctx)
	if b.store.RoutesOffline() {
		_ = b.Detach(ctx, c.id, sub, stored)
		return
	}
	b.mu.Lock()
	c.mu.Lock()
	owned := b.clients[c.id] == c && c.live == sub
	if owned {
		c.live, c.gate, c.late = nil, NoGate, nil
		delete(b.clients, c.id)
	}
	c.mu.Unlock()
	b.mu.Unlock()
	if owned {
		b.release(ctx, c)
	}
	b.store.Abandon(ctx, c.id)
}

// routeRestored routes the subscriptions a store returned with c's
// session, routeChunk at a time, so that a session with many filters holds
// up no other SUBSCRIBE for long. If the cluster refuses, the connection
// is not attached: abandon takes c out of the registry and leaves its
// session stored whole, so that nothing is lost.
func (b *Broker) routeRestored(ctx context.Context, c *client, sub Subscriber, stored *StoredSession, filters []string) error {
	fresh := make([]string, 0, min(routeChunk, len(filters)))
	for len(filters) > 0 {
		chunk := filters[:min(routeChunk, len(filters))]
		filters = filters[len(chunk):]
		fresh = fresh[:0]
		b.routeMu.Lock()
		c.mu.Lock()
		for _, f := range chunk {
			if r := b.subscribeLocked(c, f, c.subs[f]); r != "" {
				fresh = append(fresh, r)
			}
		}
		c.mu.Unlock()
		err := b.cluster.Route(ctx, fresh)
		b.routeMu.Unlock()
		if err != nil {
			b.abandon(ctx, c, sub, stored)
			return fmt.Errorf("attach %q: route stored subscriptions: %w", c.id, err)
		}
	}
	return nil
}

// newClientLocked registers a new entry for clientID and returns it with
// its lock held; b.mu is held.
func (b *Broker) newClientLocked(clientID, owner string) *client {
	c := &client{id: clientID, owner: owner, subs: make(map[string]byte), gate: NoGate}
	b.clients[clientID] = c
	c.mu.Lock()
	return c
}

// dropLocked removes c, an expired offline session, from the registry and
// what the store keeps for it; the caller releases its subscriptions after
// the locks. b.mu and c.mu are held.
func (b *Broker) dropLocked(ctx context.Context, c *client) {
	c.offline = false
	delete(b.clients, c.id)
	// Only a store that RoutesOffline has sessions the core expires; the
	// in-memory one cannot fail.
	_ = b.store.Save(ctx, c.id, nil)
}

// claimLocked claims c's stored session for sub and makes sub its live
// connection; c.mu is held. restored lists the stored subscriptions c did
// not hold yet (a store that keeps no offline routes returns them), for the
// caller to route once c.mu is released.
func (b *Broker) claimLocked(ctx context.Context, c *client, sub Subscriber, life Lifetime, will *Message) (stored *StoredSession, restored []string, err error) {
	var gate SessionGate
	if b.store.RoutesOffline() {
		stored, gate, err = b.store.Claim(ctx, c.id, c.owner, sub, life, will)
	} else {
		// A shared store may wait for another node to end the client's
		// connection there: not under the delivery lock, which the
		// cluster's receiver may need meanwhile. c is not live, and the
		// attach lock keeps every other Attach of its id away.
		c.mu.Unlock()
		stored, gate, err = b.store.Claim(ctx, c.id, c.owner, sub, life, will)
		c.mu.Lock()
	}
	if err != nil {
		return nil, nil, fmt.Errorf("attach %q: %w", c.id, err)
	}
	if gate == nil {
		gate = NoGate
	}
	// A session resumed without Persistent (5.0 Clean Start 0 with a
	// Session Expiry Interval of 0) is clean from here on: it ends with
	// this connection [MQTT-3.1.2-23].
	c.live, c.gate, c.clean, c.offline = sub, gate, !life.Persistent, false
	if life.CleanStart || stored == nil {
		return nil, nil, nil
	}
	for f, q := range stored.Subscriptions {
		if _, ok := c.subs[f]; !ok {
			c.subs[f] = q
			c.setOptions(f, stored.Options[f])
			restored = append(restored, f)
		}
	}
	stored.Subscriptions = maps.Clone(c.subs)
	stored.Options = maps.Clone(c.opts)
	stored.Queued = b.queue.DropExpired(stored.Queued)
	return stored, restored, nil
}

// expiredLocked reports whether c is an offline persistent session that
// has outlived the session expiry; c.mu is held.
func (b *Broker) expiredLocked(c *client, now time.Time) bool {
	ttl := b.sessionTTL
	if c.expiry > 0 && (ttl == 0 || c.expiry < ttl) {
		ttl = c.expiry // [MQTT-3.1.2-23] the session's own interval
	}
	return ttl > 0 && c.live == nil && c.offline && now.Sub(c.offlineSince) > ttl
}

// Detach ends sub's ownership of clientID; it does nothing when another
// connection has taken the client id over. A nil state ends a clean
// session and removes everything stored for it; otherwise state is kept
// and messages matching its subscriptions are kept for it until it
// reconnects, within the offline queue's bound. The caller publishes the
// will when one is due.
func (b *Broker) Detach(ctx context.Context, clientID string, sub Subscriber, state *StoredSession) error {
	var gone *client // its subscriptions are released after the locks
	defer func() {
		if gone != nil {
			b.release(ctx, gone)
		}
	}()
	b.mu.Lock()
	c := b.clients[clientID]
	if c == nil {
		b.mu.Unlock()
		return nil
	}
	c.mu.Lock()
	if c.live != sub {
		c.mu.Unlock()
		b.mu.Unlock()
		return nil // taken over: the new connection owns the record
	}
	c.live = nil
	// Nothing reaches sub from here on: a cluster that replays stored
	// messages takes the session's cursor now, under the delivery lock.
	c.gate.Leave()
	c.gate = NoGate
	late := c.late
	c.late = nil
	if state != nil {
		state.Queued = b.queue.Bound(append(state.Queued, late...))
	}
	if state != nil && b.store.RoutesOffline() {
		// The core's registry is the record of the subscriptions, which
		// stay matched: messages for the session go to Store.Enqueue.
		defer b.mu.Unlock()
		defer c.mu.Unlock()
		state.Subscriptions, state.Options = nil, nil
		c.offline, c.offlineSince, c.expiry = true, time.Now(), state.Expiry
		if err := b.store.Save(ctx, clientID, state); err != nil {
			return fmt.Errorf("detach %q: %w", clientID, err)
		}
		return nil
	}
	// The client leaves this node: a new connection with its id gets a new
	// entry, and deliveries find this one neither live nor offline.
	delete(b.clients, clientID)
	gone = c
	if state != nil {
		state.Subscriptions = maps.Clone(c.subs)
		state.Options = maps.Clone(c.opts)
	}
	var err error
	if b.store.RoutesOffline() {
		err = b.store.Save(ctx, clientID, state)
	}
	c.mu.Unlock()
	b.mu.Unlock()
	if !b.store.RoutesOffline() {
		err = b.store.Save(ctx, clientID, state)
	}
	if err != nil {
		return fmt.Errorf("detach %q: %w", clientID, err)
	}
	return nil
}

// Checkpoint visits the live persistent sessions of this node, each under
// its delivery lock: for each that due reports true and whose connection
// has acknowledged everything delivered to it (Subscriber.Idle), it calls
// mark, still under that lock, so that no delivery falls between Idle and
// mark. due runs first, so that a session with nothing new costs no Idle.
// due and mark must not block. A cluster that stores session cursors
// brings them forward here, so that a node that dies leaves little to
// replay.
func (b *Broker) Checkpoint(due func(clientID string) bool, mark func(clientID string)) {
	b.mu.RLock()
	live := make([]*client, 0, len(b.clients))
	for _, c := range b.clients {
		live = append(live, c)
	}
	b.mu.RUnlock()
	for _, c := range live {
		c.mu.Lock()
		if c.live != nil && !c.clean && due(c.id) && c.live.Idle() {
			mark(c.id)
		}
		c.mu.Unlock()
	}
}

// release removes c's subscriptions from the trie, and unroutes the
// filters no local client uses any more, routeChunk filters under one
// hold of routeMu, so that a client with 100,000 filters holds up no other
// SUBSCRIBE for long. c has left the registry and is neither live nor
// offline, so nothing changes its subscriptions any more (a change under
// way holds routeMu, and then finds c detached).
func (b *Broker) release(ctx context.Context, c *client) {
	ctx = context.WithoutCancel(ctx)
	empty := make([]string, 0, min(routeChunk, len(c.subs)))
	n := 0
	b.routeMu.Lock()
	for f := range c.subs {
		if r := b.unsubscribeLocked(c, f); r != "" {
			empty = append(empty, r)
		}
		if n++; n%routeChunk == 0 {
			b.unrouteLocked(ctx, empty)
			empty = empty[:0]
			b.routeMu.Unlock()
			b.routeMu.Lock()
		}
	}
	b.unrouteLocked(ctx, empty)
	b.routeMu.Unlock()
}

// routeChunk is how many filters release handles under one hold of
// routeMu.
const routeChunk = 256

// unrouteLocked unroutes filters, if any; routeMu is held. A failure
// leaves an extra route, which costs bandwidth only: receivers re-match.
func (b *Broker) unrouteLocked(ctx context.Context, filters []string) {
	if len(filters) > 0 {
		_ = b.cluster.Unroute(ctx, filters)
	}
}

// sweepLoop removes expired offline sessions every interval until Close.
func (b *Broker) sweepLoop(every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-b.stop:
			return
		case now := <-t.C:
			b.sweep(now)
		}
	}
}

// sweep removes the offline sessions expired at now, with what the store
// keeps for them.
func (b *Broker) sweep(now time.Time) {
	var gone []*client
	b.mu.Lock()
	for _, c := range b.clients {
		c.mu.Lock()
		if b.expiredLocked(c, now) {
			b.dropLocked(context.Background(), c)
			gone = append(gone, c)
		}
		c.mu.Unlock()
	}
	b.mu.Unlock()
	for _, c := range gone {
		b.release(context.Background(), c)
	}
}

// lockClient serialises Attach for one client id on this node.
func (b *Broker) lockClient(clientID string) (unlock func()) {
	b.attachMu.Lock()
	l := b.attaches[clientID]
	if l == nil {
		l = &clientLock{}
		b.attaches[clientID] = l
	}
	l.refs++
	b.attachMu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		b.attachMu.Lock()
		if l.refs--; l.refs == 0 {
			delete(b.attaches, clientID)
		}
		b.attachMu.Unlock()
	}
}

// clientLock is a per-client-id mutex, dropped when nobody holds or waits.
type clientLock struct {
	mu   sync.Mutex
	refs int // guarded by Broker.attachMu
}
