package bridge

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/bridgemq/server/broker"
	"github.com/bridgemq/server/internal/redistest"
)

func detach(t *testing.T, b Bridge, id string, sub Subscriber, st *StoredSession) {
	t.Helper()
	if err := b.Detach(context.Background(), id, sub, st); err != nil {
		t.Fatalf("Detach(%s): %v", id, err)
	}
}

func TestRedis_PersistentSessionResumesOnAnotherReplica_MQTT_3_1_2_4(t *testing.T) {
	srv := redistest.Start(t)
	a := newTestRedis(t, srv, "a")
	b := newTestRedis(t, srv, "b")
	pub := newTestRedis(t, srv, "pub")

	s1 := &sink{}
	if got := attach(t, a, "p1", s1, false); got != nil {
		t.Fatalf("first Attach returned a session: %+v", got)
	}
	subscribe(t, a, "p1", "s/#", 1)
	subscribe(t, a, "p1", "q2/+", 2)
	inflight := rmsg("s/in", 1, "inflight")
	queued := rmsg("s/q", 1, "queued")
	detach(t, a, "p1", s1, &StoredSession{
		Inflight:        []Inflight{{PacketID: 7, Delivery: Delivery{Message: inflight, QoS: 1}}},
		Queued:          []Delivery{{Message: queued, QoS: 1}},
		AwaitingRelease: []uint16{9},
	})

	// While offline: QoS 1/2 messages are kept, QoS 0 and unmatched ones not.
	var want []ID
	for i := range 5 {
		m := rmsg(fmt.Sprintf("s/%d", i), 1, "x")
		publish(t, pub, m)
		want = append(want, m.ID)
	}
	publish(t, pub, rmsg("s/zero", 0, "qos0"))
	publish(t, pub, rmsg("other", 1, "unmatched"))
	q2 := rmsg("q2/x", 2, "two")
	publish(t, pub, q2)
	want = append(want, q2.ID)

	s2 := &sink{}
	got := attach(t, b, "p1", s2, false)
	if got == nil {
		t.Fatal("persistent session not found on the other replica")
	}
	if len(got.Subscriptions) != 2 || got.Subscriptions["s/#"] != 1 || got.Subscriptions["q2/+"] != 2 {
		t.Fatalf("subscriptions = %v", got.Subscriptions)
	}
	if len(got.Inflight) != 1 || got.Inflight[0].PacketID != 7 || got.Inflight[0].Message.ID != inflight.ID {
		t.Fatalf("inflight = %+v", got.Inflight)
	}
	if len(got.AwaitingRelease) != 1 || got.AwaitingRelease[0] != 9 {
		t.Fatalf("awaiting release = %v", got.AwaitingRelease)
	}
	if len(got.Queued) != 1+len(want) || got.Queued[0].Message.ID != queued.ID {
		t.Fatalf("queued = %d messages, want %d with the stored one first", len(got.Queued), 1+len(want))
	}
	for i, id := range want {
		if d := got.Queued[i+1]; d.Message.ID != id {
			t.Fatalf("queued[%d] = %s, want id of message %d (oldest first)", i+1, d.Message.Topic, i)
		}
	}
	if d := got.Queued[len(got.Queued)-1]; d.QoS != 2 {
		t.Fatalf("QoS 2 message queued at QoS %d", d.QoS)
	}

	// Subscriptions are live again on the new replica.
	live := rmsg("s/live", 1, "live")
	publish(t, pub, live)
	if d := s2.WaitFor(t, 1); d[0].Message.ID != live.ID {
		t.Fatalf("live delivery = %s", d[0].Message.Topic)
	}
}

func TestRedis_CleanSessionDiscardsStoredSession_MQTT_3_1_2_6(t *testing.T) {
	srv := redistest.Start(t)
	a := newTestRedis(t, srv, "a")
	s1 := &sink{}
	attach(t, a, "p1", s1, false)
	subscribe(t, a, "p1", "s/#", 1)
	detach(t, a, "p1", s1, &StoredSession{})
	publish(t, a, rmsg("s/1", 1, "x"))

	s2 := &sink{}
	if got := attach(t, a, "p1", s2, true); got != nil {
		t.Fatalf("clean Attach returned a session: %+v", got)
	}
	publish(t, a, rmsg("s/2", 1, "x"))
	fence(t, a, a)
	if n := len(s2.Deliveries()); n != 0 {
		t.Fatalf("clean session received %d messages for the old subscriptions", n)
	}
	detach(t, a, "p1", s2, nil)
	if got := attach(t, a, "p1", &sink{}, false); got != nil {
		t.Fatalf("session survived a clean session: %+v", got)
	}
}

