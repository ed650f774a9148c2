// Package session is one client connection's state machine: CONNECT,
// keep-alive, QoS 0/1/2 flows in both directions, packet identifiers, the
// inflight window, the will, takeover, and resending on reconnect. It talks
// to other clients only through the node's broker core (Broker).
package session

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"regexp"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bridgemq/server/broker"
	"github.com/bridgemq/server/packets"
)

// Authorizer decides who may connect and what they may do.
type Authorizer interface {
	// Authenticate returns the CONNACK return code for the credentials.
	Authenticate(usernameFlag bool, username string, passwordFlag bool, password []byte) packets.ReasonCode
	CanSubscribe(clientID, username, filter string) bool
	CanRead(clientID, username, topic string) bool
	CanWrite(clientID, username, topic string) bool
	// ChecksReads reports whether CanRead can ever refuse, so the delivery
	// path can skip it.
	ChecksReads() bool
}

// AllowAll is the Authorizer that accepts every client and every topic.
type AllowAll struct{}

// Authenticate implements Authorizer.
func (AllowAll) Authenticate(bool, string, bool, []byte) packets.ReasonCode { return packets.Accepted }

// CanSubscribe implements Authorizer.
func (AllowAll) CanSubscribe(string, string, string) bool { return true }

// CanRead implements Authorizer.
func (AllowAll) CanRead(string, string, string) bool { return true }

// CanWrite implements Authorizer.
func (AllowAll) CanWrite(string, string, string) bool { return true }

// ChecksReads implements Authorizer.
func (AllowAll) ChecksReads() bool { return false }

// Config holds the limits a session enforces.
type Config struct {
	NodeID         string
	MaxPacketSize  int
	ConnectTimeout time.Duration
	// MaxInflight bounds outgoing QoS 1/2 messages awaiting acknowledgement;
	// it is also the Receive Maximum a 5.0 client is given, and held to, for
	// its own QoS 1/2 PUBLISH packets [MQTT-3.3.4-7].
	MaxInflight int
	// MaxQueued bounds messages waiting to be written to one connection;
	// beyond it new messages are dropped and counted, QoS 0 and QoS 1/2
	// alike (Mosquitto's max_queued_messages rule).
	MaxQueued int
	// MaxQueuedBytes bounds the same queue by the bytes of its messages'
	// topics and payloads (Mosquitto's max_queued_bytes); 0 = no bound. A
	// message larger than the bound still gets through an empty queue.
	MaxQueuedBytes int
	// WriteTimeout closes a connection whose socket accepts no bytes for
	// this long (from half of it on: the writer renews its deadline only
	// when less than half is left).
	WriteTimeout time.Duration
	// ClientIDPattern, when set, is what every client id a client sends
	// must match; others get CONNACK 0x02.
	ClientIDPattern *regexp.Regexp
	// MaxSubscriptions bounds the distinct filters one client holds; a
	// SUBSCRIBE filter beyond it is answered 0x80. 0 = unlimited.
	MaxSubscriptions int
	// MaxTopicLength and MaxTopicLevels bound topic names and filters, in
	// bytes and levels (0 = the protocol's own limit only): a filter over
	// them is answered 0x80, a PUBLISH over them is refused (a QoS 1/2 one
	// closes the connection: 3.1.1 has no negative PUBACK), a will topic
	// over them refuses the CONNECT.
	MaxTopicLength int
	MaxTopicLevels int
	// SessionExpiry is how long a persistent session is kept offline
	// (-session-expiry; 0 = for ever), stated to 5.0 clients in CONNACK.
	SessionExpiry time.Duration
	// TopicAliasMaximum is the Topic Alias Maximum a 5.0 client is given
	// in CONNACK (-topic-alias-maximum; 0 = it may use none).
	TopicAliasMaximum int
	// ServerKeepAlive, when not 0, is the keep-alive a 5.0 client is told
	// to use, in whole seconds (-server-keep-alive).
	ServerKeepAlive time.Duration
	// ServerReference, when set, is where a 5.0 client is sent when the
	// server drains: its DISCONNECT says 0x9C, Use another server, with
	// this Server Reference (-server-reference), instead of 0x8B.
	ServerReference string
}

