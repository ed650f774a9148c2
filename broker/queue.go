package broker

import (
	"sync/atomic"
	"time"
)

// OfflineQueue is the one rule applied to the messages kept for a
// persistent session while it is offline [MQTT-3.1.2-5], whichever Store
// keeps them: at most Max of them, the newest (as EMQX's queue does, so that
// a session finds the most recent messages on return, and one resumed after
// its replica died keeps what it had not acknowledged), and none older than
// Expiry, and together at most MaxBytes (Message.Size; the newest message is
// kept whatever its size). What it drops is counted in Dropped and Expired,
// reported as offline_queue_dropped and offline_queue_expired.
type OfflineQueue struct {
	Max      int
	MaxBytes int           // zero: no byte bound
	Expiry   time.Duration // zero: messages never expire
	Dropped  *atomic.Int64
	Expired  *atomic.Int64
}

// Cutoff is the publish time before which a queued message has expired;
// zero when messages never expire.
func (o OfflineQueue) Cutoff(now time.Time) time.Time {
	if o.Expiry <= 0 {
		return time.Time{}
	}
	return now.Add(-o.Expiry)
}

// IsExpired reports, and counts, a message published before cutoff.
func (o OfflineQueue) IsExpired(m *Message, cutoff time.Time) bool {
	if cutoff.IsZero() || !m.Time.Before(cutoff) {
		return false
	}
	o.Expired.Add(1)
	return true
}

// DropExpired removes the messages of q that have expired, in place.
func (o OfflineQueue) DropExpired(q []Delivery) []Delivery {
	cutoff := o.Cutoff(time.Now())
	if cutoff.IsZero() {
		return q
	}
	kept := q[:0]
	for _, d := range q {
		if !o.IsExpired(d.Message, cutoff) {
			kept = append(kept, d)
		}
	}
	return kept
}

// Bound keeps the newest Max messages of q, and of those the newest that
// fit MaxBytes.
func (o OfflineQueue) Bound(q []Delivery) []Delivery {
	if over := len(q) - o.Max; over > 0 {
		o.Dropped.Add(int64(over))
		q = q[over:]
	}
	if o.MaxBytes <= 0 {
		return q
	}
	size, i := 0, len(q)
	for i > 0 {
		size += q[i-1].Message.Size()
		if size > o.MaxBytes && i < len(q) {
			break
		}
		i--
	}
	if i > 0 {
		o.Dropped.Add(int64(i))
	}
	return q[i:]
}

// Window keeps the newest of a run of deliveries within the queue's bounds
// as they arrive (a replay of the streams for a resumed session), so that
// what it holds at any time is bounded, not the whole run: amortised
// constant time per message.
type Window struct {
	o     OfflineQueue
	q     []Delivery
	head  int
	bytes int
}

// NewWindow returns an empty Window of o's bounds.
func (o OfflineQueue) NewWindow() *Window { return &Window{o: o} }

// Add appends d, dropping (and counting) the oldest held while the window
// is past either bound; d itself is always kept.
func (w *Window) Add(d Delivery) {
	w.q = append(w.q, d)
	w.bytes += d.Message.Size()
	for n := len(w.q) - w.head; n > 1 && (n > w.o.Max || (w.o.MaxBytes > 0 && w.bytes > w.o.MaxBytes)); n-- {
		w.bytes -= w.q[w.head].Message.Size()
		w.q[w.head] = Delivery{}
		w.head++
		w.o.Dropped.Add(1)
	}
	if w.head > 64 && w.head > len(w.q)/2 {
		w.q = append(w.q[:0], w.q[w.head:]...)
		w.head = 0
	}
}

// Deliveries returns what the window holds, oldest first.
func (w *Window) Deliveries() []Delivery { return w.q[w.head:] }

// Push appends d to q; a full queue first drops its oldest message, in
// place, so that a queue at its bound stops growing its array.
func (o OfflineQueue) Push(q []Delivery, d Delivery) []Delivery {
	if len(q) >= o.Max && len(q) > 0 {
		o.Dropped.Add(1)
		copy(q, q[1:])
		q[len(q)-1] = d
		return q
	}
	return append(q, d)
}
