package broker

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// MemoryOptions configures a single node (NewMemory).
type MemoryOptions struct {
	// MaxQueued bounds the messages kept for one offline session; when it
	// is reached the oldest message is dropped, and counted.
	MaxQueued int
	// MaxQueuedBytes bounds their bytes as well, applied when the session
	// is stored and when it resumes (here its messages are shared with
	// every other session they went to); zero: no byte bound.
	MaxQueuedBytes int
	// MessageExpiry drops messages queued for an offline session longer than
	// this; zero keeps them until the session returns.
	MessageExpiry time.Duration
	// SessionExpiry removes a persistent session offline longer than this,
	// with its subscriptions; zero keeps it.
	SessionExpiry time.Duration
}

// NewMemory returns a single node with no external service: the core, an
// in-memory Store and a loopback Cluster. Nothing survives a restart.
func NewMemory(o MemoryOptions) *Broker {
	st := &memStore{sessions: make(map[string]*memSession), retained: make(map[string]*Message), wills: make(map[string]*time.Timer)}
	b := New(st, &loopback{store: st}, Options(o))
	st.queue = b.queue
	return b
}

// memStore is the in-memory Store: stored sessions with their offline
// queues, and retained messages. Its lock is a leaf.
type memStore struct {
	queue OfflineQueue

	mu       sync.Mutex
	sessions map[string]*memSession
	retained map[string]*Message
	// wills holds the delayed wills waiting for their delay, by client
	// id; a new connection with the id stops one (Claim).
	wills map[string]*time.Timer

	willsSent atomic.Int64 // wills published, delayed ones included
}

// memSession is a persistent session stored while its client is offline.
type memSession struct {
	owner string
	state *StoredSession // nil while a connection holds the session
}

// RoutesOffline implements Store: the core keeps an offline session's
// subscriptions matched and hands its messages to Enqueue.
func (s *memStore) RoutesOffline() bool { return true }

// Claim implements Store.
func (s *memStore) Claim(_ context.Context, clientID, owner string, _ Subscriber, life Lifetime, _ *Message) (*StoredSession, SessionGate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ss := s.sessions[clientID]
	if ss != nil && ss.owner != owner {
		return nil, nil, fmt.Errorf("%w: user %q may not use the session of user %q", ErrNotOwner, owner, ss.owner)
	}
	if t := s.wills[clientID]; t != nil && t.Stop() {
		// [MQTT-3.1.3-9] a new connection before the Will Delay
		// Interval has passed: the will is not sent.
		delete(s.wills, clientID)
	}
	if life.CleanStart || ss == nil {
		// [MQTT-3.1.2-4] [MQTT-3.1.2-6] Clean Start discards any
		// previous session.
		s.sessions[clientID] = &memSession{owner: owner}
		return nil, NoGate, nil
	}
	st := ss.state
	ss.state = nil
	if st != nil {
		st.Queued = s.queue.Bound(st.Queued)
	}
	// The core's registry holds the offline queue: nothing to hold back.
	return st, NoGate, nil
}

// Resume implements Store: the core's registry already holds what the
// session missed.
func (s *memStore) Resume(_ context.Context, _ string, stored *StoredSession) (*StoredSession, error) {
	return stored, nil
}

// Abandon implements Store: a single node has no record of the
// connection to undo; the core saves the claimed session back itself.
func (s *memStore) Abandon(context.Context, string) {}

// Save implements Store.
func (s *memStore) Save(_ context.Context, clientID string, state *StoredSession) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if state == nil {
		delete(s.sessions, clientID)
		return nil
	}
	ss := s.sessions[clientID]
	if ss == nil {
		return fmt.Errorf("save session %q: not claimed", clientID)
	}
	ss.state = state
	return nil
}

// Enqueue implements Store.
func (s *memStore) Enqueue(clientID string, d Delivery) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ss := s.sessions[clientID]; ss != nil && ss.state != nil {
		ss.state.Queued = s.queue.Push(ss.state.Queued, d)
	}
}

// SaveSubscriptions implements Store: the core's registry is the record.
func (s *memStore) SaveSubscriptions(context.Context, string, []Subscription) error { return nil }

// DropSubscription implements Store: the core's registry is the record.
func (s *memStore) DropSubscription(context.Context, string, string) error { return nil }

// setRetained stores msg as the retained message of its topic
// [MQTT-3.3.1-5], or clears it when its payload is empty [MQTT-3.3.1-10];
// it reports whether the topic has one now.
func (s *memStore) setRetained(msg *Message) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(msg.Payload) == 0 {
		delete(s.retained, msg.Topic)
		return false
	}
	s.retained[msg.Topic] = msg
	return true
}