// Broker is what a session needs of its node's broker core
// (*broker.Broker, over either store): attach and detach, subscriptions,
// publishing, wills and retained reads.
type Broker interface {
	Attach(ctx context.Context, clientID, owner string, sub broker.Subscriber, life broker.Lifetime, will *broker.Message) (*broker.StoredSession, error)
	Detach(ctx context.Context, clientID string, sub broker.Subscriber, state *broker.StoredSession) error
	Subscribe(ctx context.Context, clientID, filter string, qos byte) error
	SubscribeMany(ctx context.Context, clientID string, subs []broker.Subscription) error
	Unsubscribe(ctx context.Context, clientID, filter string) error
	PublishAsync(ctx context.Context, msg *broker.Message, done func(error))
	PublishWill(ctx context.Context, clientID string, sub broker.Subscriber, will *broker.Message) (bool, error)
	HandBack(ctx context.Context, ds []broker.SharedDelivery, keep bool) ([]bool, error)
	SharedDone(ctx context.Context, ds []broker.SharedDelivery, wait bool) error
	RetainedTopics(ctx context.Context, filter string) ([]string, error)
	RetainedMessages(ctx context.Context, topics []string, maxBytes int) ([]*broker.Message, int, error)
}

var _ Broker = (*broker.Broker)(nil)

// Env is what every session of a server shares.
type Env struct {
	Broker Broker
	Auth   Authorizer
	Config Config
	Stats  *Stats
	Log    *slog.Logger
	// Inflight bounds the bytes of inbound PUBLISH packets every connection
	// of the server has read and the bridge has not yet accepted
	// (-max-inflight-bytes); nil for no bound.
	Inflight *ByteLimiter
	// AckLatency, when set, observes the seconds from reading a QoS 1 or 2
	// PUBLISH to queueing its PUBACK or PUBREC for the writer (a
	// prometheus.Histogram fits).
	AckLatency Observer
	// Identity, when set, names the user of a connection from what the
	// connection itself proves (a verified client certificate:
	// -tls-identity-as-username): the username is what it returns and the
	// CONNECT's user name and password are not checked. An error refuses
	// the CONNECT as not authorized.
	Identity func(conn net.Conn) (username string, err error)
}

// Observer takes one measurement; prometheus.Observer is one.
type Observer interface{ Observe(float64) }

// Errors that end a connection, with the reason logged.
var (
	ErrProtocolViolation = errors.New("protocol violation")
	ErrKeepAliveExpired  = errors.New("keep-alive expired")
	ErrTakenOver         = errors.New("session taken over by a new connection")
	ErrServerShutdown    = errors.New("server shutting down")
	// ErrLimit ends a connection that went past one of the server's
	// limits where MQTT 3.1.1 has no way to refuse one packet.
	ErrLimit = errors.New("server limit")
)

