package bridge

import (
	"sync/atomic"
	"time"
)

// offlineQueue is the one rule both bridges apply to the messages kept for
// a persistent session while it is offline [MQTT-3.1.2-5]: at most max of
// them, the newest (as EMQX's queue does, so that a session finds the most
// recent messages on return, and one resumed after its replica died keeps
// what it had not acknowledged), and none older than expiry. What it drops
// is counted in dropped and expired, the bridge's offline_queue_dropped
// and offline_queue_expired.
type offlineQueue struct {
	max     int
	expiry  time.Duration // zero: messages never expire
	dropped *atomic.Int64
	expired *atomic.Int64
}

// cutoff is the publish time before which a queued message has expired;
// zero when messages never expire.
func (o offlineQueue) cutoff(now time.Time) time.Time {
	if o.expiry <= 0 {
		return time.Time{}
	}
	return now.Add(-o.expiry)
}

// isExpired reports, and counts, a message published before cutoff.
func (o offlineQueue) isExpired(m *Message, cutoff time.Time) bool {
	if cutoff.IsZero() || !m.Time.Before(cutoff) {
		return false
	}
	o.expired.Add(1)
	return true
}

// dropExpired removes the messages of q that have expired, in place.
func (o offlineQueue) dropExpired(q []Delivery) []Delivery {
	cutoff := o.cutoff(time.Now())
	if cutoff.IsZero() {
		return q
	}
	kept := q[:0]
	for _, d := range q {
		if !o.isExpired(d.Message, cutoff) {
			kept = append(kept, d)
		}
	}
	return kept
}

// bound keeps the newest max messages of q.
func (o offlineQueue) bound(q []Delivery) []Delivery {
	if over := len(q) - o.max; over > 0 {
		o.dropped.Add(int64(over))
		return q[over:]
	}
	return q
}

// push appends d to q; a full queue first drops its oldest message, in
// place, so that a queue at its bound stops growing its array.
func (o offlineQueue) push(q []Delivery, d Delivery) []Delivery {
	if len(q) >= o.max && len(q) > 0 {
		o.dropped.Add(1)
		copy(q, q[1:])
		q[len(q)-1] = d
		return q
	}
	return append(q, d)
}
