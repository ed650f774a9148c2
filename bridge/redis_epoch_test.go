package bridge

import (
	"context"
	"fmt"
	"strconv"
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
	// The next publish reads the new epoch and brings the lost ones back.
	eventually(t, func() string {
		if err := a.Publish(ctx, rmsg("rp/after", 1, "x")); err != nil {
			return "publish after restart: " + err.Error()
		}
		return ""
	})
	eventually(t, func() string {
		if got := a.Stats()["republished_after_redis_restart"]; got != n {
			return fmt.Sprintf("republished %d, want %d", got, n)
		}
		var total int64
		for sh := range streamShards {
			total += newClient(t, srv).XLen(ctx, a.streamKey(sh)).Val()
		}
		if total != n+1 {
			return fmt.Sprintf("streams hold %d entries after the restart, want %d", total, n+1)
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
	r := &Redis{pubq: make(chan pubRequest, 4)}
	answered := 0
	r.pubq <- pubRequest{done: func(error) { answered++ }}
	r.pubq <- pubRequest{msg: rmsg("t", 1, "x"), done: func(err error) {
		if err == nil {
			t.Error("a queued publish was answered with success as the bridge closed")
		}
		answered++
	}}
	r.failQueued()
	if answered != 2 {
		t.Fatalf("%d of 2 queued requests answered", answered)
	}
}
