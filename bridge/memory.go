package bridge

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bridgemq/server/broker"
	"github.com/bridgemq/server/topics"
)

// Memory is the in-process Bridge for a single node: subscriptions in a
// topics.Trie, retained messages in a topics.Retained index, persistent
// sessions and their offline queues in memory. Nothing survives a restart.
//
// Lock order. A goroutine that holds several of these takes them in this
// order:
//
//	mu            the client table (Attach, Detach, the expiry sweep)
//	memClient.mu  one client's live connection, subscriptions and stored
//	              session; held while a message is delivered to it
//	trie          topics.Trie's own lock, taken by Subscribe, Unsubscribe
//	              and Publish's match (Publish holds no other lock then)
//	Subscriber    Deliver and Idle run under memClient.mu and take the
//	              connection's own lock (session.Session.mu), so a
//	              Subscriber never calls into the bridge while holding it
//
// TakeOver is called with no lock held, since the connection's Detach
// takes mu and memClient.mu.
type Memory struct {
	queue      broker.OfflineQueue
	sessionTTL time.Duration
	stop       chan struct{} // closed by Close; ends the expiry sweep
	closeOnce  sync.Once

	mu      sync.RWMutex // guards clients
	clients map[string]*memClient

	subs     *topics.Trie[*memClient]
	retained *topics.Retained[*Message]
	matches  sync.Pool // of map[*memClient]byte, reused by Publish

	queuedDropped atomic.Int64
	expired       atomic.Int64
}

// memClient is everything the bridge knows about one client id.
type memClient struct {
	id    string
	owner string // the username that created the session

	mu            sync.Mutex
	live          Subscriber // nil while offline
	subscriptions map[string]byte
	stored        *StoredSession // state of an offline persistent session
	offlineSince  time.Time      // when stored was set
	late          []Delivery     // refused by a closing connection, for its Detach
}

// MemoryOptions configures a Memory bridge.
type MemoryOptions struct {
	// MaxQueued bounds the messages kept for one offline session; when it
	// is reached the oldest message is dropped, and counted.
	MaxQueued int
	// MessageExpiry drops messages queued for an offline session longer than
	// this; zero keeps them until the session returns.
	MessageExpiry time.Duration
	// SessionExpiry removes a persistent session offline longer than this,
	// with its subscriptions; zero keeps it.
	SessionExpiry time.Duration
}

// NewMemory returns an in-process bridge.
func NewMemory(o MemoryOptions) *Memory {
	if o.MaxQueued <= 0 {
		o.MaxQueued = 1000
	}
	m := &Memory{
		sessionTTL: o.SessionExpiry,
		stop:       make(chan struct{}),
		clients:    make(map[string]*memClient),
		subs:       topics.NewTrie[*memClient](),
		retained:   topics.NewRetained[*Message](),
	}
	m.queue = broker.OfflineQueue{Max: o.MaxQueued, Expiry: o.MessageExpiry, Dropped: &m.queuedDropped, Expired: &m.expired}
	m.matches.New = func() any { return make(map[*memClient]byte) }
	if m.sessionTTL > 0 {
		go m.sweepLoop(min(m.sessionTTL/4+time.Millisecond, time.Minute))
	}
	return m
}

// sweepLoop removes expired offline sessions every interval until Close.
func (m *Memory) sweepLoop(every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			return
		case now := <-t.C:
			m.mu.Lock()
			for id, c := range m.clients {
				c.mu.Lock()
				if m.expiredLocked(c, now) {
					m.dropSubscriptions(c)
					delete(m.clients, id)
				}
				c.mu.Unlock()
			}
			m.mu.Unlock()
		}
	}
}

// expiredLocked reports whether c is an offline persistent session that
// has outlived the session expiry; c.mu is held.
func (m *Memory) expiredLocked(c *memClient, now time.Time) bool {
	return m.sessionTTL > 0 && c.live == nil && c.stored != nil && now.Sub(c.offlineSince) > m.sessionTTL
}

