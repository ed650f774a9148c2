package broker

import (
	"errors"
	"time"

	"github.com/google/uuid"
)

// ID uniquely identifies one published message across every replica. A
// replica that receives the same message more than once (Redis delivers one
// copy per matching pattern) drops the repeats by ID.
type ID [16]byte

// Message is an application message on its way from one publisher to every
// matching subscriber. A Message is shared by all its receivers and must not
// be modified once handed to Publish or Deliver.
type Message struct {
	ID       ID
	Topic    string
	Payload  []byte
	QoS      byte
	Retain   bool
	ClientID string    // the publisher's client id
	Node     string    // the node that accepted the PUBLISH
	Time     time.Time // when it was accepted
	// Properties are the MQTT 5.0 properties that travel with the message;
	// nil for none (every message a 3.1.1 client publishes).
	Properties *Properties
	// WillDelay is, for a will, how long after its connection ended it is
	// published unless a new connection with its client id arrives first
	// (the Will Delay Interval, cut to what remains of the session)
	// [MQTT-3.1.3-9]; zero publishes it at once. Other messages have none.
	WillDelay time.Duration
}

// Properties are the MQTT 5.0 properties of an application message that
// the server forwards unchanged to every 5.0 subscriber (section 3.3.2.3),
// the Message Expiry Interval excepted: it is forwarded reduced by the
// time the message waited [MQTT-3.3.2-6]. 3.1.1 subscribers get the message
// without them.
type Properties struct {
	PayloadFormat   *byte   // Payload Format Indicator, nil when absent
	MessageExpiry   *uint32 // Message Expiry Interval in seconds from Time, nil when absent
	ContentType     string  // "" when absent
	ResponseTopic   string  // "" when absent
	CorrelationData []byte  // nil when absent
	UserProperties  []UserProperty
}

// UserProperty is one name/value pair of the User Property, kept in order
// with repeats [MQTT-3.3.2-18].
type UserProperty struct{ Name, Value string }

// userPropertyOverhead is what one User Property costs in memory beyond its
// name and value: the pair's two string headers.
const userPropertyOverhead = 32

// Size is what m holds in memory, as the byte bounds on queues and pages
// count it (-max-queued-bytes, retained pages): its topic, payload and
// MQTT 5.0 properties, each User Property with its overhead, so that a
// message of a thousand tiny properties counts for what it takes, not for
// its few bytes of payload.
func (m *Message) Size() int {
	n := len(m.Topic) + len(m.Payload)
	if p := m.Properties; p != nil {
		n += len(p.ContentType) + len(p.ResponseTopic) + len(p.CorrelationData)
		for _, u := range p.UserProperties {
			n += userPropertyOverhead + len(u.Name) + len(u.Value)
		}
	}
	return n
}

// Expired reports whether m carries a Message Expiry Interval that has
// passed at now [MQTT-3.3.2-5]; remaining is what is left of it, in whole
// seconds, when not.
func (m *Message) Expired(now time.Time) (expired bool, remaining uint32) {
	if m.Properties == nil || m.Properties.MessageExpiry == nil {
		return false, 0
	}
	interval := time.Duration(*m.Properties.MessageExpiry) * time.Second
	waited := now.Sub(m.Time)
	if m.Time.IsZero() || waited < 0 {
		waited = 0
	}
	if waited >= interval {
		return true, 0
	}
	return false, uint32((interval - waited + time.Second - 1) / time.Second)
}

// Subscriber is one live client connection on this node.
type Subscriber interface {
	// Deliver hands over msg at qos, the lower of msg.QoS and the highest QoS
	// granted among the receiver's matching subscriptions. It must not block:
	// a slow client queues or drops by its own bounded rule. It returns false
	// once the connection has ended (it is about to hand its state to
	// Detach): the broker then keeps msg for that stored session itself, so
	// that nothing falls between the two and the offline queue's bound
	// applies to it.
	Deliver(msg *Message, qos byte) bool
	// DeliverShared is Deliver for a message a shared subscription group
	// handed this connection: it keeps the group's name with it, and when
	// the connection ends it gives back, through Broker.HandBack, what it
	// had not sent or not seen acknowledged, for another member to take
	// (section 4.8.2).
	DeliverShared(msg *Message, qos byte, group string) bool
	// TakeOver ends this connection because a new connection arrived with the
	// same client id [MQTT-3.1.4-2]. It returns once the connection has
	// stopped and, for a persistent session, Detach has stored its state.
	TakeOver()
	// Idle reports that everything delivered so far has been completely
	// acknowledged by the client: nothing waits to be sent or acknowledged.
	// A cluster uses it to advance a persistent session's stored position
	// while the connection lasts, so that a replica dying repeats little.
	// It must not block and is called with the broker's delivery lock
	// held, like Deliver.
	Idle() bool
	// RemoteAddr is the client's address (the real one when a load
	// balancer sent a PROXY header), for the cluster's client record.
	RemoteAddr() string
}

