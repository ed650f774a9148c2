// Package broker is the local broker core: the registry of the clients
// connected to this node, the subscription trie, and the one fan-out that
// hands a message to each matching local client once, at the highest QoS
// among its matching subscriptions [MQTT-3.3.5-1]. It also does the
// takeover of a client id on this node [MQTT-3.1.4-2], the offline queue's
// bound and expiry, and retained lookups, from a mirror of the retained
// topic names, page by page.
//
// Two narrow seams stand behind it: a Cluster carries messages to and
// from the other nodes (a loopback for a single node, the Redis bridge for
// replicas), and a Store keeps what outlives a connection (in memory for a
// single node, or in Redis). NewMemory wires the single node: the core, an
// in-memory Store and a loopback Cluster. The package knows nothing of
// packet bytes or of Redis.
package broker

import (
	"context"
	"fmt"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bridgemq/server/topics"
)

// Broker is the local broker core of one node: the registry of its
// clients, its subscription trie and the one fan-out (Receive), in front of
// a Store and a Cluster. Its methods are safe for concurrent use.
//
// Lock order. A goroutine that holds several of these takes them in this
// order, and none is held across a Cluster or Store call unless it says so:
//
//	attach lock   per client id (lockClient), held for a whole Attach,
//	              Store.Claim, the routing of restored subscriptions,
//	              Store.Resume and Store.Abandon included; TakeOver of the previous connection runs under
//	              it, with nothing else held, since that connection's
//	              Detach takes the locks below
//	routeMu       held while a change of the trie's filters (first or last
//	              local subscriber) and its Cluster.Route or Unroute run,
//	              so that the cluster's routes follow the trie in order
//	mu            the client registry (clients)
//	client.mu     one client's delivery lock: its live Subscriber, owner,
//	              subscriptions and late list; held while a message is
//	              delivered to it (its SessionGate's Gate and Store.Enqueue
//	              run under it, the gate's Subscribing and Unsubscribing
//	              when its subscriptions change, its Leave when its
//	              connection detaches, Checkpoint's due and mark), and,
//	              for a Store that RoutesOffline, across
//	              Store.Claim and Store.Save so that no message falls
//	              between the stored queue and the connection
//	trie          topics.Trie's own lock; Receive holds no other lock
//	              while it matches
//	Subscriber    Deliver and Idle run under client.mu and take the
//	              connection's own lock (session.Session.mu), so a
//	              Subscriber never calls into the broker while holding it
//
// attachMu (the attach lock table) and shareGroup.mu (one shared
// subscription group's members) are leaves. Cluster.ShareMembers runs
// under routeMu (and client.mu on a SUBSCRIBE); Cluster.ClaimShared,
// SharedElsewhere and HandOffShared under none.
type Broker struct {
	store      Store
	cluster    Cluster
	queue      OfflineQueue
	sessionTTL time.Duration
	stop       chan struct{} // closed by Close; ends the expiry sweep
	closeOnce  sync.Once

	attachMu sync.Mutex
	attaches map[string]*clientLock

	routeMu sync.Mutex

	mu      sync.RWMutex // guards clients
	clients map[string]*client

	subs *topics.Trie[*client]
	// shareGroups holds this node's shared subscription groups by their
	// whole "$share/{ShareName}/{filter}" (under routeMu); shareTrie
	// matches their filters, and shareCount lets Receive skip it while
	// there are none (share.go).
	shareGroups map[string]*shareGroup
	shareTrie   *topics.Trie[*shareGroup]
	shareCount  atomic.Int64
	shareSubs   atomic.Int64                              // members of all groups
	matches     sync.Pool                                 // of *topics.Matches[*client], reused by Receive
	retained    atomic.Pointer[topics.Retained[struct{}]] // replaced whole by ReplaceRetained
	// local holds the retained messages of this node alone (PublishLocal:
	// the $SYS figures), which neither the Store nor the Cluster sees.
	local *topics.Retained[*Message]

	queuedDropped atomic.Int64
	expired       atomic.Int64
	// shareHandedBack counts the messages HandBack gave another member;
	// shareDropped those of ended sessions that no member took.
	shareHandedBack, shareDropped atomic.Int64
}