// Attach implements Bridge.
func (m *Memory) Attach(_ context.Context, clientID, owner string, sub Subscriber, clean bool, _ *Message) (*StoredSession, error) {
	for attempt := 0; ; attempt++ {
		m.mu.Lock()
		c := m.clients[clientID]
		if c == nil {
			c = &memClient{id: clientID, owner: owner, subscriptions: make(map[string]byte)}
			m.clients[clientID] = c
		}
		c.mu.Lock()
		if m.expiredLocked(c, time.Now()) {
			// Expired, not yet swept: as if it had never been.
			m.dropSubscriptions(c)
			c.stored = nil
			c.owner = owner
		}
		if c.owner != owner {
			prev := c.owner
			c.mu.Unlock()
			m.mu.Unlock()
			return nil, fmt.Errorf("attach %q: %w: user %q may not use the session of user %q", clientID, ErrNotOwner, owner, prev)
		}
		if old := c.live; old != nil {
			// Another connection owns the id: end it outside the locks, since
			// its Detach takes them [MQTT-3.1.4-2].
			c.mu.Unlock()
			m.mu.Unlock()
			old.TakeOver()
			if attempt > 3 {
				return nil, fmt.Errorf("attach %q: previous connection did not detach", clientID)
			}
			// A connection that ended without detaching (a recovered panic)
			// loses its ownership here.
			c.mu.Lock()
			if c.live == old {
				c.live = nil
			}
			c.mu.Unlock()
			continue
		}
		defer m.mu.Unlock()
		defer c.mu.Unlock()
		c.live = sub
		if clean {
			// [MQTT-3.1.2-6] a clean session discards any previous one.
			m.dropSubscriptions(c)
			c.stored = nil
			return nil, nil
		}
		stored := c.stored
		c.stored = nil
		if stored == nil {
			return nil, nil
		}
		stored.Subscriptions = make(map[string]byte, len(c.subscriptions))
		for f, q := range c.subscriptions {
			stored.Subscriptions[f] = q
		}
		stored.Queued = m.queue.DropExpired(stored.Queued)
		return stored, nil
	}
}

// Detach implements Bridge.
func (m *Memory) Detach(_ context.Context, clientID string, sub Subscriber, state *StoredSession) error {
	// The subscriptions of a client that is gone are released after the
	// locks (this deferred call runs last): c has left m.clients, so a new
	// connection with its id gets a new record, and deliveries find c
	// neither live nor stored. A client with 100,000 filters then holds up
	// no other CONNECT or SUBSCRIBE; each filter takes the trie's lock
	// briefly, between deliveries.
	var release map[string]byte
	var gone *memClient
	defer func() {
		for f := range release {
			m.subs.Unsubscribe(f, gone)
		}
	}()
	m.mu.Lock()
	defer m.mu.Unlock()
	c := m.clients[clientID]
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.live != sub {
		return nil // taken over: the new connection owns the record
	}
	c.live = nil
	late := c.late
	c.late = nil
	if state == nil {
		release, gone = c.subscriptions, c
		c.subscriptions = make(map[string]byte)
		delete(m.clients, clientID)
		return nil
	}
	state.Subscriptions = nil // c.subscriptions is the record of truth
	state.Queued = m.queue.Bound(append(state.Queued, late...))
	c.stored = state
	c.offlineSince = time.Now()
	return nil
}

// dropSubscriptions removes every subscription of c; c.mu is held.
func (m *Memory) dropSubscriptions(c *memClient) {
	for f := range c.subscriptions {
		m.subs.Unsubscribe(f, c)
	}
	clear(c.subscriptions)
}

func (m *Memory) client(clientID string) (*memClient, error) {
	m.mu.RLock()
	c := m.clients[clientID]
	m.mu.RUnlock()
	if c == nil {
		return nil, fmt.Errorf("client %q is not attached", clientID)
	}
	return c, nil
}

