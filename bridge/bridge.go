// Package bridge is everything replicas share: live fan-out of application
// messages, the retained store, persistent sessions and their offline queues,
// and the registry of which connection owns a client id.
//
// Two implementations sit behind one interface: Memory, in-process, for a
// single node with no external service; and Redis, which lets any number of
// replicas behave as one broker. Neither knows about MQTT packet encoding.
package bridge

import (
	"context"

	"github.com/bridgemq/server/broker"
)

// The shared types moved to package broker, the local broker core; these
// aliases keep the bridge's callers compiling until they move.
type (
	// ID is broker.ID.
	ID = broker.ID
	// Message is broker.Message.
	Message = broker.Message
	// Properties is broker.Properties.
	Properties = broker.Properties
	// UserProperty is broker.UserProperty.
	UserProperty = broker.UserProperty
	// Subscriber is broker.Subscriber.
	Subscriber = broker.Subscriber
	// StoredSession is broker.StoredSession.
	StoredSession = broker.StoredSession
	// Delivery is broker.Delivery.
	Delivery = broker.Delivery
	// Inflight is broker.Inflight.
	Inflight = broker.Inflight
	// Subscription is broker.Subscription.
	Subscription = broker.Subscription
)

// Bridge routes messages between the sessions of every replica and stores
// what must outlive a connection. Every implementation provides all of it:
// a caller never probes for optional behaviour.
type Bridge interface {
	// Attach makes sub the live connection of clientID, first ending any
	// other connection with the same id on any node [MQTT-3.1.4-2]. owner
	// is the username of the connection ("" when anonymous): a session
	// belongs to the user that created it, and while one is stored or
	// connected under another username Attach refuses with ErrNotOwner
	// and changes nothing. With
	// clean it discards any stored session [MQTT-3.1.2-6] and returns nil;
	// otherwise it returns the stored session, or nil when there is none, and
	// routes the stored subscriptions to sub. will is kept so that it is
	// published if this node dies with the connection open; nil for none.
	Attach(ctx context.Context, clientID, owner string, sub Subscriber, clean bool, will *Message) (*StoredSession, error)
	// Detach ends sub's ownership of clientID; it does nothing when another
	// connection has taken the client id over. A nil state ends a clean
	// session and removes everything stored for it; otherwise state is kept
	// and messages matching its subscriptions are queued for it until it
	// reconnects. The caller publishes the will when one is due.
	Detach(ctx context.Context, clientID string, sub Subscriber, state *StoredSession) error
	// Subscribe routes messages matching filter to clientID's connection at
	// up to qos, replacing an existing subscription to the same filter.
	Subscribe(ctx context.Context, clientID, filter string, qos byte) error
	// SubscribeMany is Subscribe for each of subs, in order, all or
	// nothing: on error none of them is routed (a filter subscribed before
	// keeps its previous QoS). The filters of one SUBSCRIBE packet go
	// together, in a few round trips rather than a few per filter.
	SubscribeMany(ctx context.Context, clientID string, subs []Subscription) error
	// Unsubscribe removes clientID's subscription to filter, if any.
	Unsubscribe(ctx context.Context, clientID, filter string) error
	// Publish hands msg to every matching subscription on every node, and
	// stores or clears it as the retained message of its topic when
	// msg.Retain is set. It returns nil only once the message is accepted:
	// for QoS 1 and 2, accepted means it cannot be lost by this node failing.
	Publish(ctx context.Context, msg *Message) error
	// PublishAsync queues msg as Publish would and calls done with the
	// result Publish would have returned: a connection keeps reading while
	// its messages travel, and acknowledges each one when done reports it
	// accepted. done must not block; the calls for the messages one
	// goroutine queues come in the order it queued them. done may run
	// before PublishAsync returns.
	PublishAsync(ctx context.Context, msg *Message, done func(error))
	// PublishWill publishes will, due because sub's connection of clientID
	// ended without DISCONNECT [MQTT-3.1.2-8], unless it was already
	// published for this connection (a replica that declared this one
	// dead did): then it returns false and nil. Exactly one replica
	// publishes a will. If the will is refused, the bridge keeps trying in
	// the background until it is published or the bridge closes, and
	// returns the first error.
	PublishWill(ctx context.Context, clientID string, sub Subscriber, will *Message) (bool, error)
	// RetainedTopics returns the names of the topics whose retained
	// messages filter matches. A new subscription to a wide filter then
	// holds only the matching names at once, and reads the messages page
	// by page as its client takes them [MQTT-3.3.1-6].
	RetainedTopics(ctx context.Context, filter string) ([]string, error)
	// RetainedMessages returns the retained messages of a prefix of topics
	// as they are now, in the order of topics, leaving out the topics that
	// no longer have one, and the length of that prefix. The prefix stops
	// before the topic whose payload would take the page's payloads past
	// maxBytes, but always holds the first topic, so a page of large
	// messages is bounded by bytes, not by its count of topics; maxBytes
	// ≤ 0 reads every topic.
	RetainedMessages(ctx context.Context, topics []string, maxBytes int) ([]*Message, int, error)
	// Ready reports whether the bridge can serve clients now (the shared
	// store is reachable); the readiness check fails while it returns an
	// error.
	Ready(ctx context.Context) error
	// Stats returns the bridge's counters by name, read when scraped.
	Stats() map[string]int64
	// Close releases the bridge's resources.
	Close() error
}

// ErrUnavailable is broker.ErrUnavailable: the shared store cannot be
// reached; the operation may succeed when retried later.
var ErrUnavailable = broker.ErrUnavailable

// ErrNotOwner is broker.ErrNotOwner: a CONNECT for a client id whose
// session belongs to another user, refused with CONNACK 0x05.
var ErrNotOwner = broker.ErrNotOwner