// Session is one client connection and the MQTT session it carries.
type Session struct {
	env  *Env
	conn net.Conn
	r    *packets.Reader
	lg   *slog.Logger // made on first use: most connections never log
	// lgHasClient records that lg carries the client id.
	lgHasClient bool

	clientID string
	username string
	version  packets.Version
	// clean is set when the session ends with the connection (3.1.1
	// CleanSession 1, a 5.0 Session Expiry Interval of 0); cleanStart when
	// the CONNECT discarded any stored session (CleanSession 1, 5.0 Clean
	// Start 1). 3.1.1 sets both or neither; 5.0 may set one alone.
	clean      bool
	cleanStart bool
	keepAlive  time.Duration
	will       *broker.Message
	// maxInflight is Config.MaxInflight, or the client's smaller Receive
	// Maximum (5.0).
	maxInflight int
	// v5 is what a 5.0 CONNECT asked of the connection (v5.go).
	v5 conn5
	// rxUnacked counts the inbound QoS 1 and 2 PUBLISH packets of this
	// connection whose flow the server has not ended (PUBACK, PUBREC
	// 0x80+, PUBCOMP), for the Receive Maximum [MQTT-3.3.4-7].
	rxUnacked atomic.Int32

	// connectExpiry is the Session Expiry Interval of a 5.0 CONNECT, in
	// seconds; expiry is how long the stored session is kept when shorter
	// than Config.SessionExpiry (0: that bound). Reader goroutine; expiry
	// under mu.
	connectExpiry uint32
	expiry        time.Duration

	mu          sync.Mutex
	ctrl        []byte     // encoded acknowledgements waiting for the writer
	pending     []outgoing // messages waiting for the writer or an inflight slot
	queuedBytes int        // size (see queuedSize) of the messages in pending and held
	peakQueued  int        // the largest queuedBytes seen, to return memory at the end
	inflight    map[uint16]inflight
	seq         uint64 // orders inflight entries for resending
	nextID      uint16
	subs        map[string]byte
	subOpts     map[string]broker.SubOptions // options of the subs that have any; nil while none has
	awaitingRel map[uint16]flow              // inbound QoS 2 ids awaiting PUBREL
	pubPending  atomic.Int32                 // PUBLISH packets the bridge has not answered
	pubRoom     chan struct{}                // cap 1: an answer wakes a reader over maxPendingPublishes; made by the reader's first PUBLISH
	gateBytes   int64                        // Env.Inflight bytes taken for the PUBLISH just read; reader only
	snapshotted bool                         // the state has been handed over; Deliver refuses
	started     bool                         // CONNACK is written: the writer may run
	halted      bool                         // the connection is closing: no writer starts again
	writing     bool                         // a writer goroutine is running
	wbuf        []byte
	wake        chan struct{} // cap 1: wakes a running writer; made with the first writer
	// wturn (cap 1) is held by whoever writes to the socket once CONNACK
	// is out: the writer, or a 5.0 DISCONNECT, which keeps it.
	wturn chan struct{}
	// connacked is set, under the write turn, once the CONNACK accepting
	// the connection is written.
	connacked atomic.Bool
	writers   sync.WaitGroup

	// Retained messages of new subscriptions (retained.go).
	feeds         []*feed                 // subscriptions with retained messages to send, in order
	leftoverFeeds []*feed                 // feeds not finished when the connection ended (set by snapshot)
	feeding       bool                    // the feeder goroutine runs
	feedRoom      chan struct{}           // cap 1: the writer took messages from pending
	feedCancel    context.CancelFunc      // ends the feeder's reads
	fetching      bool                    // a page is being read: live messages wait in held
	held          []outgoing              // live messages that arrived during a page read
	retainedMarks map[string]retainedMark // recent retained messages queued, by topic
	marksSweep    time.Time               // when retainedMarks is next swept
	feeders       sync.WaitGroup

	// Shared subscriptions (share.go), under mu: shareNames holds the
	// groups that handed this connection messages, indexed by
	// outgoing.subID; shareIndex finds a name's index. Nil until the
	// first such message.
	shareNames []string
	shareIndex map[string]uint32
	// shareDropped holds group messages dropped under mu (queued at QoS
	// 0 by the snapshot, stale after a page of retained messages) until
	// the writer or end reports them done (Broker.SharedDone).
	shareDropped []broker.SharedDelivery

	closeOnce  sync.Once
	closed     chan struct{} // closed when the connection is being torn down
	finished   chan struct{} // closed when Detach has returned
	finishOnce sync.Once
	onDone     func()
	reason     atomic.Pointer[error]
}

// outgoing is a message waiting to be sent to this client.
type outgoing struct {
	msg    *broker.Message
	qos    byte
	retain bool // RETAIN=1: sent because of a new subscription [MQTT-3.3.1-8]
	// fed is set for a retained message a feed of this connection sends
	// because of a new subscription; subID is then the Subscription
	// Identifier of its SUBSCRIBE, the only one it carries (section 3.3.4).
	// shared is set for a message a shared subscription group handed this
	// connection (DeliverShared); subID is then the group's index in
	// Session.shareNames, so that the message can go back to the group
	// when the connection ends (HandBack), with shareCleared set once a
	// QoS 2 one may be sent (share.go). A message is never both. They
	// fit in the struct's padding: it stays 16 bytes.
	fed    bool
	shared bool
	subID  uint32
}

// flow is what the server knows of the QoS 2 flow of an inbound PUBLISH
// awaiting PUBREL.
type flow uint8

const (
	// flowAccepted: the bridge has the message, PUBREC 0x00 is sent.
	flowAccepted flow = 1 << iota
	// flowCounted: the PUBLISH arrived on this connection and counts
	// against the Receive Maximum until PUBCOMP (one restored from a
	// stored session does not: the quota starts afresh with each
	// connection, section 4.9).
	flowCounted
)

// inflight is an outgoing QoS 1/2 message awaiting acknowledgement.
type inflight struct {
	outgoing
	seq      uint64
	released bool // QoS 2: PUBREC received, PUBREL sent
}

// New prepares a session for a freshly accepted connection and counts the
// connection as open until the session finishes.
func New(conn net.Conn, env *Env) *Session {
	env.Stats.Connections.Add(1)
	r := packets.NewReader(conn, env.Config.MaxPacketSize)
	r.AcceptVersion5(true)
	return &Session{
		env:         env,
		conn:        conn,
		r:           r,
		maxInflight: env.Config.MaxInflight,
		closed:      make(chan struct{}),
		wturn:       make(chan struct{}, 1),
		finished:    make(chan struct{}),
	}
}