// Subscribe implements Bridge.
func (m *Memory) Subscribe(_ context.Context, clientID, filter string, qos byte) error {
	c, err := m.client(clientID)
	if err != nil {
		return fmt.Errorf("subscribe %q: %w", filter, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.subscriptions[filter] = qos
	m.subs.Subscribe(filter, c, qos)
	return nil
}

// SubscribeMany implements Bridge. Only a client that is not attached
// fails, for every filter alike, so it is all or nothing.
func (m *Memory) SubscribeMany(_ context.Context, clientID string, subs []Subscription) error {
	c, err := m.client(clientID)
	if err != nil {
		return fmt.Errorf("subscribe %d filters: %w", len(subs), err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range subs {
		c.subscriptions[s.Filter] = s.QoS
		m.subs.Subscribe(s.Filter, c, s.QoS)
	}
	return nil
}

// Unsubscribe implements Bridge.
func (m *Memory) Unsubscribe(_ context.Context, clientID, filter string) error {
	c, err := m.client(clientID)
	if err != nil {
		return fmt.Errorf("unsubscribe %q: %w", filter, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.subscriptions, filter)
	m.subs.Unsubscribe(filter, c)
	return nil
}

// Publish implements Bridge. Each matching client receives msg once, at the
// highest QoS granted among its matching subscriptions [MQTT-3.3.5-1].
func (m *Memory) Publish(_ context.Context, msg *Message) error {
	if msg.Retain {
		if len(msg.Payload) == 0 {
			m.retained.Delete(msg.Topic) // [MQTT-3.3.1-10]
		} else {
			m.retained.Set(msg.Topic, msg) // [MQTT-3.3.1-5]
		}
	}
	matched := m.matches.Get().(map[*memClient]byte)
	m.subs.Subscribers(msg.Topic, matched)
	for c, granted := range matched {
		qos := min(granted, msg.QoS)
		c.deliver(m, msg, qos)
	}
	clear(matched)
	m.matches.Put(matched)
	return nil
}

// PublishAsync implements Bridge: the in-process Publish never waits, so
// done runs before it returns.
func (m *Memory) PublishAsync(ctx context.Context, msg *Message, done func(error)) {
	done(m.Publish(ctx, msg))
}

// PublishWill implements Bridge: a single node is the only one that can
// publish the will, so it always does.
func (m *Memory) PublishWill(ctx context.Context, _ string, _ Subscriber, will *Message) (bool, error) {
	if err := m.Publish(ctx, will); err != nil {
		return false, fmt.Errorf("publish will: %w", err)
	}
	return true, nil
}

// deliver hands msg to the live connection, or queues it for an offline
// persistent session. QoS 0 messages are not queued for offline sessions.
// The live Deliver runs under c.mu so that it cannot interleave with Detach.
func (c *memClient) deliver(m *Memory, msg *Message, qos byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.live != nil {
		if !c.live.Deliver(msg, qos) && qos > 0 {
			c.late = append(c.late, Delivery{Message: msg, QoS: qos})
		}
		return
	}
	if c.stored == nil || qos == 0 {
		return
	}
	c.stored.Queued = m.queue.Push(c.stored.Queued, Delivery{Message: msg, QoS: qos})
}

// Retained returns the retained messages whose topics match filter.
func (m *Memory) Retained(_ context.Context, filter string) ([]*Message, error) {
	var out []*Message
	m.retained.Match(filter, func(_ string, msg *Message) {
		out = append(out, msg)
	})
	return out, nil
}

var _ Bridge = (*Memory)(nil)

// RetainedTopics implements Bridge.
func (m *Memory) RetainedTopics(_ context.Context, filter string) ([]string, error) {
	var out []string
	m.retained.Match(filter, func(topic string, _ *Message) {
		out = append(out, topic)
	})
	return out, nil
}

// RetainedMessages implements Bridge.
func (m *Memory) RetainedMessages(_ context.Context, topics []string, maxBytes int) ([]*Message, int, error) {
	out := make([]*Message, 0, len(topics))
	size := 0
	for i, t := range topics {
		msg, ok := m.retained.Get(t)
		if !ok {
			continue
		}
		if size += len(msg.Payload); maxBytes > 0 && size > maxBytes && i > 0 {
			return out, i, nil
		}
		out = append(out, msg)
	}
	return out, len(topics), nil
}

// Ready implements Bridge; the in-process bridge is always ready.
func (m *Memory) Ready(context.Context) error { return nil }

// Stats implements Bridge.
func (m *Memory) Stats() map[string]int64 {
	return map[string]int64{
		"offline_queue_dropped": m.queuedDropped.Load(),
		"offline_queue_expired": m.expired.Load(),
		"retained_messages":     int64(m.retained.Len()),
		"subscription_filters":  int64(m.subs.Filters()),
	}
}

// Close implements Bridge: it stops the expiry sweep.
func (m *Memory) Close() error {
	m.closeOnce.Do(func() { close(m.stop) })
	return nil
}
