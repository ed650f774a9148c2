package broker

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"
)

func queued(n int, at time.Time) []Delivery {
	q := make([]Delivery, n)
	for i := range q {
		q[i] = Delivery{Message: &Message{Topic: fmt.Sprint(i), Time: at}, QoS: 1}
	}
	return q
}

func topicsOf(q []Delivery) string {
	s := ""
	for _, d := range q {
		s += d.Message.Topic
	}
	return s
}

// The offline queue keeps the newest messages and counts what it drops,
// whether it is bounded at once or one message at a time.
func TestOfflineQueue_KeepsNewestAndCounts(t *testing.T) {
	var dropped, expired atomic.Int64
	o := OfflineQueue{Max: 3, Dropped: &dropped, Expired: &expired}
	if got := topicsOf(o.Bound(queued(5, time.Now()))); got != "234" {
		t.Fatalf("bound kept %q, want 234", got)
	}
	var q []Delivery
	for _, d := range queued(5, time.Now()) {
		q = o.Push(q, d)
	}
	if got := topicsOf(q); got != "234" {
		t.Fatalf("push kept %q, want 234", got)
	}
	if dropped.Load() != 4 || expired.Load() != 0 {
		t.Fatalf("dropped %d expired %d, want 4 and 0", dropped.Load(), expired.Load())
	}
}

// Messages older than the expiry are dropped and counted; with no expiry
// none is.
func TestOfflineQueue_Expiry(t *testing.T) {
	var dropped, expired atomic.Int64
	o := OfflineQueue{Max: 10, Expiry: time.Minute, Dropped: &dropped, Expired: &expired}
	q := append(queued(2, time.Now().Add(-time.Hour)), queued(3, time.Now())...)
	if got := topicsOf(o.DropExpired(q)); got != "012" {
		t.Fatalf("kept %q, want the three fresh ones 012", got)
	}
	if expired.Load() != 2 {
		t.Fatalf("expired %d, want 2", expired.Load())
	}
	o.Expiry = 0
	if got := o.DropExpired(queued(2, time.Now().Add(-time.Hour))); len(got) != 2 || expired.Load() != 2 {
		t.Fatalf("without expiry kept %d (expired %d), want 2 kept", len(got), expired.Load())
	}
}
