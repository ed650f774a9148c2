package broker

import (
	"fmt"
	"slices"
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

// The offline queue is bounded by bytes as well as by count (issue 8): a
// persistent session that resumes over 100 queued messages of 900 KB must
// not bring them all back into a replica's memory, and its stored state
// must not hold them all either. The newest are kept, the newest always.
func TestOfflineQueue_BoundByBytesKeepsNewest(t *testing.T) {
	msg := func(n int) Delivery {
		return Delivery{Message: &Message{Topic: "t", Payload: make([]byte, n-1)}, QoS: 1}
	}
	tests := []struct {
		name     string
		max      int
		maxBytes int
		sizes    []int
		want     []int // sizes kept, oldest first
	}{
		{"no byte bound", 10, 0, []int{5, 5, 5}, []int{5, 5, 5}},
		{"newest that fit", 10, 12, []int{5, 5, 5, 6}, []int{5, 6}},
		{"exactly at the bound", 10, 10, []int{5, 5, 5}, []int{5, 5}},
		{"the newest alone when larger than the bound", 10, 4, []int{3, 9}, []int{9}},
		{"count first, then bytes", 2, 100, []int{1, 2, 3}, []int{2, 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var dropped, expired atomic.Int64
			o := OfflineQueue{Max: tt.max, MaxBytes: tt.maxBytes, Dropped: &dropped, Expired: &expired}
			var q []Delivery
			w := o.NewWindow()
			for _, n := range tt.sizes {
				q = append(q, msg(n))
				w.Add(msg(n))
			}
			for name, got := range map[string][]Delivery{"Bound": o.Bound(q), "Window": w.Deliveries()} {
				var sizes []int
				for _, d := range got {
					sizes = append(sizes, d.Message.Size())
				}
				if !slices.Equal(sizes, tt.want) {
					t.Errorf("%s kept sizes %v, want %v", name, sizes, tt.want)
				}
			}
			if want := int64(2 * (len(tt.sizes) - len(tt.want))); dropped.Load() != want {
				t.Errorf("dropped %d (Bound and Window), want %d", dropped.Load(), want)
			}
		})
	}
}

// A Window over a long run holds at most its bounds at any time and
// compacts as it goes: 100,000 messages through a window of 1,000.
func TestOfflineQueue_WindowStaysBounded(t *testing.T) {
	var dropped, expired atomic.Int64
	w := OfflineQueue{Max: 1000, Dropped: &dropped, Expired: &expired}.NewWindow()
	for i := range 100_000 {
		w.Add(Delivery{Message: &Message{Topic: "t", Payload: []byte{byte(i)}}, QoS: 1})
		if len(w.q) > 2100 {
			t.Fatalf("after %d messages the window's array holds %d", i+1, len(w.q))
		}
	}
	if got := w.Deliveries(); len(got) != 1000 || got[999].Message.Payload[0] != byte(99_999%256) {
		t.Fatalf("window holds %d, last %v", len(got), got[len(got)-1].Message.Payload)
	}
	if dropped.Load() != 99_000 {
		t.Fatalf("dropped %d, want 99000", dropped.Load())
	}
}
