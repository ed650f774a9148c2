package broker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/bridgemq/server/internal/brokertest"
	"github.com/bridgemq/server/topics"
)

// sink is the shared fake connection, which records what it is given.
type sink = brokertest.Subscriber[Message]

// refusing is a sink whose connection has ended: Deliver refuses.
func refusing() *sink {
	s := &sink{}
	s.Refuse()
	return s
}

func message(topic string, qos byte, payload string) *Message {
	return &Message{Topic: topic, QoS: qos, Payload: []byte(payload), Time: time.Now()}
}

func mustAttach(t *testing.T, b *Broker, id, owner string, s Subscriber, clean bool) *StoredSession {
	t.Helper()
	st, err := b.Attach(context.Background(), id, owner, s, CleanSession(clean), nil)
	if err != nil {
		t.Fatalf("attach %s: %v", id, err)
	}
	return st
}

// One copy per client, at the highest QoS among its matching
// subscriptions, capped by the message's [MQTT-3.3.5-1].
func TestReceive_OneCopyAtHighestGrant_MQTT_3_3_5_1(t *testing.T) {
	b := NewMemory(MemoryOptions{})
	ctx := context.Background()
	s := &sink{}
	mustAttach(t, b, "c", "", s, true)
	for f, q := range map[string]byte{"a/+": 1, "a/#": 2, "#": 0} {
		if err := b.Subscribe(ctx, "c", f, q); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Publish(ctx, message("a/b", 2, "x")); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(ctx, message("a/b", 1, "y")); err != nil {
		t.Fatal(err)
	}
	got := s.Deliveries()
	if len(got) != 2 || got[0].QoS != 2 || got[1].QoS != 1 {
		t.Fatalf("got %+v, want one copy at 2 then one at 1", got)
	}
}

// A session stored under one username is refused to another, clean or
// not, and stays whole for its owner.
func TestAttach_OtherUserRefused(t *testing.T) {
	b := NewMemory(MemoryOptions{})
	ctx := context.Background()
	s := &sink{}
	mustAttach(t, b, "c", "alice", s, false)
	if err := b.Subscribe(ctx, "c", "t", 1); err != nil {
		t.Fatal(err)
	}
	if err := b.Detach(ctx, "c", s, &StoredSession{}); err != nil {
		t.Fatal(err)
	}
	for _, clean := range []bool{false, true} {
		if _, err := b.Attach(ctx, "c", "mallory", &sink{}, CleanSession(clean), nil); !errors.Is(err, ErrNotOwner) {
			t.Fatalf("attach by another user (clean %v) = %v, want ErrNotOwner", clean, err)
		}
	}
	st := mustAttach(t, b, "c", "alice", &sink{}, false)
	if st == nil || st.Subscriptions["t"] != 1 {
		t.Fatalf("owner found %+v, want the stored subscription", st)
	}
}

// A connection taken over on this node detaches before the new one gets
// the session [MQTT-3.1.4-2].
func TestAttach_LocalTakeover_MQTT_3_1_4_2(t *testing.T) {
	b := NewMemory(MemoryOptions{})
	ctx := context.Background()
	old := &sink{}
	old.OnTakeOver = func() { _ = b.Detach(ctx, "c", old, &StoredSession{}) }
	mustAttach(t, b, "c", "", old, false)
	if err := b.Subscribe(ctx, "c", "t", 1); err != nil {
		t.Fatal(err)
	}
	now := &sink{}
	st := mustAttach(t, b, "c", "", now, false)
	if st == nil || st.Subscriptions["t"] != 1 {
		t.Fatalf("new connection found %+v", st)
	}
	if err := b.Publish(ctx, message("t", 1, "x")); err != nil {
		t.Fatal(err)
	}
	if len(now.Deliveries()) != 1 || len(old.Deliveries()) != 0 {
		t.Fatalf("new got %d, old got %d; want 1 and 0", len(now.Deliveries()), len(old.Deliveries()))
	}
}

// An expired offline session is swept with its subscriptions.
func TestSweep_RemovesExpiredSession(t *testing.T) {
	b := NewMemory(MemoryOptions{SessionExpiry: time.Millisecond})
	t.Cleanup(func() { _ = b.Close() })
	ctx := context.Background()
	s := &sink{}
	mustAttach(t, b, "p", "", s, false)
	if err := b.Subscribe(ctx, "p", "x/#", 1); err != nil {
		t.Fatal(err)
	}
	if err := b.Detach(ctx, "p", s, &StoredSession{}); err != nil {
		t.Fatal(err)
	}
	b.sweep(time.Now().Add(time.Second))
	b.mu.RLock()
	_, kept := b.clients["p"]
	b.mu.RUnlock()
	if kept || b.subs.Filters() != 0 {
		t.Fatalf("after the sweep: registered %v, %d filters; want neither", kept, b.subs.Filters())
	}
	if st := mustAttach(t, b, "p", "", &sink{}, false); st != nil {
		t.Fatalf("expired session resumed: %+v", st)
	}
}

// A page of retained messages stops before the payload that would take it
// past the byte bound, but always holds its first topic.
func TestPagePrefix(t *testing.T) {
	for _, tt := range []struct {
		sizes []int
		max   int
		want  int
	}{
		{[]int{10, 10, 10}, 15, 1},
		{[]int{10, -1, 5, 10}, 15, 3},
		{[]int{100, 1}, 5, 1},
		{[]int{1, 2, 3}, 100, 3},
	} {
		if got := pagePrefix(tt.sizes, tt.max); got != tt.want {
			t.Errorf("pagePrefix(%v, %d) = %d, want %d", tt.sizes, tt.max, got, tt.want)
		}
	}
}

// failingCluster refuses to route once fail is set, as a cluster whose
// shared service is down does.
type failingCluster struct {
	loopback
	fail bool
}

func (f *failingCluster) Route(context.Context, []string) error {
	if f.fail {
		return errors.New("route refused")
	}
	return nil
}

// A SUBSCRIBE the cluster cannot route is undone whole: the client keeps
// its previous subscriptions at their previous QoS, a filter named twice
// included, and no new filter stays in the trie.
func TestSubscribe_UnroutableIsUndone(t *testing.T) {
	st := &memStore{sessions: make(map[string]*memSession), retained: make(map[string]*Message)}
	fc := &failingCluster{loopback: loopback{store: st}}
	b := New(st, fc, Options{})
	st.queue = b.queue
	ctx := context.Background()
	mustAttach(t, b, "c", "", &sink{}, true)
	if err := b.Subscribe(ctx, "c", "old", 1); err != nil {
		t.Fatal(err)
	}
	fc.fail = true
	err := b.SubscribeMany(ctx, "c", []Subscription{{Filter: "old", QoS: 2}, {Filter: "new", QoS: 1}, {Filter: "new", QoS: 2}})
	if err == nil {
		t.Fatal("subscribe routed through a failing cluster")
	}
	c, _ := b.client("c")
	if n := b.subs.Filters(); n != 1 || len(c.subs) != 1 || c.subs["old"] != 1 {
		t.Fatalf("after the failed subscribe: %d filters in the trie, subscriptions %v; want old at 1 alone", n, c.subs)
	}
}

// streamStore is a Store that, like the Redis one, keeps no offline
// routes: it records what the core saves and returns it on the next
// claim, subscriptions included.
type streamStore struct {
	memStore
	saved      map[string]*StoredSession
	failResume bool     // Resume refuses
	abandoned  []string // Abandon calls
}

func (s *streamStore) RoutesOffline() bool { return false }

// Claim reads the stored session without removing it, as the Redis store
// does: it stays stored until the next Save.
func (s *streamStore) Claim(_ context.Context, clientID, _ string, _ Subscriber, life Lifetime, _ *Message) (*StoredSession, SessionGate, error) {
	st := s.saved[clientID]
	if life.CleanStart {
		delete(s.saved, clientID)
		return nil, NoGate, nil
	}
	if st == nil {
		return nil, NoGate, nil
	}
	cp := *st
	return &cp, NoGate, nil
}

// gatingStore is the in-memory store whose Claim hands out the
// SessionGate that gate makes for the client: for the tests that watch
// what the core tells a connection's gate.
type gatingStore struct {
	*memStore
	gate func(clientID string) SessionGate
}

func (s gatingStore) Claim(ctx context.Context, clientID, owner string, sub Subscriber, life Lifetime, will *Message) (*StoredSession, SessionGate, error) {
	st, _, err := s.memStore.Claim(ctx, clientID, owner, sub, life, will)
	if err != nil {
		return nil, nil, err
	}
	return st, s.gate(clientID), nil
}

func (s *streamStore) Resume(_ context.Context, _ string, stored *StoredSession) (*StoredSession, error) {
	if s.failResume {
		return nil, errors.New("resume refused")
	}
	return stored, nil
}

func (s *streamStore) Abandon(_ context.Context, clientID string) {
	s.abandoned = append(s.abandoned, clientID)
}

func (s *streamStore) Save(_ context.Context, clientID string, st *StoredSession) error {
	if st == nil {
		delete(s.saved, clientID)
		return nil
	}
	s.saved[clientID] = st
	return nil
}

func (s *streamStore) Enqueue(string, Delivery) {
	panic("Enqueue on a store that routes nothing offline")
}

// routeRecorder is a loopback that records which filters are routed.
type routeRecorder struct {
	loopback
	routed map[string]bool
}

func (r *routeRecorder) Route(_ context.Context, filters []string) error {
	for _, f := range filters {
		r.routed[f] = true
	}
	return nil
}

func (r *routeRecorder) Unroute(_ context.Context, filters []string) error {
	for _, f := range filters {
		delete(r.routed, f)
	}
	return nil
}

// With a store that routes nothing offline, a persistent session leaves
// the node when its connection ends: its filters are released, the store
// gets its subscriptions with its state, and they are routed again when it
// returns.
func TestDetach_StoreWithoutOfflineRoutes(t *testing.T) {
	st := &streamStore{saved: make(map[string]*StoredSession)}
	st.sessions, st.retained = make(map[string]*memSession), make(map[string]*Message)
	rc := &routeRecorder{loopback: loopback{store: &st.memStore}, routed: make(map[string]bool)}
	b := New(st, rc, Options{MaxQueued: 2})
	st.queue = b.queue
	ctx := context.Background()
	s := refusing()
	mustAttach(t, b, "p", "", s, false)
	if err := b.Subscribe(ctx, "p", "t/#", 2); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := b.Publish(ctx, message("t/x", 1, "late")); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Detach(ctx, "p", s, &StoredSession{}); err != nil {
		t.Fatal(err)
	}
	if n := b.subs.Filters(); n != 0 || rc.routed["t/#"] {
		t.Fatalf("%d filters still in the trie (t/# routed: %v) for a session that left", n, rc.routed["t/#"])
	}
	if err := b.Publish(ctx, message("t/x", 1, "offline")); err != nil {
		t.Fatal(err) // would panic in Enqueue if it were still routed
	}
	saved := st.saved["p"]
	if saved == nil || saved.Subscriptions["t/#"] != 2 || len(saved.Queued) != 2 {
		t.Fatalf("saved %+v, want t/# at 2 and the two newest refused messages", saved)
	}
	now := &sink{}
	got := mustAttach(t, b, "p", "", now, false)
	if got == nil || got.Subscriptions["t/#"] != 2 || !rc.routed["t/#"] {
		t.Fatalf("resumed %+v, t/# routed: %v; want it back and routed", got, rc.routed["t/#"])
	}
	if err := b.Publish(ctx, message("t/y", 2, "live")); err != nil {
		t.Fatal(err)
	}
	if d := now.Deliveries(); len(d) != 1 || d[0].QoS != 2 {
		t.Fatalf("resumed connection got %+v, want one message at 2", d)
	}
}

// leaveRecorder records the SessionGate.Leave calls of the gates it makes
// and checks that each runs under the client's delivery lock.
type leaveRecorder struct {
	b      *Broker
	left   []string
	locked []bool
}

// leaveGate is the gate of clientID's connection, reporting to l.
type leaveGate struct {
	noGate
	l        *leaveRecorder
	clientID string
}

func (g leaveGate) Leave() { g.l.leave(g.clientID) }

func (l *leaveRecorder) leave(clientID string) {
	c := l.b.clients[clientID] // Detach holds b.mu
	held := c != nil && !c.mu.TryLock()
	if c != nil && !held {
		c.mu.Unlock()
	}
	l.left = append(l.left, clientID)
	l.locked = append(l.locked, held)
}

// SessionGate.Leave runs once each time a client's live connection detaches,
// under its delivery lock, for a clean and a persistent session alike; a
// connection taken over does not leave the session its successor holds.
func TestDetach_LeaveUnderDeliveryLock(t *testing.T) {
	st := &memStore{sessions: make(map[string]*memSession), retained: make(map[string]*Message)}
	lr := &leaveRecorder{}
	gs := gatingStore{st, func(id string) SessionGate { return leaveGate{l: lr, clientID: id} }}
	b := New(gs, &loopback{store: st}, Options{})
	lr.b = b
	st.queue = b.queue
	ctx := context.Background()

	first, second := &sink{}, &sink{}
	mustAttach(t, b, "p", "", first, false)
	mustAttach(t, b, "p", "", second, false) // takes first over
	if err := b.Detach(ctx, "p", first, &StoredSession{}); err != nil {
		t.Fatal(err)
	}
	if len(lr.left) != 0 {
		t.Fatalf("a taken-over connection's Detach called Leave %v", lr.left)
	}
	if err := b.Detach(ctx, "p", second, &StoredSession{}); err != nil {
		t.Fatal(err)
	}
	c := &sink{}
	mustAttach(t, b, "c", "", c, true)
	if err := b.Detach(ctx, "c", c, nil); err != nil {
		t.Fatal(err)
	}
	if len(lr.left) != 2 || lr.left[0] != "p" || lr.left[1] != "c" || !lr.locked[0] || !lr.locked[1] {
		t.Fatalf("Leave calls %v, under the delivery lock %v; want p then c, both locked", lr.left, lr.locked)
	}
}

// countingGate is a SessionGate that counts what the core asks of it.
type countingGate struct {
	gates, leaves int
}

func (g *countingGate) Subscribing([]Subscription, []bool, time.Time) {}
func (g *countingGate) Unsubscribing(string)                          {}
func (g *countingGate) Leave()                                        { g.leaves++ }
func (g *countingGate) Gate(_ *Message, _ Position, granted byte) (byte, bool) {
	g.gates++
	return granted, true
}

// Each delivery asks the gate Store.Claim returned for the connection it
// goes to: after a takeover on this node, the new connection's, never the
// one taken over; Leave goes to the gate of the connection that leaves,
// and a message published after it asks no gate.
func TestDeliver_AsksTheGateOfTheLiveConnection(t *testing.T) {
	st := &memStore{sessions: make(map[string]*memSession), retained: make(map[string]*Message)}
	var made []*countingGate
	gs := gatingStore{st, func(string) SessionGate {
		g := &countingGate{}
		made = append(made, g)
		return g
	}}
	b := New(gs, &loopback{store: st}, Options{})
	st.queue = b.queue
	ctx := context.Background()

	first, second := &sink{}, &sink{}
	first.OnTakeOver = func() { _ = b.Detach(ctx, "p", first, nil) } // as a session ends
	mustAttach(t, b, "p", "", first, true)
	if err := b.Subscribe(ctx, "p", "t/#", 1); err != nil {
		t.Fatal(err)
	}
	mustAttach(t, b, "p", "", second, false) // takes first over
	if err := b.Subscribe(ctx, "p", "t/#", 1); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(ctx, message("t/x", 1, "m")); err != nil {
		t.Fatal(err)
	}
	if len(made) != 2 || made[0].gates != 0 || made[1].gates != 1 {
		t.Fatalf("%d gates made; asked %v; want 2, the second asked once", len(made), gateCounts(made))
	}
	if err := b.Detach(ctx, "p", second, nil); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(ctx, message("t/x", 1, "after")); err != nil {
		t.Fatal(err)
	}
	if made[0].leaves != 1 || made[1].leaves != 1 || made[1].gates != 1 {
		t.Fatalf("leaves %d, %d; second gate asked %d times; want 1, 1, 1", made[0].leaves, made[1].leaves, made[1].gates)
	}
}

func gateCounts(gs []*countingGate) []int {
	var n []int
	for _, g := range gs {
		n = append(n, g.gates)
	}
	return n
}

// With a store that routes nothing offline, Store.Resume runs once the
// stored subscriptions are routed; when it fails, or when the cluster
// refuses to route them, the client leaves the registry, its filters are
// unrouted, Store.Abandon is called, and the session stays stored whole
// for the next connection.
func TestAttach_ResumeOrRouteFailureAbandons(t *testing.T) {
	st := &streamStore{saved: make(map[string]*StoredSession)}
	st.sessions, st.retained = make(map[string]*memSession), make(map[string]*Message)
	rc := &routeRecorder{loopback: loopback{store: &st.memStore}, routed: make(map[string]bool)}
	b := New(st, rc, Options{})
	st.queue = b.queue
	ctx := context.Background()
	st.saved["p"] = &StoredSession{Subscriptions: map[string]byte{"t/#": 1}, Queued: []Delivery{{Message: message("t/x", 1, "q"), QoS: 1}}}

	st.failResume = true
	if _, err := b.Attach(ctx, "p", "", &sink{}, CleanSession(false), nil); err == nil {
		t.Fatal("attach succeeded with a failing Resume")
	}
	if _, err := b.client("p"); err == nil || b.subs.Filters() != 0 || rc.routed["t/#"] || len(st.abandoned) != 1 {
		t.Fatalf("after a failed Resume: registered %v, %d filters, t/# routed %v, abandoned %v; want none, 0, false, [p]", err == nil, b.subs.Filters(), rc.routed["t/#"], st.abandoned)
	}

	st.failResume = false
	fc := &failingCluster{loopback: loopback{store: &st.memStore}, fail: true}
	b2 := New(st, fc, Options{})
	if _, err := b2.Attach(ctx, "p", "", &sink{}, CleanSession(false), nil); err == nil {
		t.Fatal("attach succeeded with a cluster that refuses routes")
	}
	if _, err := b2.client("p"); err == nil || b2.subs.Filters() != 0 || len(st.abandoned) != 2 {
		t.Fatalf("after a refused route: registered %v, %d filters, abandoned %v; want none, 0, [p p]", err == nil, b2.subs.Filters(), st.abandoned)
	}

	got := mustAttach(t, b, "p", "", &sink{}, false)
	if got == nil || got.Subscriptions["t/#"] != 1 || len(got.Queued) != 1 || !rc.routed["t/#"] {
		t.Fatalf("resumed %+v (t/# routed %v) after two failed attaches, want the session whole", got, rc.routed["t/#"])
	}
}

// subRecorder is a loopback that records the subscription hooks (its own
// Subscribed and Unsubscribed, and its gates' Subscribing and
// Unsubscribing: subGate), and whether the trie already matched a filter
// when Subscribing told it.
type subRecorder struct {
	loopback
	b       *Broker
	events  []string
	failSub bool // Subscribed refuses
}

// subGate is the gate of clientID's connection, reporting to r.
type subGate struct {
	noGate
	r        *subRecorder
	clientID string
}

func (g subGate) Subscribing(subs []Subscription, fresh []bool, _ time.Time) {
	r := g.r
	c, _ := r.b.client(g.clientID) // subscribe holds no b.mu
	for i, s := range subs {
		held := c != nil && !c.mu.TryLock()
		if c != nil && !held {
			c.mu.Unlock()
		}
		var matched topics.Matches[*client]
		r.b.subs.Subscribers(s.Filter, &matched)
		inTrie := false
		for _, m := range matched.List() {
			inTrie = inTrie || m.Key == c
		}
		r.events = append(r.events, fmt.Sprintf("subscribing %s %d fresh=%v locked=%v inTrie=%v", s.Filter, s.QoS, fresh[i], held, inTrie))
	}
}

func (g subGate) Unsubscribing(filter string) {
	g.r.events = append(g.r.events, "unsubscribing "+filter)
}

func (r *subRecorder) Subscribed(_ context.Context, _ string, subs []Subscription, persistent bool) error {
	r.events = append(r.events, fmt.Sprintf("subscribed %d persistent=%v", len(subs), persistent))
	if r.failSub {
		return errors.New("floor refused")
	}
	return nil
}

func (r *subRecorder) Unsubscribed(_ context.Context, _, filter string) {
	r.events = append(r.events, "unsubscribed "+filter)
}

// The subscription hooks: Subscribing under the delivery lock before the
// trie matches a new filter (fresh only the first time a filter is held),
// Subscribed after routing, whose error undoes the SUBSCRIBE (Unsubscribing
// the new filter, Subscribing the old QoS back), and Unsubscribing then
// Unsubscribed for an UNSUBSCRIBE of a filter the client held.
func TestSubscribe_ClusterHooks(t *testing.T) {
	st := &memStore{sessions: make(map[string]*memSession), retained: make(map[string]*Message)}
	sr := &subRecorder{loopback: loopback{store: st}}
	gs := gatingStore{st, func(id string) SessionGate { return subGate{r: sr, clientID: id} }}
	b := New(gs, sr, Options{})
	sr.b = b
	st.queue = b.queue
	ctx := context.Background()
	mustAttach(t, b, "p", "", &sink{}, false)
	if err := b.Subscribe(ctx, "p", "a", 1); err != nil {
		t.Fatal(err)
	}
	if err := b.Subscribe(ctx, "p", "a", 2); err != nil {
		t.Fatal(err)
	}
	sr.failSub = true
	if err := b.SubscribeMany(ctx, "p", []Subscription{{Filter: "a", QoS: 0}, {Filter: "b", QoS: 1}}); err == nil {
		t.Fatal("subscribe succeeded though Subscribed refused")
	}
	sr.failSub = false
	c, _ := b.client("p")
	if len(c.subs) != 1 || c.subs["a"] != 2 || b.subs.Filters() != 1 {
		t.Fatalf("after the undone SUBSCRIBE: %v, %d filters; want a at 2 alone", c.subs, b.subs.Filters())
	}
	if err := b.Unsubscribe(ctx, "p", "a"); err != nil {
		t.Fatal(err)
	}
	if err := b.Unsubscribe(ctx, "p", "never"); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"subscribing a 1 fresh=true locked=true inTrie=false",
		"subscribed 1 persistent=true",
		"subscribing a 2 fresh=false locked=true inTrie=true",
		"subscribed 1 persistent=true",
		"subscribing a 0 fresh=false locked=true inTrie=true",
		"subscribing b 1 fresh=true locked=true inTrie=false",
		"subscribed 2 persistent=true",
		"unsubscribing b",
		"subscribing a 2 fresh=false locked=true inTrie=true",
		"unsubscribing a",
		"unsubscribed a",
	}
	if fmt.Sprint(sr.events) != fmt.Sprint(want) {
		t.Fatalf("hooks\n%s\nwant\n%s", strings.Join(sr.events, "\n"), strings.Join(want, "\n"))
	}
}

