package broker

import (
	"context"
	"time"
)

// Position is where a Cluster carried a message: for the Redis bridge, the
// stream shard and stream id of a QoS ≥ 1 message. The core never reads
// it; it hands it back to SessionGate.Gate for each receiver, so that a
// store that replays the Cluster's streams can apply its replay and cursor
// rules. Shard < 0 means no position (QoS 0 messages, or a single node).
type Position struct {
	Shard int
	Seq   [2]uint64
}

// NoPosition is the Position of a message a cluster carried without one.
var NoPosition = Position{Shard: -1}

// Receiver is the core as its Cluster sees it: where messages from any
// node, this one included, arrive to be matched to local clients.
type Receiver interface {
	// Receive matches msg against this node's subscriptions and hands it
	// to each matching client once, at the highest QoS granted among its
	// matches [MQTT-3.3.5-1]. It is the only place a message meets local
	// clients.
	Receive(msg *Message, pos Position)
	// RetainedChanged keeps the core's mirror of the retained topic names
	// current: present is false once topic's retained message is cleared.
	RetainedChanged(topic string, present bool)
	// ReplaceRetained replaces the whole mirror of the retained topic
	// names with names: a cluster that may have missed changes (Redis
	// after its subscription dropped) reloads them. The cluster calls it
	// from the goroutine that calls RetainedChanged, so that no change
	// falls between the load and the swap.
	ReplaceRetained(names []string)
	// Checkpoint visits the live persistent sessions of this node (see
	// Broker.Checkpoint): a cluster that stores session cursors brings
	// them forward with it.
	Checkpoint(due func(clientID string) bool, mark func(clientID string))
	// Queue is the offline queue's rule (bound and expiry), counted in
	// the core's statistics, for a store that builds offline queues
	// itself (from the Redis streams) to apply.
	Queue() OfflineQueue
	// DeliverShared hands msg, which another node handed off for group (a
	// whole "$share/{ShareName}/{filter}": a member there went away
	// without acknowledging it, or that node won it and had no member
	// left), to the next live member of group on this node. It reports
	// false when no local member took it (section 4.8.2).
	DeliverShared(group string, msg *Message) bool
}

