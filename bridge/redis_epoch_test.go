package bridge

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bridgemq/server/internal/redistest"
)

// ringEnvs lists the envelopes of p, oldest first.
func ringEnvs(p *pubRing) []string {
	out := make([]string, 0, p.len())
	for i := range p.len() {
		out = append(out, p.at(i).env)
	}
	return out
}

func TestPubRing_BoundedByAgeAndTakenByEpoch(t *testing.T) {
	var p pubRing
	t0 := time.Now()
	p.add(ringEntry{env: "old", epoch: "e1", at: t0})
	p.add(ringEntry{env: "a", epoch: "e1", at: t0.Add(ringAge / 2)})
	p.add(ringEntry{env: "b", epoch: "e2", at: t0.Add(ringAge + time.Second)}) // "old" ages out
	if got := ringEnvs(&p); fmt.Sprint(got) != "[a b]" {
		t.Fatalf("entries %v, want [a b]", got)
	}
	got := p.takeEpoch("e1")
	if len(got) != 1 || got[0].env != "a" || fmt.Sprint(ringEnvs(&p)) != "[b]" {
		t.Fatalf("took %+v, left %v", got, ringEnvs(&p))
	}
	if p.bytes != len("b") {
		t.Fatalf("bytes = %d, want %d", p.bytes, len("b"))
	}
}

// TestPubRing_WrapsAndGrowsInOrder: entries stay oldest first while the
// ring wraps around its buffer, grows, is cut by size and has entries
// taken from its middle.
func TestPubRing_WrapsAndGrowsInOrder(t *testing.T) {
	t0 := time.Now()
	big := strings.Repeat("x", ringBytes/100) // 100 of them fill the ring
	tests := []struct {
		name      string
		adds      int
		env       func(i int) string
		takeShard int // -1: none
		want      func(i int) bool
	}{
		{"fewer than the first buffer", 10, strconv.Itoa, -1, func(int) bool { return true }},
		{"grown several times", 1000, strconv.Itoa, -1, func(int) bool { return true }},
		{"cut by size while wrapping", 1000, func(i int) string { return big[:len(big)-len(strconv.Itoa(i))] + strconv.Itoa(i) }, -1,
			func(i int) bool { return i >= 1000-100 }},
		{"shard taken from the middle", 300, strconv.Itoa, 1, func(i int) bool { return i%3 != 1 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var p pubRing
			var want []string
			bytes := 0
			for i := range tt.adds {
				env := tt.env(i)
				p.add(ringEntry{env: env, shard: i % 3, at: t0.Add(time.Duration(i) * time.Microsecond)})
				if tt.want(i) {
					want = append(want, env)
				}
			}
			if tt.takeShard >= 0 {
				taken := p.takeShard(tt.takeShard)
				for i, e := range taken {
					if e.shard != tt.takeShard || (i > 0 && !taken[i-1].at.Before(e.at)) {
						t.Fatalf("taken %d: shard %d at %v, want shard %d in order", i, e.shard, e.at, tt.takeShard)
					}
				}
				p.add(ringEntry{env: "after", at: t0.Add(time.Second)})
				want = append(want, "after")
			}
			got := ringEnvs(&p)
			if len(got) != len(want) {
				t.Fatalf("%d entries, want %d", len(got), len(want))
			}
			for i := range got {
				if got[i] != want[i] {
					t.Fatalf("entry %d = %.20q, want %.20q", i, got[i], want[i])
				}
				bytes += len(got[i])
			}
			if p.bytes != bytes {
				t.Fatalf("bytes = %d, want %d", p.bytes, bytes)
			}
		})
	}
}

func BenchmarkPubRing_Add(b *testing.B) {
	var p pubRing
	env := strings.Repeat("e", 150)
	t0 := time.Now()
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		p.add(ringEntry{env: env, channel: "c", at: t0.Add(time.Duration(i) * time.Microsecond)})
		i++
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
	sub := &sink{}
	attach(t, b, "s", sub, true)
	subscribe(t, b, "s", "rp/#", 1)
	const n = 20
	for i := range n {
		publish(t, a, rmsg("rp/"+strconv.Itoa(i), 1, "x"))
	}
	sub.WaitFor(t, n)

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
		if got := len(sub.Deliveries()); got != n+1 {
			return fmt.Sprintf("subscriber has %d deliveries, want %d", got, n+1)
		}
		return ""
	})
	fence(t, a, b) // a copy delivered twice would have arrived before the fence
	seen := map[string]int{}
	for _, d := range sub.Deliveries() {
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
	first := &sink{}
	attach(t, a, "s", first, false)
	subscribe(t, a, "s", "rm/#", 2)
	const n = 10
	for i := range n {
		publish(t, a, rmsg("rm/"+strconv.Itoa(i), 2, "x"))
	}
	first.WaitFor(t, n)
	detach(t, a, "s", first, &StoredSession{})
	moved := &sink{}
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
	if got := moved.Deliveries(); len(got) != 0 {
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
