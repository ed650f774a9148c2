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
// Expiry. What it drops is counted in Dropped and Expired, reported as
// offline_queue_dropped and offline_queue_expired.
type OfflineQueue struct {
	Max     int
	Expiry  time.Duration // zero: messages never expire
	Dropped *atomic.Int64
	Expired *atomic.Int64
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

// Bound keeps the newest Max messages of q.
func (o OfflineQueue) Bound(q []Delivery) []Delivery {
	if over := len(q) - o.Max; over > 0 {
		o.Dropped.Add(int64(over))
		return q[over:]
	}
	return q
}

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