// Lifetime is what a connection asks of its session: whether it starts
// from the stored one, and whether, and how long, the session outlives the
// connection. MQTT 5.0 asks the two apart (Clean Start, Session Expiry
// Interval); 3.1.1 asks both with CleanSession (see CleanSession).
type Lifetime struct {
	// CleanStart discards any stored session before the connection starts
	// a new one [MQTT-3.1.2-4]; without it a stored session is resumed
	// [MQTT-3.1.2-5].
	CleanStart bool
	// Persistent keeps the session once its connection ends; without it
	// the session ends with the connection [MQTT-3.1.2-23] (a 5.0 Session
	// Expiry Interval of 0), resumed or not.
	Persistent bool
	// Expiry is how long a persistent session is kept offline when it
	// asked for less than the store's own bound (-session-expiry); 0 for
	// that bound. A replica that dies with the connection open leaves the
	// session to the survivors for this long, as a Detach would.
	Expiry time.Duration
}

// CleanSession is the Lifetime of an MQTT 3.1 or 3.1.1 connection: with
// CleanSession 1 a new session that ends with the connection
// [MQTT-3.1.2-6], with 0 the stored session resumed and kept for the
// store's bound [MQTT-3.1.2-4].
func CleanSession(clean bool) Lifetime { return Lifetime{CleanStart: clean, Persistent: !clean} }

// StoredSession is the stored state of a persistent session (a connection is
// a session.Session; this is what outlives it) [MQTT-3.1.2-4].
type StoredSession struct {
	// Subscriptions maps each topic filter to its granted QoS.
	Subscriptions map[string]byte
	// Options maps the filters of Subscriptions that have 5.0 options or a
	// Subscription Identifier to them; nil when none has.
	Options map[string]SubOptions
	// Inflight holds outgoing QoS 1/2 messages sent but not yet completed, in
	// the order they were first sent; they are re-sent with DUP=1 on
	// reconnect [MQTT-4.4.0-1].
	Inflight []Inflight
	// Queued holds messages that were matched for the session but not yet
	// sent, oldest first: those waiting when the connection ended and those
	// that arrived while it was offline.
	Queued []Delivery
	// AwaitingRelease holds the packet ids of inbound QoS 2 messages received
	// and acknowledged with PUBREC whose PUBREL has not arrived; a PUBLISH
	// re-sent with one of these ids is not delivered again [MQTT-4.3.3-2].
	AwaitingRelease []uint16
	// Expiry is how long the session is kept offline when it asked for less
	// than the store's own bound (an MQTT 5.0 Session Expiry Interval
	// [MQTT-3.1.2-23]); 0 for the store's bound (-session-expiry).
	Expiry time.Duration
}

// Delivery is a message matched for a session, at the QoS it is to be sent.
type Delivery struct {
	Message *Message
	QoS     byte
	// Retain is set for a retained message sent because of a new
	// subscription, which goes out with RETAIN=1 [MQTT-3.3.1-8] even when
	// it waited in a stored session.
	Retain bool
}

// Inflight is one outgoing QoS 1 or 2 message awaiting its acknowledgement.
type Inflight struct {
	PacketID uint16
	Delivery
	// Released is true once PUBREC has arrived and PUBREL was sent: on
	// reconnect the PUBREL, not the PUBLISH, is re-sent.
	Released bool
}

// Subscription is one filter of a SUBSCRIBE packet with the QoS to grant
// and, for MQTT 5.0, its subscription options.
type Subscription struct {
	Filter  string
	QoS     byte
	Options SubOptions
}

// SubOptions are the MQTT 5.0 options of one subscription (section
// 3.8.3.1) and the Subscription Identifier of the SUBSCRIBE that made it
// (section 3.8.2.1.2). The zero value is a 3.1.1 subscription: what most
// clients hold, and what costs nothing on the fan-out. The core only keeps
// them with the session; the connection applies them to what it sends.
type SubOptions struct {
	// NoLocal: messages this client published are not sent to it through
	// this subscription [MQTT-3.8.3-3].
	NoLocal bool
	// RetainAsPublished: live messages keep the RETAIN flag they were
	// published with [MQTT-3.3.1-13]; otherwise it is 0 [MQTT-3.3.1-12].
	RetainAsPublished bool
	// RetainHandling: 0 sends the retained messages when subscribing
	// [MQTT-3.3.1-9], 1 only when the subscription did not exist before
	// [MQTT-3.3.1-10], 2 never [MQTT-3.3.1-11].
	RetainHandling byte
	// ID is the Subscription Identifier, sent with every message matched
	// through this subscription [MQTT-3.3.4-3]; 0 for none.
	ID uint32
}

// IsZero reports whether o is a subscription without options or
// identifier.
func (o SubOptions) IsZero() bool { return o == SubOptions{} }

// ErrUnavailable reports that the shared store cannot be reached; the
// operation may succeed when retried later.
var ErrUnavailable = errors.New("bridge unavailable")

// ErrNotOwner reports a CONNECT for a client id whose session belongs to
// another user; it is refused with CONNACK 0x05 (not authorized).
var ErrNotOwner = errors.New("client id belongs to another user")

// NewID returns a fresh message id: a UUIDv7, so ids also sort by time.
func NewID() ID {
	u, err := uuid.NewV7()
	if err != nil {
		u = uuid.New()
	}
	return ID(u)
}