// Cluster is the seam between the core and the other nodes: a single node
// uses a loopback that hands every message straight back to Receive; the
// Redis bridge carries messages between replicas.
type Cluster interface {
	// Bind hands the cluster the core it delivers into. New calls it
	// once, before anything else.
	Bind(r Receiver)
	// PublishAsync accepts msg for every node, this one included
	// (through Receiver.Receive), and stores or clears it as the retained
	// message of its topic when msg.Retain is set [MQTT-3.3.1-5]
	// [MQTT-3.3.1-10]. done reports the result: for QoS 1 and 2, nil means
	// the message cannot be lost by this node failing. done must not
	// block; for the messages of one Message.ClientID (not empty) that one
	// goroutine queues, done runs in the order they were queued (a
	// session's acknowledgements [MQTT-4.6.0-2]), and may run before
	// PublishAsync returns.
	PublishAsync(ctx context.Context, msg *Message, done func(error))
	// Route makes messages matching filters reach this node: the core
	// calls it when a filter gets its first local subscriber, and waits
	// for it before a SUBACK, so that a message published after the
	// SUBACK reaches the client.
	Route(ctx context.Context, filters []string) error
	// Unroute undoes Route for filters that lost their last local
	// subscriber.
	Unroute(ctx context.Context, filters []string) error
	// Subscribed runs once a SUBSCRIBE's subs are routed, before its
	// SUBACK, with no lock held: a cluster that replays stored messages
	// raises a persistent session's floor to the streams' ends, so that no
	// replay hands it a message from before the subscription
	// [MQTT-4.5.0-1], and announces the subscriptions. An error undoes the
	// SUBSCRIBE.
	Subscribed(ctx context.Context, clientID string, subs []Subscription, persistent bool) error
	// Unsubscribed runs once an UNSUBSCRIBE removed filter, which the
	// client held, with no lock held: a cluster announces it.
	Unsubscribed(ctx context.Context, clientID, filter string)
	// ClaimShared decides whether this node delivers msg, which matches the
	// filter of group (a whole "$share/{ShareName}/{filter}"), to one of
	// its local members of that group: for each group, exactly one node
	// of the cluster takes each message (section 4.8.2). When this node
	// takes it, the cluster calls take, at once or later from another
	// goroutine; take hands msg to one live local member and reports false
	// when none took it, so that a cluster may let another node have it.
	// It runs on the receive path, with no lock held, and must not block
	// (a cluster that asks a shared store does so off this goroutine).
	ClaimShared(group string, msg *Message, take func() bool)
	// ShareMembers tells the cluster that this node now has members local
	// members of group (0: none left), for a cluster that spreads a
	// group's messages over its nodes by their members. It runs under the
	// core's routeMu (and a client's delivery lock on a SUBSCRIBE) and
	// must not block.
	ShareMembers(group string, members int)
	// SharedElsewhere reports whether the cluster knows of a connected
	// member of group on another node (as last read): a persistent member
	// that goes away keeps what no member can take (share.go, HandBack).
	// It must not block.
	SharedElsewhere(group string) bool
	// HandOffShared gives msgs, which no live member of group on this node
	// can take, to the group's members on the other nodes, where one member
	// gets each (Receiver.DeliverShared), in order. It reports false, with
	// nothing done, when the cluster has no other node. It runs with no
	// lock held and may wait for the cluster.
	HandOffShared(ctx context.Context, group string, msgs []*Message) (bool, error)
	// SharedDone tells the cluster that the member of each group of ds
	// on this node that took its message is done with it: acknowledged
	// (QoS 1), sent (QoS 2 or 0: it stays with that member
	// [MQTT-4.8.2-5]), dropped, or kept by a stored session. A cluster
	// that records what a node's members owe, for another node to give
	// to other members should this one die, forgets those. With wait it
	// returns once the cluster has forgotten them (before a QoS 2 message
	// is written to its member), else at once, the work queued. It runs
	// with no lock held.
	SharedDone(ctx context.Context, ds []SharedDelivery, wait bool) error
	// PublishWill publishes will, due because sub's connection of
	// clientID ended without DISCONNECT [MQTT-3.1.2-8], unless it was
	// already published for this connection (a node that declared this
	// one dead did): then it returns false and nil. Exactly one node
	// publishes a will. A will the cluster cannot publish now is retried
	// in the background until it is published or the cluster closes; the
	// first error is returned.
	PublishWill(ctx context.Context, clientID string, sub Subscriber, will *Message) (bool, error)
	// Ready reports whether this node can serve clients now.
	Ready(ctx context.Context) error
	// Stats returns the cluster's counters by name.
	Stats() map[string]int64
	// Close stops the cluster.
	Close() error
}

// SessionGate is a Store's hold on one connection's session while the
// connection is live on this node: Store.Claim returns it, and the core
// calls it under the client's delivery lock until Leave, so its methods
// must neither block nor call into the core. A store that finds an
// offline session's messages itself (not RoutesOffline, the Redis
// streams) replays them when the session returns while live messages keep
// arriving, and applies its replay and cursor rules here; a store that
// RoutesOffline has none (NoGate).
type SessionGate interface {
	// Subscribing tells the store the subscriptions a SUBSCRIBE sets, or
	// the undo of one restores, before the trie matches them: each filter
	// at its granted QoS, fresh[i] set when the client did not hold
	// subs[i].Filter before (a filter made again keeps its start
	// [MQTT-3.8.4-3]). at is when the SUBSCRIBE arrived. A store whose
	// Gate sees old messages (a replay, a re-publish) records when each
	// fresh filter began and each filter's QoS, so that Gate never hands a
	// filter a message published before it [MQTT-4.5.0-1]. The
	// subscriptions a stored session comes back with are Claim's own, and
	// are not told here.
	Subscribing(subs []Subscription, fresh []bool, at time.Time)
	// Unsubscribing tells the store that the client no longer holds
	// filter: an UNSUBSCRIBE, or a SUBSCRIBE undone.
	Unsubscribing(filter string)
	// Gate decides, for a message that matches the client, whether it
	// goes to the connection now and at which grant: a store that replays
	// stored messages holds back, or skips, live copies of what a replay
	// returns. granted is the highest QoS among the client's matching
	// subscriptions; the core caps the result by msg.QoS. pos is where
	// the Cluster carried msg.
	Gate(msg *Message, pos Position, granted byte) (qos byte, deliver bool)
	// Leave tells the store that the connection stops receiving: no
	// message Gate has not passed for it before Leave reaches it. It runs
	// before Store.Save, under the registry lock too. A store that
	// replays stored messages takes the session's cursor here: every
	// message Gate saw for the client was delivered or is in the state
	// saved next, and every message it did not see is after the cursor.
	Leave()
}