func TestRedis_DetachNilRemovesEverything(t *testing.T) {
	srv := redistest.Start(t)
	a := newTestRedis(t, srv, "a")
	s1 := &sink{}
	attach(t, a, "p1", s1, false)
	subscribe(t, a, "p1", "s/#", 1)
	detach(t, a, "p1", s1, nil)
	rdb := newClient(t, srv)
	ctx := context.Background()
	if n := rdb.Exists(ctx, "mqtt:sub:p1", "mqtt:session:p1").Val(); n != 0 {
		t.Fatalf("%d session keys left", n)
	}
	if st := rdb.HGet(ctx, "mqtt:client:p1", "state").Val(); st != "0" {
		t.Fatalf("client state = %q, want 0", st)
	}
	if rdb.HExists(ctx, "mqtt:node:a", "p1").Val() {
		t.Fatal("client still listed on its node")
	}
}

func TestRedis_OfflineQueueBoundedAndExpired(t *testing.T) {
	srv := redistest.Start(t)
	a := newTestRedis(t, srv, "a", func(o *RedisOptions) {
		o.MaxQueued = 3
		o.MessageExpiry = time.Minute
	})
	s1 := &sink{}
	attach(t, a, "p1", s1, false)
	subscribe(t, a, "p1", "s/#", 1)
	detach(t, a, "p1", s1, &StoredSession{})
	old := rmsg("s/old", 1, "old")
	old.Time = time.Now().Add(-2 * time.Minute)
	publish(t, a, old)
	for i := range 5 {
		publish(t, a, rmsg(fmt.Sprintf("s/%d", i), 1, "x"))
	}
	got := attach(t, a, "p1", &sink{}, false)
	if got == nil || len(got.Queued) != 3 {
		t.Fatalf("queued = %v, want the 3 newest unexpired", got)
	}
	if got.Queued[0].Message.Topic != "s/2" || got.Queued[2].Message.Topic != "s/4" {
		t.Fatalf("queued %s..%s, want s/2..s/4 (the oldest dropped)", got.Queued[0].Message.Topic, got.Queued[2].Message.Topic)
	}
	st := a.Stats()
	if st["offline_queue_expired"] != 1 || st["offline_queue_dropped"] != 2 {
		t.Fatalf("stats %v, want 1 expired and 2 dropped", st)
	}
}

// A resumed session's offline queue is bounded by bytes too (issue 8): a
// hostile review resumed ten sessions over 100 queued messages of 900 KB,
// and each brought all of them back into the replica's memory (1.7 GB)
// and stored them again in its Redis session hash (100 MB each). With
// MaxQueuedBytes of 5 messages, 20 messages of 100 KB come back as the
// newest 5, the rest counted, and what the session stores on its way out
// is bounded alike.
func TestRedis_OfflineQueueBoundedByBytes(t *testing.T) {
	srv := redistest.Start(t)
	const size = 100 << 10
	big := func(i int) *Message {
		m := rmsg(fmt.Sprintf("s/%d", i), 1, "")
		m.Payload = make([]byte, size)
		return m
	}
	limit := 5 * big(19).Size()
	a := newTestRedis(t, srv, "a", func(o *RedisOptions) { o.MaxQueuedBytes = limit })
	s1 := &sink{}
	attach(t, a, "p1", s1, false)
	subscribe(t, a, "p1", "s/#", 1)
	detach(t, a, "p1", s1, &StoredSession{})
	for i := range 20 {
		publish(t, a, big(i))
	}
	s2 := &sink{}
	got := attach(t, a, "p1", s2, false)
	if got == nil || len(got.Queued) != 5 || got.Queued[0].Message.Topic != "s/15" || got.Queued[4].Message.Topic != "s/19" {
		t.Fatalf("queued %d messages, want the newest 5 (s/15..s/19)", len(got.Queued))
	}
	if n := a.Stats()["offline_queue_dropped"]; n != 15 {
		t.Fatalf("offline_queue_dropped = %d, want 15", n)
	}
	// Leaving with all 20 unsent (as a connection that never read would)
	// stores at most the bound.
	var all []Delivery
	for i := range 20 {
		all = append(all, Delivery{Message: big(i), QoS: 1})
	}
	detach(t, a, "p1", s2, &StoredSession{Queued: all})
	rdb := newClient(t, srv)
	if n := rdb.HStrLen(context.Background(), "mqtt:session:p1", "state").Val(); n > int64(limit)+64<<10 {
		t.Fatalf("stored session state is %d bytes, want at most about %d", n, limit)
	}
}