// RetainedSizes implements Store.
func (s *memStore) RetainedSizes(_ context.Context, topics []string) ([]int, error) {
	out := make([]int, len(topics))
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, t := range topics {
		out[i] = -1
		if m, ok := s.retained[t]; ok {
			out[i] = m.Size()
		}
	}
	return out, nil
}

// RetainedRead implements Store.
func (s *memStore) RetainedRead(_ context.Context, topics []string) ([]*Message, error) {
	out := make([]*Message, 0, len(topics))
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range topics {
		if m, ok := s.retained[t]; ok {
			out = append(out, m)
		}
	}
	return out, nil
}

// Stats implements Store; the core counts the offline queues.
func (s *memStore) Stats() map[string]int64 {
	return map[string]int64{"wills_published": s.willsSent.Load()}
}

// Close implements Store: delayed wills still waiting are dropped with
// the node, as every other state of a single node is.
func (s *memStore) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, t := range s.wills {
		t.Stop()
		delete(s.wills, id)
	}
	return nil
}

// delayWill publishes will with publish after its WillDelay, unless Claim
// stops it first.
func (s *memStore) delayWill(clientID string, will *Message, publish func(*Message)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if old := s.wills[clientID]; old != nil {
		old.Stop()
	}
	var t *time.Timer
	t = time.AfterFunc(will.WillDelay, func() {
		s.mu.Lock()
		mine := s.wills[clientID] == t
		if mine {
			delete(s.wills, clientID)
		}
		s.mu.Unlock()
		if mine {
			w := *will
			w.Time, w.WillDelay = time.Now(), 0
			publish(&w)
		}
	})
	s.wills[clientID] = t
}

// loopback is the Cluster of a single node: every message goes straight
// back to the core.
type loopback struct {
	store *memStore
	core  Receiver
	// retainMu orders the retained store and the core's mirror of it, so
	// that two publishes to one topic leave both alike.
	retainMu sync.Mutex
}

// Bind implements Cluster.
func (l *loopback) Bind(r Receiver) { l.core = r }

// PublishAsync implements Cluster: the message is delivered, and done
// called, before it returns.
func (l *loopback) PublishAsync(_ context.Context, msg *Message, done func(error)) {
	if msg.Retain {
		l.retainMu.Lock()
		l.core.RetainedChanged(msg.Topic, l.store.setRetained(msg))
		l.retainMu.Unlock()
	}
	l.core.Receive(msg, NoPosition)
	done(nil)
}

// Route implements Cluster: every message already reaches the one node.
func (l *loopback) Route(context.Context, []string) error { return nil }

// Unroute implements Cluster.
func (l *loopback) Unroute(context.Context, []string) error { return nil }

// Subscribed implements Cluster: a single node keeps no floor and
// announces nothing.
func (l *loopback) Subscribed(context.Context, string, []Subscription, bool) error { return nil }

// Unsubscribed implements Cluster.
func (l *loopback) Unsubscribed(context.Context, string, string) {}

// ClaimShared implements Cluster: the one node takes every message for
// every group, at once.
func (l *loopback) ClaimShared(_ string, _ *Message, take func() bool) { take() }

// ShareMembers implements Cluster: a single node spreads nothing.
func (l *loopback) ShareMembers(string, int) {}

// SharedElsewhere implements Cluster: a single node has no other.
func (l *loopback) SharedElsewhere(string) bool { return false }

// SharedDone implements Cluster: a single node records nothing of what
// its members owe; nothing survives its process.
func (l *loopback) SharedDone(context.Context, []SharedDelivery, bool) error { return nil }

// HandOffShared implements Cluster: there is no other node to hand to.
func (l *loopback) HandOffShared(context.Context, string, []*Message) (bool, error) {
	return false, nil
}

// PublishWill implements Cluster: a single node is the only one that can
// publish the will, so it always does: at once, or after its WillDelay
// unless the client connects again first (then it reports false).
func (l *loopback) PublishWill(ctx context.Context, clientID string, _ Subscriber, will *Message) (bool, error) {
	if will.WillDelay > 0 {
		l.store.delayWill(clientID, will, func(w *Message) {
			l.store.willsSent.Add(1)
			l.PublishAsync(context.Background(), w, func(error) {})
		})
		return false, nil
	}
	var err error
	l.PublishAsync(ctx, will, func(e error) { err = e })
	if err == nil {
		l.store.willsSent.Add(1)
	}
	return err == nil, err
}

// Ready implements Cluster; a single node is always ready.
func (l *loopback) Ready(context.Context) error { return nil }

// Stats implements Cluster.
func (l *loopback) Stats() map[string]int64 { return nil }

// Close implements Cluster.
func (l *loopback) Close() error { return nil }