// Serve answers the connection's CONNECT and, once it is accepted, hands the
// connection to a goroutine of its own and returns; onDone (may be nil) is
// called once the connection has ended and its session is stored. The
// handshake's deep calls (authentication, the bridge's round trips) thus
// grow a stack that is dropped with it, and an idle connection keeps only a
// small one. A panic while serving is recovered, logged and ends this
// connection only.
func (s *Session) Serve(ctx context.Context, onDone func()) {
	s.onDone = onDone
	defer s.recoverPanic()
	connack, stored, err := s.handshake(ctx)
	if err != nil {
		s.env.Stats.ConnectsRefused.Add(1)
		s.logger().Info("connection refused", "reason", err.Error())
		if connack != nil {
			if s.version == packets.Version5 {
				connack.ReturnCode = connackCode5(connack.ReturnCode)
				// A CONNACK carries a Reason String whatever the client
				// asked [MQTT-3.1.2-29].
				connack.Properties = &packets.Properties{ReasonString: refusalReason(connack.ReturnCode, err)}
			}
			if s.writeNow(connack) {
				<-s.wturn
			}
		}
		s.stop(err)
		s.finish()
		return
	}
	s.restore(stored)
	if s.writeNow(connack) {
		s.connacked.Store(true)
		<-s.wturn
	}
	s.debug("client connected", "clean", s.clean, "keepalive", s.keepAlive)
	s.mu.Lock()
	s.started = true
	s.mu.Unlock()
	s.signal() // restored messages and what arrived since Attach
	go s.run(ctx)
}

// run reads and handles packets until the connection ends, then publishes
// the will when due and hands the session to the bridge.
func (s *Session) run(ctx context.Context) {
	defer s.recoverPanic()
	s.r.Release() // most connections wait after CONNECT
	err := s.readLoop(ctx)
	s.stop(err)
	s.writers.Wait()
	s.feeders.Wait()
	s.end(ctx)
	s.finish()
}

// recoverPanic ends this connection only when serving it panicked.
func (s *Session) recoverPanic() {
	if p := recover(); p != nil {
		s.logger().Error("panic serving connection", "panic", p, "stack", string(debug.Stack()))
		s.stop(fmt.Errorf("panic: %v", p))
		s.finish()
	}
}

// finish marks the session ended, once.
func (s *Session) finish() {
	s.finishOnce.Do(func() {
		close(s.finished)
		s.env.Stats.Connections.Add(-1)
		if s.onDone != nil {
			s.onDone()
		}
	})
}

// stop records why the connection ends (the first reason wins) and closes
// the socket, which unblocks the reader and the writer.
func (s *Session) stop(reason error) {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.halted = true
		cancelFeed := s.feedCancel
		s.mu.Unlock()
		if cancelFeed != nil {
			cancelFeed()
		}
		s.reason.Store(&reason)
		sent := s.sendDisconnect(reason)
		close(s.closed)
		if !sent || !s.lingerClose() {
			_ = s.conn.Close()
		}
	})
}

// allocMaps makes the session's maps on first use, so that a connection
// that only connects and pings does not pay for them. s.mu is held.
func (s *Session) allocMaps() {
	if s.inflight == nil {
		s.inflight = make(map[uint16]inflight)
		s.subs = make(map[string]byte)
		s.awaitingRel = make(map[uint16]flow)
	}
}

// logger returns the connection's logger, carrying its remote address,
// client id and username (Env.Log adds the listener and the node). Only
// the reading goroutine logs.
func (s *Session) logger() *slog.Logger {
	if s.lg == nil || (s.clientID != "" && !s.lgHasClient) {
		s.lg = s.env.Log.With("remote", s.conn.RemoteAddr().String(), "client", s.clientID, "user", s.username)
		s.lgHasClient = s.clientID != ""
	}
	return s.lg
}

// debug logs at debug level without building the logger when it is off.
func (s *Session) debug(msg string, args ...any) {
	if s.env.Log.Enabled(context.Background(), slog.LevelDebug) {
		s.logger().Debug(msg, args...)
	}
}

func (s *Session) stopReason() error {
	if p := s.reason.Load(); p != nil {
		return *p
	}
	return nil
}

// RemoteAddr implements broker.Subscriber: the client's address, the real
// one behind a PROXY header.
func (s *Session) RemoteAddr() string { return s.conn.RemoteAddr().String() }

// TakeOver implements broker.Subscriber: a new connection with the same
// client id ends this one [MQTT-3.1.4-2]. It returns once this session's
// state is stored.
func (s *Session) TakeOver() {
	s.stop(ErrTakenOver)
	<-s.finished
}