// Checkpoint marks the live persistent sessions that are due and idle,
// under their delivery locks, and no clean, busy, not due or offline one.
func TestCheckpoint_LivePersistentIdleDue(t *testing.T) {
	b := NewMemory(MemoryOptions{})
	ctx := context.Background()
	mustAttach(t, b, "idle", "", &sink{AlwaysIdle: true}, false)
	mustAttach(t, b, "busy", "", &sink{}, false)
	mustAttach(t, b, "clean", "", &sink{AlwaysIdle: true}, true)
	mustAttach(t, b, "notdue", "", &sink{AlwaysIdle: true}, false)
	gone := &sink{AlwaysIdle: true}
	mustAttach(t, b, "offline", "", gone, false)
	if err := b.Detach(ctx, "offline", gone, &StoredSession{}); err != nil {
		t.Fatal(err)
	}
	var marked []string
	locked := true
	b.Checkpoint(func(id string) bool { return id != "notdue" }, func(id string) {
		c, _ := b.client(id) // Checkpoint holds no b.mu while it marks
		if c.mu.TryLock() {
			c.mu.Unlock()
			locked = false
		}
		marked = append(marked, id)
	})
	if len(marked) != 1 || marked[0] != "idle" || !locked {
		t.Fatalf("marked %v (under the delivery lock: %v), want [idle] under it", marked, locked)
	}
}

