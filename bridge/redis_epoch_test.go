package bridge

import (
	"context"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bridgemq/server/internal/redistest"
)

func TestPubRing_BoundedByAgeAndTakenByEpoch(t *testing.T) {
	var p pubRing
	t0 := time.Now()
	p.add(ringEntry{env: "old", epoch: "e1", at: t0})
	p.add(ringEntry{env: "a", epoch: "e1", at: t0.Add(ringAge / 2)})
	p.add(ringEntry{env: "b", epoch: "e2", at: t0.Add(ringAge + time.Second)}) // "old" ages out
	if len(p.entries) != 2 || p.entries[0].env != "a" {
		t.Fatalf("entries %+v, want a and b", p.entries)
	}
	got := p.takeEpoch("e1")
	if len(got) != 1 || got[0].env != "a" || len(p.entries) != 1 || p.entries[0].env != "b" {
		t.Fatalf("took %+v, left %+v", got, p.entries)
	}
	if p.bytes != len("b") {
		t.Fatalf("bytes = %d, want %d", p.bytes, len("b"))
	}
}

// TestEpochWatch_ReadsWhenSomethingMayHaveChanged: a batch reads the epoch
// after a dial, after a failed batch, when a check is asked for and once
// epochRecheck has passed; otherwise not.
func TestEpochWatch_ReadsWhenSomethingMayHaveChanged(t *testing.T) {
	t0 := time.Now()
	msgs := []pubRequest{{msg: &Message{Topic: "a"}}}
	check := []pubRequest{{msg: &Message{Topic: "a"}}, {check: true}}
	for _, c := range []struct {
		name  string
		setup func(*epochWatch)
		batch []pubRequest
		at    time.Time
		want  bool
	}{
		{"just confirmed", func(*epochWatch) {}, msgs, t0, false},
		{"within the recheck", func(*epochWatch) {}, msgs, t0.Add(epochRecheck - time.Millisecond), false},
		{"recheck due", func(*epochWatch) {}, msgs, t0.Add(epochRecheck), true},
		{"a dial since", func(w *epochWatch) { w.dials.Add(1) }, msgs, t0, true},
		{"a failed batch since", func(w *epochWatch) { w.suspect = true }, msgs, t0, true},
		{"a check asked for", func(*epochWatch) {}, check, t0, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := epochWatch{dials: new(atomic.Uint64)}
			w.dials.Store(3)
			w.confirmed(3, t0)
			c.setup(&w)
			if got, _ := w.due(c.batch, c.at); got != c.want {
				t.Fatalf("due = %v, want %v", got, c.want)
			}
		})
	}
}

// TestRedis_RepublishesAcceptedMessagesAfterRedisRestart: Redis restarts
// empty (no persistence), taking with it the streams of messages it had
// accepted. The publishing replica notices the new epoch and publishes them
// again; a subscriber that already had them does not get them twice.
func TestRedis_RepublishesAcceptedMessagesAfterRedisRestart(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	a := newTestRedis(t, srv, "a")
	b := newTestRedis(t, srv, "b")
	sub := newLiveSub()
	attach(t, b, "s", sub, true)
	subscribe(t, b, "s", "rp/#", 1)
	const n = 20
	for i := range n {
		publish(t, a, rmsg("rp/"+strconv.Itoa(i), 1, "x"))
	}
	sub.waitFor(t, n)

	srv.Restart(t)
	publishAfterRestart(t, a, "rp/after")
	// rp/after went out while the client dialled the new instance: it
	// carries the epoch read before it, so it may be published again too.
	eventually(t, func() string {
		got := a.Stats()["republished_after_redis_restart"]
		if got != n && got != n+1 {
			return fmt.Sprintf("republished %d, want %d or %d", got, n, n+1)
		}
		var total int64
		for sh := range streamShards {
			total += newClient(t, srv).XLen(ctx, a.streamKey(sh)).Val()
		}
		if total != 1+got {
			return fmt.Sprintf("streams hold %d entries after the restart, want %d", total, 1+got)
		}
		return ""
	})
	// b resubscribes by itself; the republished copies it already had are
	// dropped by message id.
	eventually(t, func() string {
		if got := len(sub.deliveries()); got != n+1 {
			return fmt.Sprintf("subscriber has %d deliveries, want %d", got, n+1)
		}
		return ""
	})
	fence(t, a, b) // a copy delivered twice would have arrived before the fence
	seen := map[string]int{}
	for _, d := range sub.deliveries() {
		seen[d.Message.Topic]++
	}
	for topic, c := range seen {
		if c != 1 {
			t.Errorf("%s delivered %d times", topic, c)
		}
	}
}

// TestRedis_CloseWithEpochCheckQueued: an epoch check still queued when the
// bridge closes is dropped, not answered with a message it does not carry.
func TestRedis_CloseWithEpochCheckQueued(t *testing.T) {
	p := newPublisher(-1, "", new(atomic.Uint64))
	answered := 0
	p.q <- pubRequest{check: true, done: func(error) { answered++ }}
	p.q <- pubRequest{msg: rmsg("t", 1, "x"), done: func(err error) {
		if err == nil {
			t.Error("a queued publish was answered with success as the bridge closed")
		}
		answered++
	}}
	p.failQueued()
	if answered != 2 {
		t.Fatalf("%d of 2 queued requests answered", answered)
	}
}

// A persistent session that received messages on one replica and resumed
// on another before Redis restarted empty does not get them again when the
// first replica publishes them again (the republish keeps their original
// time): what its session held when it was stored is older than that
// (section 4.3.3, QoS 2: exactly once).
func TestRedis_RepublishAfterRestartSkipsWhatAMovedSessionHad(t *testing.T) {
	srv := redistest.Start(t)
	a := newTestRedis(t, srv, "a")
	b := newTestRedis(t, srv, "b")
	first := newLiveSub()
	attach(t, a, "s", first, false)
	subscribe(t, a, "s", "rm/#", 2)
	const n = 10
	for i := range n {
		publish(t, a, rmsg("rm/"+strconv.Itoa(i), 2, "x"))
	}
	first.waitFor(t, n)
	detach(t, a, "s", first, &StoredSession{})
	moved := newLiveSub()
	attach(t, b, "s", moved, false)
	// The republish only reaches messages older than lateMessage by then.
	time.Sleep(lateMessage + 100*time.Millisecond)

	srv.Restart(t)
	publishAfterRestart(t, a, "other/after")
	eventually(t, func() string {
		if got := a.Stats()["republished_after_redis_restart"]; got < n {
			return fmt.Sprintf("republished %d, want at least %d", got, n)
		}
		return ""
	})
	fence(t, a, b)
	if got := moved.deliveries(); len(got) != 0 {
		t.Fatalf("the session on b got %d messages it had already received on a", len(got))
	}
}

// publishAfterRestart publishes a QoS 1 message on topic from a until Redis,
// just restarted, accepts it: the publish reads the new epoch, so a brings
// back the messages the restart lost.
func publishAfterRestart(t *testing.T, a *testNode, topic string) {
	t.Helper()
	eventually(t, func() string {
		if err := a.Publish(context.Background(), rmsg(topic, 1, "x")); err != nil {
			return "publish after restart: " + err.Error()
		}
		return ""
	})
}