func TestRedis_TakeOverOnSameNode_MQTT_3_1_4_2(t *testing.T) {
	srv := redistest.Start(t)
	a := newTestRedis(t, srv, "a")
	s1 := &sink{}
	s1.OnTakeOver = func() { detach(t, a, "p1", s1, &StoredSession{AwaitingRelease: []uint16{5}}) }
	attach(t, a, "p1", s1, false)
	subscribe(t, a, "p1", "t", 1)

	s2 := &sink{}
	got := attach(t, a, "p1", s2, false)
	if s1.TakenOver() == 0 {
		t.Fatal("old connection not taken over")
	}
	if got == nil || len(got.AwaitingRelease) != 1 || got.Subscriptions["t"] != 1 {
		t.Fatalf("session after takeover = %+v", got)
	}
	publish(t, a, rmsg("t", 1, "x"))
	s2.WaitFor(t, 1)
	fence(t, a, a)
	if n := len(s1.Deliveries()); n != 0 {
		t.Fatalf("old connection got %d messages after takeover", n)
	}
}

func TestRedis_TakeOverAcrossNodes_MQTT_3_1_4_2(t *testing.T) {
	srv := redistest.Start(t)
	a := newTestRedis(t, srv, "a")
	b := newTestRedis(t, srv, "b")
	s1 := &sink{}
	s1.OnTakeOver = func() { detach(t, a, "p1", s1, &StoredSession{AwaitingRelease: []uint16{5}}) }
	attach(t, a, "p1", s1, false)
	subscribe(t, a, "p1", "t", 1)

	start := time.Now()
	s2 := &sink{}
	got := attach(t, b, "p1", s2, false)
	if s1.TakenOver() == 0 {
		t.Fatal("connection on the other node not taken over")
	}
	if time.Since(start) > takeoverTimeout/2 {
		t.Fatalf("takeover took %v: acknowledgement not received", time.Since(start))
	}
	if got == nil || len(got.AwaitingRelease) != 1 {
		t.Fatalf("session stored by the old node not loaded: %+v", got)
	}
	rec := newClient(t, srv).HGetAll(context.Background(), "mqtt:client:p1").Val()
	if rec["node"] != "b" || rec["state"] != "1" {
		t.Fatalf("client record = %v", rec)
	}
}

func TestRedis_DetachAfterTakeOverElsewhereChangesNothing(t *testing.T) {
	srv := redistest.Start(t)
	a := newTestRedis(t, srv, "a")
	b := newTestRedis(t, srv, "b")
	s1 := &sink{} // its TakeOver returns without detaching
	attach(t, a, "p1", s1, false)
	s2 := &sink{}
	attach(t, b, "p1", s2, false)
	subscribe(t, b, "p1", "t", 1)
	detach(t, a, "p1", s1, nil) // late, from the old connection
	rdb := newClient(t, srv)
	ctx := context.Background()
	if rec := rdb.HGetAll(ctx, "mqtt:client:p1").Val(); rec["state"] != "1" || rec["node"] != "b" {
		t.Fatalf("stale Detach changed the record: %v", rec)
	}
	if !rdb.HExists(ctx, "mqtt:sub:p1", "t").Val() {
		t.Fatal("stale Detach removed the new connection's subscriptions")
	}
}