// NoGate is the SessionGate of a store with nothing to hold back: every
// message goes at the grant of the matching subscriptions.
var NoGate SessionGate = noGate{}

type noGate struct{}

func (noGate) Subscribing([]Subscription, []bool, time.Time) {}
func (noGate) Unsubscribing(string)                          {}
func (noGate) Leave()                                        {}
func (noGate) Gate(_ *Message, _ Position, granted byte) (byte, bool) {
	return granted, true
}

// Store is the seam between the core and what outlives a connection:
// stored sessions, retained messages and wills.
type Store interface {
	// RoutesOffline reports how offline persistent sessions get their
	// messages. True (an in-memory store): the core keeps their
	// subscriptions matched and hands each QoS ≥ 1 message to Enqueue.
	// False (the Redis streams): the store finds the messages itself when
	// the session is claimed again, and Enqueue is never called.
	RoutesOffline() bool
	// Claim makes owner's new connection sub the holder of clientID's
	// stored session and returns it, nil when there is none. With
	// life.CleanStart it discards it and returns nil [MQTT-3.1.2-4]
	// [MQTT-3.1.2-6]. life.Persistent and life.Expiry say how long the
	// session outlives the connection; a shared store keeps them for the
	// node that reaps this one should it die with the connection open. A
	// session that belongs to another user is refused with ErrNotOwner,
	// changing nothing. A store shared by several nodes first ends a
	// connection of clientID on another node [MQTT-3.1.4-2], and keeps
	// sub to end it when another node asks. will is kept to be published
	// if this node dies with the connection open. For a store that
	// RoutesOffline it runs under the client's delivery lock, so that no
	// message falls between the stored queue and the new connection;
	// otherwise under the attach lock alone, since it may wait for
	// another node.
	//
	// With the session it returns the connection's SessionGate, which
	// the core consults for every message delivered to it while it is
	// live (NoGate for a store with nothing to hold back).
	Claim(ctx context.Context, clientID, owner string, sub Subscriber, life Lifetime, will *Message) (*StoredSession, SessionGate, error)
	// Resume completes a successful Claim once the core has registered
	// the client and routed the stored subscriptions (Claim's, with the
	// client's own): a store that does not RoutesOffline records the
	// connection and finds what the session missed, merging what Gate held
	// back meanwhile, and returns stored with it. stored is Claim's
	// result, nil for a Clean Start or new session. It runs under the
	// attach lock, with no other lock held. On error the core unregisters
	// the client, unroutes its filters and calls Abandon.
	Resume(ctx context.Context, clientID string, stored *StoredSession) (*StoredSession, error)
	// Abandon undoes a successful Claim whose Attach failed afterwards,
	// leaving the session stored as Claim found it and the client id
	// free, so that the next connection need not take over one that never
	// attached. It runs under the attach lock, with no other lock held.
	Abandon(ctx context.Context, clientID string)
	// Save stores state as clientID's session when its connection ends;
	// a nil state removes everything stored for it. For a store that
	// RoutesOffline it runs under the client's delivery lock.
	Save(ctx context.Context, clientID string, state *StoredSession) error
	// Enqueue keeps d for clientID's offline session, by the offline
	// queue's rule (OfflineQueue). It runs under the client's delivery
	// lock and must not block.
	Enqueue(clientID string, d Delivery)
	// SaveSubscriptions stores subs (filter and granted QoS) for
	// clientID's persistent session before the core routes them; an error
	// leaves them unrouted. A store that RoutesOffline keeps nothing
	// here: the core's registry is its record of subscriptions.
	SaveSubscriptions(ctx context.Context, clientID string, subs []Subscription) error
	// DropSubscription removes filter from clientID's stored
	// subscriptions.
	DropSubscription(ctx context.Context, clientID, filter string) error
	// RetainedSizes returns the payload size of the retained message of
	// each of topics, -1 for a topic that has none.
	RetainedSizes(ctx context.Context, topics []string) ([]int, error)
	// RetainedRead returns the retained messages of topics, in order,
	// leaving out the topics that have none.
	RetainedRead(ctx context.Context, topics []string) ([]*Message, error)
	// Stats returns the store's counters by name.
	Stats() map[string]int64
	// Close releases the store.
	Close() error
}