// client is everything the core knows about one client id on this node.
type client struct {
	id string

	mu    sync.Mutex
	owner string     // the username that created the session
	live  Subscriber // nil while offline
	// gate is the Store's SessionGate of the live connection (Claim's),
	// NoGate before the first claim and after Leave.
	gate  SessionGate
	clean bool
	subs  map[string]byte
	// opts holds the options of the filters of subs that have any; nil
	// while none has (see SubOptions).
	opts map[string]SubOptions
	// offline is set while the stored session of a Store that
	// RoutesOffline waits here for its client, its subscriptions matched.
	offline      bool
	offlineSince time.Time
	expiry       time.Duration // StoredSession.Expiry of the offline session

	late []Delivery // refused by a closing connection, for its Detach
}

// Options configures the core.
type Options struct {
	// MaxQueued bounds the messages kept for one offline session; the
	// oldest are dropped, and counted. Default 1000.
	MaxQueued int
	// MaxQueuedBytes bounds their bytes (Message.Size) as well; zero: no
	// byte bound.
	MaxQueuedBytes int
	// MessageExpiry drops messages kept for an offline session longer
	// than this; zero keeps them until the session returns.
	MessageExpiry time.Duration
	// SessionExpiry removes a persistent session offline longer than
	// this, with its subscriptions, when the Store RoutesOffline (a store
	// that does not expires its sessions itself); zero keeps it.
	SessionExpiry time.Duration
}

// New returns a core that keeps sessions in store and reaches the other
// nodes through cluster. It binds cluster to itself.
func New(store Store, cluster Cluster, o Options) *Broker {
	if o.MaxQueued <= 0 {
		o.MaxQueued = 1000
	}
	b := &Broker{
		store:      store,
		cluster:    cluster,
		sessionTTL: o.SessionExpiry,
		stop:       make(chan struct{}),
		attaches:   make(map[string]*clientLock),
		clients:    make(map[string]*client),
		subs:       topics.NewTrie[*client](),

		shareGroups: make(map[string]*shareGroup),
		shareTrie:   topics.NewTrie[*shareGroup](),
	}
	b.retained.Store(topics.NewRetained[struct{}]())
	b.local = topics.NewRetained[*Message]()
	b.queue = b.OfflineQueue(o)
	b.matches.New = func() any { return new(topics.Matches[*client]) }
	cluster.Bind(b)
	if b.sessionTTL > 0 && store.RoutesOffline() {
		go b.sweepLoop(min(b.sessionTTL/4+time.Millisecond, time.Minute))
	}
	return b
}

// OfflineQueue returns the offline queue rule of o, counted in b's
// offline_queue_dropped and offline_queue_expired, for a Store to apply.
func (b *Broker) OfflineQueue(o Options) OfflineQueue {
	return OfflineQueue{Max: max(o.MaxQueued, 1), MaxBytes: o.MaxQueuedBytes, Expiry: o.MessageExpiry, Dropped: &b.queuedDropped, Expired: &b.expired}
}

// Publish hands msg to every matching subscription on every node, and
// stores or clears it as the retained message of its topic when
// msg.Retain is set. It returns nil only once the message is accepted:
// for QoS 1 and 2, accepted means it cannot be lost by this node failing.
func (b *Broker) Publish(ctx context.Context, msg *Message) error {
	w := waiters.Get().(*waiter)
	b.cluster.PublishAsync(ctx, msg, w.done)
	select {
	case err := <-w.ch:
		waiters.Put(w)
		return err
	case <-ctx.Done():
		// w.done may still run: w is not reused.
		return fmt.Errorf("publish %q: %w", msg.Topic, ctx.Err())
	}
}

// waiter turns PublishAsync's callback into Publish's answer; reused
// through waiters, so that a synchronous publish allocates nothing.
type waiter struct {
	ch   chan error
	done func(error)
}

var waiters = sync.Pool{New: func() any {
	w := &waiter{ch: make(chan error, 1)}
	w.done = func(err error) { w.ch <- err }
	return w
}}

// PublishAsync queues msg as Publish would and calls done with the result
// Publish would have returned: a connection keeps reading while its
// messages travel, and acknowledges each one when done reports it
// accepted. done must not block; the calls for the messages of one
// (non-empty) client id that one goroutine queues come in the order it
// queued them. done may run before PublishAsync returns.
func (b *Broker) PublishAsync(ctx context.Context, msg *Message, done func(error)) {
	b.cluster.PublishAsync(ctx, msg, done)
}

// PublishWill publishes will, due because sub's connection of clientID
// ended without DISCONNECT [MQTT-3.1.2-8], unless it was already published
// for this connection (a node that declared this one dead did): then it
// returns false and nil. Exactly one node publishes a will.
func (b *Broker) PublishWill(ctx context.Context, clientID string, sub Subscriber, will *Message) (bool, error) {
	ok, err := b.cluster.PublishWill(ctx, clientID, sub, will)
	if err != nil {
		return false, fmt.Errorf("publish will: %w", err)
	}
	return ok, nil
}

