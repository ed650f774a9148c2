package bridge

import (
	"fmt"
	"testing"
	"time"

	"github.com/bridgemq/server/broker"
	"github.com/bridgemq/server/internal/redistest"
)

// These tests give Redis a history before the session under test exists:
// stream entries on the topics it will subscribe to, published while this
// replica held no subscription on their shard, so its own last-seen stream
// position lags far behind. A subscription receives only what is published
// after it began [MQTT-4.5.0-1]; a replay from a stale position would hand
// the session messages from before it existed (issue 7, item 3).

// history publishes n QoS 1 messages on topic through b.
func history(t *testing.T, b Bridge, topic string, n int) {
	t.Helper()
	for i := range n {
		publish(t, b, rmsg(topic, 1, fmt.Sprintf("old-%d", i)))
	}
}

// resume detaches sub with an empty state and attaches a new connection
// for id, returning what it was handed.
func resume(t *testing.T, b Bridge, id string, sub Subscriber) (*StoredSession, *sink) {
	t.Helper()
	detach(t, b, id, sub, &StoredSession{})
	next := &sink{}
	st := attach(t, b, id, next, false)
	if st == nil {
		t.Fatalf("%s: persistent session not found on resume", id)
	}
	return st, next
}

func queuedPayloads(st *StoredSession) []string {
	var out []string
	for _, d := range st.Queued {
		out = append(out, string(d.Message.Payload))
	}
	return out
}

func TestRedis_NewSessionNotReplayedHistory_Issue7_3_MQTT_4_5_0_1(t *testing.T) {
	srv := redistest.Start(t)
	for round := range 2 { // the second round runs on the first one's history
		a := newTestRedis(t, srv, fmt.Sprintf("a%d", round))
		pub := newTestRedis(t, srv, fmt.Sprintf("pub%d", round))
		history(t, pub, "hist/x", 5)

		id := fmt.Sprintf("new-%d", round)
		s1 := &sink{}
		attach(t, a, id, s1, false)
		subscribe(t, a, id, "hist/#", 1)
		st, s2 := resume(t, a, id, s1)
		if q := queuedPayloads(st); len(q) != 0 {
			t.Fatalf("round %d: new session was replayed %d messages from before it subscribed: %v", round, len(q), q)
		}
		// What is published while it is offline is still kept.
		detach(t, a, id, s2, &StoredSession{})
		publish(t, pub, rmsg("hist/x", 1, "while-offline"))
		st = attach(t, a, id, &sink{}, false)
		if q := queuedPayloads(st); len(q) != 1 || q[0] != "while-offline" {
			t.Fatalf("round %d: offline queue = %v, want [while-offline]", round, q)
		}
	}
}

func TestRedis_FilterAddedLaterNotReplayedHistory_Issue7_3_MQTT_4_5_0_1(t *testing.T) {
	srv := redistest.Start(t)
	a := newTestRedis(t, srv, "a")
	pub := newTestRedis(t, srv, "pub")

	s1 := &sink{}
	attach(t, a, "p", s1, false)
	subscribe(t, a, "p", "first/#", 1)
	history(t, pub, "later/x", 4) // no subscription anywhere on this topic yet
	subscribe(t, a, "p", "later/#", 1)
	st, _ := resume(t, a, "p", s1)
	if q := queuedPayloads(st); len(q) != 0 {
		t.Fatalf("a filter added later was replayed %d messages from before it: %v", len(q), q)
	}
}

func TestRedis_ResubscribeNotReplayedGap_Issue7_3_MQTT_4_5_0_1(t *testing.T) {
	srv := redistest.Start(t)
	a := newTestRedis(t, srv, "a")
	pub := newTestRedis(t, srv, "pub")

	s1 := &sink{}
	attach(t, a, "p", s1, false)
	subscribe(t, a, "p", "re/#", 1)
	if err := a.Unsubscribe(t.Context(), "p", "re/#"); err != nil {
		t.Fatal(err)
	}
	history(t, pub, "re/x", 3) // published while not subscribed
	subscribe(t, a, "p", "re/#", 1)
	st, _ := resume(t, a, "p", s1)
	if q := queuedPayloads(st); len(q) != 0 {
		t.Fatalf("resubscribed session was replayed %d messages from while it was unsubscribed: %v", len(q), q)
	}
}

func TestRedis_CleanThenPersistentNotReplayedHistory_Issue7_3_MQTT_4_5_0_1(t *testing.T) {
	srv := redistest.Start(t)
	a := newTestRedis(t, srv, "a")
	pub := newTestRedis(t, srv, "pub")

	c := &sink{}
	attach(t, a, "p", c, true)
	subscribe(t, a, "p", "cl/#", 1)
	detach(t, a, "p", c, nil)
	history(t, pub, "cl/x", 3)

	s1 := &sink{}
	attach(t, a, "p", s1, false)
	subscribe(t, a, "p", "cl/#", 1)
	st, _ := resume(t, a, "p", s1)
	if q := queuedPayloads(st); len(q) != 0 {
		t.Fatalf("persistent session after a clean one was replayed %d old messages: %v", len(q), q)
	}
}

// A resumed session's replay may read further than this replica's own
// position; storing that stale position on the next detach would replay
// the same messages again on the connection after.
func TestRedis_ResumedSessionNotReplayedTwice_Issue7_3(t *testing.T) {
	srv := redistest.Start(t)
	a := newTestRedis(t, srv, "a")
	b := newTestRedis(t, srv, "b") // never subscribed to anything on "twice"
	pub := newTestRedis(t, srv, "pub")

	s1 := &sink{}
	attach(t, a, "p", s1, false)
	subscribe(t, a, "p", "twice/#", 1)
	detach(t, a, "p", s1, &StoredSession{})
	history(t, pub, "twice/x", 3)

	s2 := &sink{}
	st := attach(t, b, "p", s2, false)
	if q := queuedPayloads(st); len(q) != 3 {
		t.Fatalf("first resume got %v, want the 3 messages published while offline", q)
	}
	st, _ = resume(t, b, "p", s2)
	if q := queuedPayloads(st); len(q) != 0 {
		t.Fatalf("second resume was replayed %d messages already handed over: %v", len(q), q)
	}
}

