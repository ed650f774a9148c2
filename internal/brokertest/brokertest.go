// Package brokertest is the fake connection the tests of the broker core
// and of the bridges share: a broker.Subscriber that records what it is
// given, with options for the behaviours a test needs (refusing, reporting
// idle, running a hook on delivery or takeover).
//
// It imports nothing of the project, so that package broker's own
// (in-package) tests can use it without an import cycle: Subscriber is
// generic over the message type, and Subscriber[broker.Message] implements
// broker.Subscriber. It is for tests only.
package brokertest

import (
	"sync"
	"testing"
	"time"
)

// waitTimeout bounds WaitFor.
const waitTimeout = 10 * time.Second

// Delivery is one message a Subscriber took.
type Delivery[M any] struct {
	Message *M
	QoS     byte
	// Group is the shared subscription group that DeliverShared named; ""
	// for a message given by Deliver.
	Group string
}

// Subscriber is a fake connection that records every message it takes. Its
// zero value takes every message, is never idle and is ready to use.
type Subscriber[M any] struct {
	// AlwaysIdle makes Idle report true, as for a client that acknowledges
	// everything at once; without it Idle reports false (the client never
	// catches up).
	AlwaysIdle bool
	// OnDeliver, if set, runs for each message the subscriber takes,
	// before it is recorded, with the subscriber's lock held (it must not
	// call the subscriber's methods).
	OnDeliver func(m *M, qos byte)
	// OnTakeOver, if set, runs in TakeOver, as a connection ending its
	// session does.
	OnTakeOver func()

	mu        sync.Mutex
	got       []Delivery[M]
	limited   bool // take only left more messages
	left      int
	takenOver int
	notify    chan struct{} // signalled on every message taken
}

// Deliver records m at qos and reports true, unless the subscriber refuses
// it (Refuse, RefuseAfter).
func (s *Subscriber[M]) Deliver(m *M, qos byte) bool { return s.take(m, qos, "") }

// DeliverShared is Deliver for a message of group, which it records with
// the message.
func (s *Subscriber[M]) DeliverShared(m *M, qos byte, group string) bool {
	return s.take(m, qos, group)
}

func (s *Subscriber[M]) take(m *M, qos byte, group string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.limited {
		if s.left == 0 {
			return false
		}
		s.left--
	}
	if s.OnDeliver != nil {
		s.OnDeliver(m, qos)
	}
	s.got = append(s.got, Delivery[M]{Message: m, QoS: qos, Group: group})
	select {
	case s.notifyLocked() <- struct{}{}:
	default:
	}
	return true
}

func (s *Subscriber[M]) notifyLocked() chan struct{} {
	if s.notify == nil {
		s.notify = make(chan struct{}, 1)
	}
	return s.notify
}

// Idle reports AlwaysIdle.
func (s *Subscriber[M]) Idle() bool { return s.AlwaysIdle }

// RemoteAddr is a fixed loopback address.
func (s *Subscriber[M]) RemoteAddr() string { return "127.0.0.1:1" }

// TakeOver counts the takeover and runs OnTakeOver.
func (s *Subscriber[M]) TakeOver() {
	s.mu.Lock()
	s.takenOver++
	f := s.OnTakeOver
	s.mu.Unlock()
	if f != nil {
		f()
	}
}

// TakenOver is how many times TakeOver was called.
func (s *Subscriber[M]) TakenOver() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.takenOver
}

// Refuse makes the subscriber refuse every later message (Deliver returns
// false), as a connection that has ended, or snapshotted its state for
// Detach, does.
func (s *Subscriber[M]) Refuse() { s.RefuseAfter(0) }

// RefuseAfter makes the subscriber take n more messages and refuse the
// rest, as a connection that closes meanwhile does.
func (s *Subscriber[M]) RefuseAfter(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.limited, s.left = true, n
}

// Deliveries returns the messages taken so far, in order.
func (s *Subscriber[M]) Deliveries() []Delivery[M] {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Delivery[M](nil), s.got...)
}

// WaitFor waits until at least n messages were taken and returns them, or
// fails the test.
func (s *Subscriber[M]) WaitFor(t testing.TB, n int) []Delivery[M] {
	t.Helper()
	deadline := time.After(waitTimeout)
	for {
		s.mu.Lock()
		got, notify := len(s.got), s.notifyLocked()
		s.mu.Unlock()
		if got >= n {
			return s.Deliveries()
		}
		select {
		case <-notify:
		case <-deadline:
			t.Fatalf("got %d deliveries, want %d", len(s.Deliveries()), n)
		}
	}
}