// Queue implements Receiver.
func (b *Broker) Queue() OfflineQueue { return b.queue }

// Connected reports whether a connection of clientID is attached to this
// node now: false once its end (a DISCONNECT read, a takeover, a close)
// has detached it.
func (b *Broker) Connected(clientID string) bool {
	b.mu.Lock()
	c := b.clients[clientID]
	b.mu.Unlock()
	if c == nil {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.live != nil
}

// PublishLocal hands msg to this node's matching clients only, and keeps it
// as this node's own retained message of its topic when msg.Retain is set:
// it reaches neither the other nodes nor the Store. A node's $SYS figures go
// this way, since each replica publishes its own.
func (b *Broker) PublishLocal(msg *Message) {
	if msg.Retain {
		if len(msg.Payload) == 0 {
			b.local.Delete(msg.Topic)
		} else {
			b.local.Set(msg.Topic, msg)
		}
	}
	b.receive(msg, NoPosition, true)
}

// Receive implements Receiver: each matching local client receives msg
// once, at the highest QoS granted among its matching non-shared
// subscriptions [MQTT-3.3.5-1], capped by msg.QoS; then each matching
// shared subscription group on this node is offered it (share.go), which
// the cluster gives to one node's member alone. It is the only place a
// message is matched to local clients.
func (b *Broker) Receive(msg *Message, pos Position) { b.receive(msg, pos, false) }

// receive is Receive; local is set for a message of this node alone
// (PublishLocal), which its shared subscription groups take without asking
// the cluster.
func (b *Broker) receive(msg *Message, pos Position, local bool) {
	matched := b.matches.Get().(*topics.Matches[*client])
	b.subs.Subscribers(msg.Topic, matched)
	for _, m := range matched.List() {
		b.deliver(m.Key, msg, pos, m.QoS)
	}
	matched.Reset()
	b.matches.Put(matched)
	if b.shareCount.Load() > 0 {
		b.receiveShared(msg, local)
	}
}

// deliver hands msg to c's live connection, or keeps it for c's offline
// persistent session. QoS 0 messages are not kept for offline sessions.
// The live Deliver runs under c.mu so that it cannot interleave with
// Detach.
func (b *Broker) deliver(c *client, msg *Message, pos Position, granted byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.live == nil && !c.offline {
		return // gone, or not yet attached
	}
	granted, ok := c.gate.Gate(msg, pos, granted)
	if !ok {
		return
	}
	qos := min(granted, msg.QoS)
	if c.live != nil {
		if !c.live.Deliver(msg, qos) && qos > 0 {
			c.late = append(c.late, Delivery{Message: msg, QoS: qos})
		}
		return
	}
	if qos > 0 {
		b.store.Enqueue(c.id, Delivery{Message: msg, QoS: qos})
	}
}

// Ready reports whether this node can serve clients now; the readiness
// check fails while it returns an error.
func (b *Broker) Ready(ctx context.Context) error {
	if err := b.cluster.Ready(ctx); err != nil {
		return fmt.Errorf("broker ready: %w", err)
	}
	return nil
}

// Stats returns the counters of the core, its store and its cluster by
// name, read when scraped.
func (b *Broker) Stats() map[string]int64 {
	out := map[string]int64{
		"offline_queue_dropped": b.queuedDropped.Load(),
		"offline_queue_expired": b.expired.Load(),
		"retained_messages":     int64(b.retained.Load().Len()),
		"subscription_filters":  int64(b.subs.Filters()),
		"subscriptions":         int64(b.subs.Subscriptions()),
		"shared_groups":         b.shareCount.Load(),
		"shared_members":        b.shareSubs.Load(),
		"shared_handed_back":    b.shareHandedBack.Load(),
		"shared_dropped":        b.shareDropped.Load(),
	}
	maps.Copy(out, b.store.Stats())
	maps.Copy(out, b.cluster.Stats())
	return out
}

// Close stops the core, its cluster and its store.
func (b *Broker) Close() error {
	b.closeOnce.Do(func() { close(b.stop) })
	errC := b.cluster.Close()
	errS := b.store.Close()
	if errC != nil {
		return fmt.Errorf("close broker: %w", errC)
	}
	if errS != nil {
		return fmt.Errorf("close broker: %w", errS)
	}
	return nil
}