// ReplaceRetained swaps the whole mirror of retained topic names, and
// RetainedTopics refuses a filter that is not valid, as the Redis bridge's
// does.
func TestRetained_ReplaceAndValidate(t *testing.T) {
	b := NewMemory(MemoryOptions{})
	ctx := context.Background()
	b.RetainedChanged("old/x", true)
	b.ReplaceRetained([]string{"a/1", "a/2", "b/1"})
	got, err := b.RetainedTopics(ctx, "#")
	if err != nil || len(got) != 3 {
		t.Fatalf("after the replace: %v, %v; want the three new names", got, err)
	}
	if got, _ := b.RetainedTopics(ctx, "a/+"); len(got) != 2 {
		t.Fatalf("a/+ matched %v, want a/1 and a/2", got)
	}
	if n := b.Stats()["retained_messages"]; n != 3 {
		t.Fatalf("retained_messages %d, want 3", n)
	}
	for _, bad := range []string{"a/#/b", "a+", ""} {
		if _, err := b.RetainedTopics(ctx, bad); err == nil {
			t.Errorf("filter %q was not refused", bad)
		}
	}
}

// A message published on this node alone (a $SYS figure) reaches its
// matching local clients and is this node's retained message of its topic,
// read beside the Store's in topic order and paged by the same byte bound;
// the Store never sees it.
func TestPublishLocal_DeliveredAndRetainedHereOnly(t *testing.T) {
	b := NewMemory(MemoryOptions{})
	ctx := context.Background()
	s := &sink{}
	mustAttach(t, b, "c", "", s, true)
	if err := b.Subscribe(ctx, "c", "$SYS/#", 1); err != nil {
		t.Fatal(err)
	}
	stored := message("m/a", 0, "stored")
	stored.Retain = true
	if err := b.Publish(ctx, stored); err != nil {
		t.Fatal(err)
	}
	sys := message("$SYS/broker/uptime", 0, "12 seconds")
	sys.Retain = true
	b.PublishLocal(sys)
	if d := s.Deliveries(); len(d) != 1 || d[0].Message != sys || d[0].QoS != 0 {
		t.Fatalf("subscriber got %+v, want the local message once at QoS 0", d)
	}
	if st, _ := b.store.RetainedRead(ctx, []string{sys.Topic}); len(st) != 0 {
		t.Fatalf("the Store holds the local message: %+v", st)
	}
	if names, _ := b.RetainedTopics(ctx, "#"); len(names) != 1 || names[0] != "m/a" {
		t.Fatalf("RetainedTopics(#) = %v, want m/a alone [MQTT-4.7.2-1]", names)
	}
	names := []string{"m/a", sys.Topic, "m/none"}
	got, n, err := b.RetainedMessages(ctx, names, 0)
	if err != nil || n != 3 || len(got) != 2 || got[0] != stored || got[1] != sys {
		t.Fatalf("RetainedMessages(%v) = %v, %d, %v; want stored then local, 3 read", names, got, n, err)
	}
	// A page bound of 7 bytes holds "stored" (6) and stops before the
	// local message's 10.
	if got, n, _ := b.RetainedMessages(ctx, names, 7); n != 1 || len(got) != 1 || got[0] != stored {
		t.Fatalf("paged RetainedMessages = %v, %d; want the first topic alone", got, n)
	}
	clear := message(sys.Topic, 0, "")
	clear.Retain = true
	b.PublishLocal(clear)
	if names, _ := b.RetainedTopics(ctx, "$SYS/#"); len(names) != 0 {
		t.Fatalf("after an empty local message: %v retained, want none [MQTT-3.3.1-10]", names)
	}
}