// TestRedis_NoLossNoDuplicateAcrossReconnect moves a persistent session
// from one replica to another while messages flow: every acknowledged
// message is received exactly once, live before the move, in the resumed
// session's queue, or live after it.
func TestRedis_NoLossNoDuplicateAcrossReconnect(t *testing.T) {
	srv := redistest.Start(t)
	a := newTestRedis(t, srv, "a")
	b := newTestRedis(t, srv, "b")
	pub := newTestRedis(t, srv, "pub")
	s1 := &sink{}
	attach(t, a, "p1", s1, false)
	subscribe(t, a, "p1", "f/#", 1)

	var acked []ID
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		acked = publishWithRetry(t, pub, "f", 400, 200*time.Microsecond)
	}()
	waitUntil(t, 10*time.Second, func() string {
		if len(s1.Deliveries()) == 0 {
			return "no live delivery before the move"
		}
		return ""
	})
	detach(t, a, "p1", s1, &StoredSession{})
	published := pub.Stats()["published"]
	waitUntil(t, 10*time.Second, func() string {
		if pub.Stats()["published"] == published {
			return "no message published while the session is offline"
		}
		return ""
	})
	s2 := &sink{}
	resumed := attach(t, b, "p1", s2, false)
	wg.Wait()

	deadline := time.Now().Add(10 * time.Second)
	for {
		seen := make(map[ID]int)
		for _, d := range s1.Deliveries() {
			seen[d.Message.ID]++
		}
		for _, d := range resumed.Queued {
			seen[d.Message.ID]++
		}
		for _, d := range s2.Deliveries() {
			seen[d.Message.ID]++
		}
		missing, dups := 0, 0
		for _, id := range acked {
			if seen[id] == 0 {
				missing++
			}
			if seen[id] > 1 {
				dups++
			}
		}
		if dups > 0 {
			t.Fatalf("%d messages received twice", dups)
		}
		if missing == 0 {
			t.Logf("%d messages: %d live before, %d queued, %d live after", len(acked),
				len(s1.Deliveries()), len(resumed.Queued), len(s2.Deliveries()))
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d messages lost across the reconnect", missing, len(acked))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestRedis_LateDeliveryRefusedByClosingConnectionIsQueued(t *testing.T) {
	srv := redistest.Start(t)
	a := newTestRedis(t, srv, "a")
	s1 := &sink{}
	attach(t, a, "p1", s1, false)
	subscribe(t, a, "p1", "t", 1)
	s1.Refuse() // the connection has snapshotted its state
	m := rmsg("t", 1, "late")
	publish(t, a, m)
	eventually(t, func() string {
		if a.Stats()["delivered"] == 0 {
			return "message never reached the closing connection"
		}
		return ""
	})
	detach(t, a, "p1", s1, &StoredSession{})
	got := attach(t, a, "p1", &sink{}, false)
	if got == nil || len(got.Queued) != 1 || got.Queued[0].Message.ID != m.ID {
		t.Fatalf("refused message not kept for the session: %+v", got)
	}
}

func TestRedis_DeadNodeWillPublishedOnce(t *testing.T) {
	srv := redistest.Start(t)
	fast := func(o *RedisOptions) { o.NodeTTL = 300 * time.Millisecond }
	dying := newTestRedis(t, srv, "dying", fast)
	b := newTestRedis(t, srv, "b", fast)
	c := newTestRedis(t, srv, "c", fast)
	watcher := &sink{}
	attach(t, b, "watcher", watcher, true)
	subscribe(t, b, "watcher", "wills/#", 1)

	will := rmsg("wills/p1", 1, "gone")
	if _, err := dying.Attach(context.Background(), "p1", "", &sink{}, broker.CleanSession(true), will); err != nil {
		t.Fatal(err)
	}
	// A client that detached cleanly has no will due.
	quiet := &sink{}
	if _, err := dying.Attach(context.Background(), "p2", "", quiet, broker.CleanSession(true), rmsg("wills/p2", 1, "no")); err != nil {
		t.Fatal(err)
	}
	detach(t, dying, "p2", quiet, nil)
	_ = dying.Close() // leaves p1 attached; its liveness key expires

	watcher.WaitFor(t, 1)
	afterDeadNodeChecks(t, 3, b, c) // both survivors had the chance to publish it again
	if d := watcher.Deliveries(); len(d) != 1 || string(d[0].Message.Payload) != "gone" {
		t.Fatalf("wills delivered = %d, want exactly p1's", len(d))
	}
	if n := b.Stats()["wills_published"] + c.Stats()["wills_published"]; n != 1 {
		t.Fatalf("wills_published = %d, want 1", n)
	}
	rdb := newClient(t, srv)
	ctx := context.Background()
	if st := rdb.HGet(ctx, "mqtt:client:p1", "state").Val(); st != "0" {
		t.Fatalf("dead node's client state = %q, want 0", st)
	}
	// Issue 7 item 11: a reaped clean session's record expires like one
	// that disconnected.
	if ttl := rdb.PTTL(ctx, "mqtt:client:p1").Val(); ttl <= 0 || ttl > cleanRecordTTL {
		t.Fatalf("reaped client record TTL %v, want (0, %v]", ttl, cleanRecordTTL)
	}
	if rdb.SIsMember(ctx, "mqtt:nodes", "dying").Val() || rdb.Exists(ctx, "mqtt:node:dying").Val() != 0 {
		t.Fatal("dead node's records not removed")
	}
}

// TestRedis_OfflineReplayReadsEveryPage resumes a session whose streams hold
// more than one XRANGE page of messages since its cursor, across two shards.
func TestRedis_OfflineReplayReadsEveryPage(t *testing.T) {
	srv := redistest.Start(t)
	a := newTestRedis(t, srv, "a", func(o *RedisOptions) { o.MaxQueued = 10 * replayPage })
	s1 := &sink{}
	attach(t, a, "pages", s1, false)
	subscribe(t, a, "pages", "big/#", 1)
	subscribe(t, a, "pages", "small/#", 1)
	detach(t, a, "pages", s1, &StoredSession{})
	const big, small = 2*replayPage + 7, 3
	var wg sync.WaitGroup
	for i := range big {
		wg.Add(1)
		go func() {
			defer wg.Done()
			publish(t, a, rmsg(fmt.Sprintf("big/%d", i), 1, "x"))
		}()
	}
	wg.Wait()
	for i := range small {
		publish(t, a, rmsg(fmt.Sprintf("small/%d", i), 1, "x"))
	}
	got := attach(t, a, "pages", &sink{}, false)
	if got == nil {
		t.Fatal("no stored session")
	}
	seen := map[string]bool{}
	for _, d := range got.Queued {
		seen[d.Message.Topic] = true
	}
	if len(got.Queued) != big+small || len(seen) != big+small {
		t.Fatalf("resumed with %d queued (%d distinct), want %d", len(got.Queued), len(seen), big+small)
	}
}

// [MQTT-3.1.2-23] a survivor that reaps a dead replica keeps each of its
// persistent sessions for the interval it was claimed with, at most
// SessionExpiry, as a Detach would have; a 3.1.1 persistent session for
// SessionExpiry; a session that ends with its connection not at all.
func TestRedis_DeadNodeSessionKeptForItsOwnInterval_MQTT_3_1_2_23(t *testing.T) {
	srv := redistest.Start(t)
	opts := func(o *RedisOptions) { o.NodeTTL = 300 * time.Millisecond; o.SessionExpiry = time.Hour }
	dying := newTestRedis(t, srv, "dying", opts)
	newTestRedis(t, srv, "survivor", opts)
	cases := []struct {
		id       string
		life     Lifetime
		min, max time.Duration // the keys' TTL after the reap; 0, 0: none left
	}{
		{"short", Lifetime{Persistent: true, Expiry: 5 * time.Second}, 0, 5 * time.Second},
		{"clean-start-short", Lifetime{CleanStart: true, Persistent: true, Expiry: 5 * time.Second}, 0, 5 * time.Second},
		{"bound", Lifetime{Persistent: true}, 5 * time.Second, time.Hour},
		{"v311", broker.CleanSession(false), 5 * time.Second, time.Hour},
		{"ends-with-connection", Lifetime{}, 0, 0},
	}
	rdb := newClient(t, srv)
	ctx := context.Background()
	for _, tc := range cases {
		// Each with a stored session from an earlier connection, which
		// the reaped connection resumed or discarded.
		s := &sink{}
		attach(t, dying, tc.id, s, false)
		subscribe(t, dying, tc.id, "old/"+tc.id, 1)
		storeOffline(t, dying, tc.id, s)
		if _, err := dying.Attach(ctx, tc.id, "", &sink{}, tc.life, nil); err != nil {
			t.Fatal(err)
		}
		subscribe(t, dying, tc.id, "new/"+tc.id, 1)
	}
	_ = dying.Close() // its clients stay attached; its liveness key expires

	waitUntil(t, 10*time.Second, func() string {
		if rdb.Exists(ctx, "mqtt:node:dying").Val() != 0 {
			return "dead node not reaped"
		}
		return ""
	})
	for _, tc := range cases {
		for _, k := range []string{"mqtt:session:", "mqtt:sub:", "mqtt:client:"} {
			ttl := rdb.PTTL(ctx, k+tc.id).Val()
			switch {
			case tc.max == 0 && k != "mqtt:client:" && ttl != -2:
				t.Errorf("%s: %s%s left with TTL %v, want gone", tc.id, k, tc.id, ttl)
			case tc.max > 0 && (ttl <= tc.min || ttl > tc.max):
				t.Errorf("%s: %s%s TTL %v, want (%v, %v]", tc.id, k, tc.id, ttl, tc.min, tc.max)
			}
		}
	}
}
