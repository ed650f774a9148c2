// Package bridge is the Redis bridge: what lets any number of replicas
// behave as one broker. Redis is both the broker.Cluster (the publish
// pipeline, live pub/sub routing, the stream shards and their replay, the
// cursor gate, cross-replica takeover) and the broker.Store (stored
// sessions, retained messages, wills, node liveness) of each replica's
// local broker core; NewRedisBroker wires the two. A single node needs none
// of it (broker.NewMemory). It knows nothing of MQTT packet encoding.
package bridge

import (
	"github.com/bridgemq/server/broker"
)

// The shared types are package broker's; these aliases are their short
// names inside this package.
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
	// Lifetime is broker.Lifetime.
	Lifetime = broker.Lifetime
	// Delivery is broker.Delivery.
	Delivery = broker.Delivery
	// Inflight is broker.Inflight.
	Inflight = broker.Inflight
	// Subscription is broker.Subscription.
	Subscription = broker.Subscription
	// SubOptions is broker.SubOptions.
	SubOptions = broker.SubOptions
)

// ErrUnavailable is broker.ErrUnavailable: the shared store cannot be
// reached; the operation may succeed when retried later.
var ErrUnavailable = broker.ErrUnavailable

// ErrNotOwner is broker.ErrNotOwner: a CONNECT for a client id whose
// session belongs to another user, refused with CONNACK 0x05.
var ErrNotOwner = broker.ErrNotOwner