// Shutdown ends the connection because the server is stopping.
func (s *Session) Shutdown() { s.stop(ErrServerShutdown) }

// Done is closed once the session has fully ended.
func (s *Session) Done() <-chan struct{} { return s.finished }

// writeNow writes a CONNACK synchronously, before the writer runs. It
// reports whether it was written, and then leaves the write turn to the
// caller to give back.
func (s *Session) writeNow(p packets.Packet) bool {
	buf, err := s.encode(nil, p)
	if err != nil {
		// A CONNACK the client's Maximum Packet Size cannot take is not sent
		// [MQTT-3.1.2-24]: the connection closes without one. Any other
		// encoding failure is a bug.
		if errors.Is(err, packets.ErrPacketTooLarge) {
			s.debug("CONNACK not sent", "err", err)
		} else {
			s.logger().Error("encode packet", "err", err)
		}
		s.stop(err)
		return false
	}
	select {
	case s.wturn <- struct{}{}:
	case <-s.closed:
		return false
	}
	_ = s.conn.SetWriteDeadline(time.Now().Add(s.env.Config.WriteTimeout))
	if _, err := s.conn.Write(buf); err != nil {
		<-s.wturn
		s.stop(fmt.Errorf("write: %w", err))
		return false
	}
	return true
}

// end runs once the connection is closed: publish the will when one is due,
// then hand the session to the bridge.
func (s *Session) end(ctx context.Context) {
	reason := s.stopReason()
	graceful := errors.Is(reason, errClientDisconnect)
	switch {
	case graceful:
		s.debug("client disconnected")
	case errors.Is(reason, ErrServerShutdown):
		s.debug("connection closed for shutdown")
	default:
		s.logger().Info("connection closed", "reason", describe(reason))
	}
	// [MQTT-3.1.2-8] the will is published when the connection closes
	// without DISCONNECT; [MQTT-3.1.2-10] DISCONNECT discards it. A graceful
	// server drain does not publish wills: clients reconnect elsewhere.
	if s.will != nil && !graceful && !errors.Is(reason, ErrServerShutdown) {
		s.publishWill(ctx)
	}
	var state *broker.StoredSession
	snap := s.handOver(ctx)
	if !s.clean {
		state = snap
		// Retained messages owed to a new subscription and not yet sent
		// are pending transmission [MQTT-3.1.2-5]: they wait in the
		// stored session and go out with RETAIN=1 on its return.
		s.storeLeftoverRetained(ctx, state)
	}
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := s.env.Broker.Detach(dctx, s.clientID, s, state); err != nil {
		s.logger().Error("store session", "err", err)
	}
	s.mu.Lock()
	peak := s.peakQueued
	s.mu.Unlock()
	if peak >= returnMemoryAfter {
		returnMemory()
	}
}

func (s *Session) publishWill(ctx context.Context) {
	w := s.will
	if !s.env.Auth.CanWrite(s.clientID, s.username, w.Topic) {
		s.env.Stats.PublishDenied.Add(1)
		s.logger().Info("will refused by ACL", "topic", w.Topic)
		return
	}
	w.Time = time.Now()
	w.ID = newMessageID()
	w.WillDelay = s.willDelay(w.WillDelay)
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	// Another replica may have published it already, having declared
	// this one dead; a refused will is retried by the bridge.
	published, err := s.env.Broker.PublishWill(pctx, s.clientID, s, w)
	if err != nil {
		s.logger().Error("publish will; retrying", "topic", w.Topic, "err", err)
	}
	if published {
		s.env.Stats.WillsPublished.Add(1)
	}
}

// willDelay is how long the will waits for a new connection with the
// client id: its Will Delay Interval, but no longer than the session lasts
// [MQTT-3.1.3-9]: a session that ends with the connection publishes it at
// once, a stored one when it expires, if that comes first.
func (s *Session) willDelay(asked time.Duration) time.Duration {
	if asked <= 0 || s.clean {
		return 0
	}
	s.mu.Lock()
	expiry := s.expiry
	s.mu.Unlock()
	if expiry > 0 {
		asked = min(asked, expiry)
	}
	if limit := s.env.Config.SessionExpiry; limit > 0 {
		asked = min(asked, limit)
	}
	return asked
}

// describe turns the end-of-connection error into a short reason.
func describe(err error) string {
	switch {
	case err == nil:
		return "closed"
	case errors.Is(err, io.EOF):
		return "client closed the connection"
	case errors.Is(err, os.ErrDeadlineExceeded):
		return "timeout"
	}
	return err.Error()
}
