package server

import (
	"context"
	"net"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bridgemq/server/bridge"
	"github.com/bridgemq/server/topics"
)

// $SYS topics: every -sys-interval each replica publishes its own figures
// under Mosquitto's names, as retained QoS 0 messages held and delivered on
// that replica only (another replica's clients see that one's figures).
// They never travel through Redis, and a client may not publish on $SYS.

// sysTopic reports whether topic (or a filter) is in the $SYS tree. Only a
// filter whose first level is "$SYS" can match it: "#" and "+" never match
// a topic starting with '$' [MQTT-4.7.2-1].
func sysTopic(s string) bool { return s == "$SYS" || strings.HasPrefix(s, "$SYS/") }

// sysBridge is the bridge as the sessions see it when $SYS is on: it
// keeps the $SYS messages, answers the retained reads of $SYS filters
// from them, and delivers each new one to the matching subscriptions of
// this replica's clients, which it follows as they attach, subscribe,
// unsubscribe and detach. Everything else goes to the bridge it wraps.
type sysBridge struct {
	bridge.Bridge

	mu       sync.Mutex
	clients  map[string]*sysClient      // by client id, attached here
	retained map[string]*bridge.Message // $SYS topic → its latest message
	subs     int                        // subscriptions of the clients attached here
}

// sysClient is one attached connection and its subscriptions.
type sysClient struct {
	sub     bridge.Subscriber
	filters map[string]byte
}

func newSysBridge(b bridge.Bridge) *sysBridge {
	return &sysBridge{Bridge: b, clients: make(map[string]*sysClient), retained: make(map[string]*bridge.Message)}
}

// Attach implements bridge.Bridge; a resumed session brings its stored
// subscriptions.
func (b *sysBridge) Attach(ctx context.Context, clientID, owner string, sub bridge.Subscriber, clean bool, will *bridge.Message) (*bridge.StoredSession, error) {
	stored, err := b.Bridge.Attach(ctx, clientID, owner, sub, clean, will)
	if err != nil {
		return stored, err
	}
	c := &sysClient{sub: sub, filters: make(map[string]byte)}
	if stored != nil {
		for f, q := range stored.Subscriptions {
			c.filters[f] = q
		}
	}
	b.mu.Lock()
	if old := b.clients[clientID]; old != nil {
		b.subs -= len(old.filters)
	}
	b.clients[clientID] = c
	b.subs += len(c.filters)
	b.mu.Unlock()
	return stored, nil
}

// Detach implements bridge.Bridge.
func (b *sysBridge) Detach(ctx context.Context, clientID string, sub bridge.Subscriber, state *bridge.StoredSession) error {
	err := b.Bridge.Detach(ctx, clientID, sub, state)
	b.mu.Lock()
	if c := b.clients[clientID]; c != nil && c.sub == sub {
		b.subs -= len(c.filters)
		delete(b.clients, clientID)
	}
	b.mu.Unlock()
	return err
}

// Subscribe implements bridge.Bridge.
func (b *sysBridge) Subscribe(ctx context.Context, clientID, filter string, qos byte) error {
	if err := b.Bridge.Subscribe(ctx, clientID, filter, qos); err != nil {
		return err
	}
	b.subscribed(clientID, []bridge.Subscription{{Filter: filter, QoS: qos}})
	return nil
}

// SubscribeMany implements bridge.Bridge.
func (b *sysBridge) SubscribeMany(ctx context.Context, clientID string, subs []bridge.Subscription) error {
	if err := b.Bridge.SubscribeMany(ctx, clientID, subs); err != nil {
		return err
	}
	b.subscribed(clientID, subs)
	return nil
}

func (b *sysBridge) subscribed(clientID string, subs []bridge.Subscription) {
	b.mu.Lock()
	defer b.mu.Unlock()
	c := b.clients[clientID]
	if c == nil {
		return
	}
	for _, s := range subs {
		if _, had := c.filters[s.Filter]; !had {
			b.subs++
		}
		c.filters[s.Filter] = s.QoS
	}
}

// Unsubscribe implements bridge.Bridge.
func (b *sysBridge) Unsubscribe(ctx context.Context, clientID, filter string) error {
	err := b.Bridge.Unsubscribe(ctx, clientID, filter)
	b.mu.Lock()
	if c := b.clients[clientID]; c != nil {
		if _, had := c.filters[filter]; had {
			delete(c.filters, filter)
			b.subs--
		}
	}
	b.mu.Unlock()
	return err
}

// Publish implements bridge.Bridge: a client's message on a $SYS topic is
// accepted and dropped, as the ACL's refusals are, so that no client can
// pass its own figures off as the server's.
func (b *sysBridge) Publish(ctx context.Context, msg *bridge.Message) error {
	if sysTopic(msg.Topic) {
		return nil
	}
	return b.Bridge.Publish(ctx, msg)
}