// A message published before a filter existed never reaches it live
// either [MQTT-4.5.0-1]: the window re-published after Redis restarted
// empty, or a blip's replay, carries messages seconds old, which a filter
// made since must not receive (issue 7, found by the hostile review). A
// message's publish time is carried in its envelope.
func TestRedis_OldMessageNotDeliveredToNewerFilter_MQTT_4_5_0_1(t *testing.T) {
	srv := redistest.Start(t)
	a := newTestRedis(t, srv, "a")
	pub := newTestRedis(t, srv, "pub")

	// p's filter comes back with its stored session: it existed since
	// the session was stored, before the old message.
	restored := &sink{}
	attach(t, a, "p", restored, false)
	subscribe(t, a, "p", "old/#", 1)
	_, restored = resume(t, a, "p", restored)
	time.Sleep(lateMessage + 200*time.Millisecond) // the scenario: the session was stored this long ago

	fresh := &sink{}
	attach(t, a, "n", fresh, true)
	subscribe(t, a, "n", "old/#", 1)

	// Old (past lateMessage), but published after p's session was stored.
	stale := rmsg("old/x", 1, "published a while ago")
	stale.Time = time.Now().Add(-lateMessage - 100*time.Millisecond)
	publish(t, pub, stale)
	publish(t, pub, rmsg("old/x", 1, "now"))
	fresh.WaitFor(t, 1)
	restored.WaitFor(t, 2)
	fence(t, pub, a)
	if d := fresh.Deliveries(); len(d) != 1 || string(d[0].Message.Payload) != "now" {
		t.Fatalf("a filter made now got %d messages (first %q), want only the one published after it", len(d), d[0].Message.Payload)
	}
	if d := restored.Deliveries(); len(d) != 2 {
		t.Fatalf("a filter restored with its session got %d messages, want both", len(d))
	}
}

// The replica's position (lastSeen) moves only once a message's fan-out
// has ended, and a session's cursor still covers every message the gate
// decided for it (gated): a cursor taken in the middle of a fan-out holds
// what reached the client and leaves the rest to the replay, so a leaving
// client neither loses a QoS ≥ 1 message nor gets it twice.
func TestRedis_CursorCoversGatedNotInFlight(t *testing.T) {
	r := &Redis{conns: make(map[string]*redisClient)}
	m := rmsg("t/x", 1, "one")
	shard := shardOf(m.Topic)
	r.lastSeen[shard] = streamID{ms: 5}
	c := &redisClient{r: r, id: "c", subs: map[string]byte{"t/#": 1}}
	// The connection records, at each delivery, the replica's position on
	// the shard and its own cursor there.
	var seen, cursor []streamID
	p := &sink{AlwaysIdle: true}
	p.OnDeliver = func(*Message, byte) {
		r.mu.Lock()
		defer r.mu.Unlock()
		seen = append(seen, r.lastSeen[shard])
		cursor = append(cursor, r.cursorLocked(c)[shard])
	}
	c.sub = p
	r.conns["c"] = c
	r.core = &gateCore{gate: c, sub: p, granted: 1}

	if !r.deliverLocal(m, shard, streamID{ms: 7}) {
		t.Fatal("a new stream id was dropped as a repeat")
	}
	if len(seen) != 1 || seen[0] != (streamID{ms: 5}) {
		t.Fatalf("position during the fan-out %v, want the previous one, 5-0", seen)
	}
	if cursor[0] != (streamID{ms: 7}) {
		t.Fatalf("cursor during the fan-out %v, want the delivered message's id 7-0", cursor[0])
	}
	if r.lastSeen[shard] != (streamID{ms: 7}) || c.gated[shard] != (streamID{ms: 7}) {
		t.Fatalf("after the fan-out: position %v, gated %v; want 7-0 both", r.lastSeen[shard], c.gated[shard])
	}
	if r.deliverLocal(m, shard, streamID{ms: 6}) {
		t.Fatal("an id before the position was delivered again")
	}

	// Another client that the gate never saw the message for keeps its
	// cursor at the position before it, raised by its own floor only.
	other := &redisClient{id: "o"}
	r.lastSeen[shard] = streamID{ms: 5}
	if cur := r.cursorLocked(other); cur[shard] != (streamID{ms: 5}) {
		t.Fatalf("cursor of a client the message did not reach %v, want 5-0", cur[shard])
	}
	other.floor = new([streamShards]streamID)
	other.floor[shard] = streamID{ms: 9}
	if cur := r.cursorLocked(other); cur[shard] != (streamID{ms: 9}) {
		t.Fatalf("cursor below the floor: %v, want 9-0", cur[shard])
	}
}

// gateCore is a core of one client, matched by every message: it asks the
// client's gate, as broker.Broker.Receive does, then delivers.
type gateCore struct {
	broker.Broker // for the Receiver methods the test does not use
	gate          broker.SessionGate
	sub           Subscriber
	granted       byte
}

func (g *gateCore) Receive(m *Message, pos broker.Position) {
	if q, ok := g.gate.Gate(m, pos, g.granted); ok {
		g.sub.Deliver(m, min(q, m.QoS))
	}
}