// PublishAsync implements bridge.Bridge, dropping $SYS as Publish does.
func (b *sysBridge) PublishAsync(ctx context.Context, msg *bridge.Message, done func(error)) {
	if sysTopic(msg.Topic) {
		done(nil)
		return
	}
	b.Bridge.PublishAsync(ctx, msg, done)
}

// RetainedTopics implements bridge.Bridge: a $SYS filter's retained
// messages are this replica's own.
func (b *sysBridge) RetainedTopics(ctx context.Context, filter string) ([]string, error) {
	if !sysTopic(filter) {
		return b.Bridge.RetainedTopics(ctx, filter)
	}
	b.mu.Lock()
	var names []string
	for t := range b.retained {
		if topics.Match(filter, t) {
			names = append(names, t)
		}
	}
	b.mu.Unlock()
	slices.Sort(names)
	return names, nil
}

// RetainedMessages implements bridge.Bridge. The names of one call come
// from one RetainedTopics call, so they are all $SYS topics or none.
func (b *sysBridge) RetainedMessages(ctx context.Context, names []string, maxBytes int) ([]*bridge.Message, int, error) {
	if len(names) == 0 || !sysTopic(names[0]) {
		return b.Bridge.RetainedMessages(ctx, names, maxBytes)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]*bridge.Message, 0, len(names))
	for _, t := range names {
		if m := b.retained[t]; m != nil {
			out = append(out, m)
		}
	}
	return out, len(names), nil
}

// subscriptions returns how many subscriptions this replica's clients hold.
func (b *sysBridge) subscriptions() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.subs
}

// publish keeps payload as topic's retained message and delivers it, at
// QoS 0, to every matching subscription here. Deliver applies the
// client's read ACL.
func (b *sysBridge) publish(node, topic, payload string, now time.Time) {
	msg := &bridge.Message{ID: bridge.NewID(), Topic: topic, Payload: []byte(payload), Retain: true, Node: node, Time: now}
	var to []bridge.Subscriber
	b.mu.Lock()
	b.retained[topic] = msg
	for _, c := range b.clients {
		for f := range c.filters {
			if topics.Match(f, topic) {
				to = append(to, c.sub)
				break
			}
		}
	}
	b.mu.Unlock()
	for _, sub := range to {
		sub.Deliver(msg, 0)
	}
}

// version is this build's module version, for $SYS/broker/version.
func version() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return "bridgemq " + bi.Main.Version
	}
	return "bridgemq (devel)"
}

// publishSys publishes this replica's figures once and, with Redis, the
// cluster's totals.
func (s *Server) publishSys(ctx context.Context, started time.Time) {
	now := time.Now()
	st := s.Stats()
	figures := map[string]int64{
		"clients/connected":   st["connections"],
		"messages/received":   st["publish_received"],
		"messages/sent":       st["messages_delivered"],
		"bytes/received":      s.bytesIn.Load(),
		"bytes/sent":          s.bytesOut.Load(),
		"subscriptions/count": int64(s.sys.subscriptions()),
	}
	pub := func(topic, value string) { s.sys.publish(s.cfg.NodeID, topic, value, now) }
	pub("$SYS/broker/version", version())
	pub("$SYS/broker/uptime", strconv.FormatInt(int64(now.Sub(started)/time.Second), 10)+" seconds")
	for k, v := range figures {
		pub("$SYS/broker/"+k, strconv.FormatInt(v, 10))
	}
	pub("$SYS/broker/retained messages/count", strconv.FormatInt(st["bridge_retained_messages"], 10))
	if s.sysCluster == nil {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, max(s.cfg.SysInterval, time.Second))
	defer cancel()
	totals, nodes, err := s.sysCluster.exchange(cctx, figures)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Debug("$SYS cluster totals not published", "err", err)
		}
		return
	}
	for k, v := range totals {
		pub("$SYS/cluster/"+k, strconv.FormatInt(v, 10))
	}
	pub("$SYS/cluster/nodes", strconv.Itoa(nodes))
}

// runSys publishes the $SYS figures at once and then every -sys-interval
// until ctx ends.
func (s *Server) runSys(ctx context.Context) {
	started := time.Now()
	s.publishSys(ctx, started)
	t := time.NewTicker(s.cfg.SysInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.publishSys(ctx, started)
		}
	}
}

// countingConn counts the bytes a connection reads and writes, for
// $SYS/broker/bytes/received and sent.
type countingConn struct {
	net.Conn
	in, out *atomic.Int64
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.in.Add(int64(n))
	return n, err
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.out.Add(int64(n))
	return n, err
}
