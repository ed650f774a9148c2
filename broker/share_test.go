package broker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/bridgemq/server/topics"
)

// subscribeAll subscribes client id to each filter at QoS 1.
func subscribeAll(t *testing.T, b *Broker, id string, filters ...string) {
	t.Helper()
	for _, f := range filters {
		if err := b.Subscribe(context.Background(), id, f, 1); err != nil {
			t.Fatalf("subscribe %s to %s: %v", id, f, err)
		}
	}
}

// publishN publishes n QoS 1 messages on topic and returns them.
func publishN(t *testing.T, b *Broker, topic string, n int) []*Message {
	t.Helper()
	out := make([]*Message, n)
	for i := range out {
		out[i] = message(topic, 1, fmt.Sprint(i))
		out[i].ID = NewID()
		if err := b.Publish(context.Background(), out[i]); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// Each message goes to exactly one member of the group, in turn, so the
// members share the load evenly (section 4.8.2).
func TestShare_EachMessageToOneMemberInTurn_MQTT_4_8_2(t *testing.T) {
	b := NewMemory(MemoryOptions{})
	sinks := []*sink{{}, {}, {}}
	for i, s := range sinks {
		id := fmt.Sprint("m", i)
		mustAttach(t, b, id, "", s, true)
		subscribeAll(t, b, id, "$share/g/a/+")
	}
	msgs := publishN(t, b, "a/b", 300)
	seen := make(map[ID]int)
	for i, s := range sinks {
		got := s.Deliveries()
		if len(got) != 100 {
			t.Errorf("member %d got %d messages, want 100 (round robin)", i, len(got))
		}
		for _, d := range got {
			seen[d.Message.ID]++
		}
	}
	for _, m := range msgs {
		if seen[m.ID] != 1 {
			t.Fatalf("message %s delivered %d times, want exactly once", m.Payload, seen[m.ID])
		}
	}
}

// A client with a shared and a non-shared subscription matching a message
// gets it through each: the one-copy rule [MQTT-3.3.5-1] is the
// non-shared fan-out's. Two groups with the same filter each get it.
func TestShare_SharedAndNonSharedIndependent_MQTT_3_3_5_1(t *testing.T) {
	b := NewMemory(MemoryOptions{})
	both, other, g2 := &sink{}, &sink{}, &sink{}
	mustAttach(t, b, "both", "", both, true)
	mustAttach(t, b, "other", "", other, true)
	mustAttach(t, b, "g2", "", g2, true)
	subscribeAll(t, b, "both", "$share/g/a/#", "a/#", "a/+")
	subscribeAll(t, b, "other", "$share/g/a/#")
	subscribeAll(t, b, "g2", "$share/h/a/#")
	publishN(t, b, "a/b", 10)
	if n := len(both.Deliveries()); n != 10+5 {
		t.Errorf("client with both got %d, want 10 non-shared + 5 shared", n)
	}
	if n := len(other.Deliveries()); n != 5 {
		t.Errorf("other member got %d, want 5", n)
	}
	if n := len(g2.Deliveries()); n != 10 {
		t.Errorf("lone member of another group got %d, want 10", n)
	}
}

// A member whose connection is closing (Deliver refuses) or that is
// offline does not take the group's messages: the next member does. With
// no member connected the message is not kept for anyone.
func TestShare_OnlyConnectedMembersTake(t *testing.T) {
	b := NewMemory(MemoryOptions{})
	ctx := context.Background()
	closing, live, away := refusing(), &sink{}, &sink{}
	mustAttach(t, b, "closing", "", closing, true)
	mustAttach(t, b, "live", "", live, true)
	mustAttach(t, b, "away", "", away, false)
	subscribeAll(t, b, "closing", "$share/g/t")
	subscribeAll(t, b, "live", "$share/g/t")
	subscribeAll(t, b, "away", "$share/g/t")
	if err := b.Detach(ctx, "away", away, &StoredSession{}); err != nil {
		t.Fatal(err)
	}
	publishN(t, b, "t", 9)
	if n := len(live.Deliveries()); n != 9 {
		t.Fatalf("the one connected member got %d, want all 9", n)
	}
	if err := b.Unsubscribe(ctx, "live", "$share/g/t"); err != nil {
		t.Fatal(err)
	}
	publishN(t, b, "t", 3)
	st := mustAttach(t, b, "away", "", &sink{}, false)
	if st == nil || len(st.Queued) != 0 {
		t.Fatalf("offline member's session = %+v, want nothing queued for a shared subscription", st)
	}
	if st.Subscriptions["$share/g/t"] != 1 {
		t.Fatalf("offline member's session lost its shared subscription: %+v", st.Subscriptions)
	}
}

// A ShareName that is empty or holds a wildcard, or no filter after it,
// is refused [MQTT-4.8.2-1] [MQTT-4.8.2-2].
func TestShare_InvalidShareNameRefused_MQTT_4_8_2_1(t *testing.T) {
	b := NewMemory(MemoryOptions{})
	mustAttach(t, b, "c", "", &sink{}, true)
	for _, f := range []string{"$share//t", "$share/+/t", "$share/g#/t", "$share/g", "$share/g/"} {
		if err := b.Subscribe(context.Background(), "c", f, 1); !errors.Is(err, topics.ErrInvalidFilter) {
			t.Errorf("subscribe %q = %v, want ErrInvalidFilter", f, err)
		}
	}
}

// claims is a loopback whose ClaimShared takes only while win is set, and
// which counts the routes and member counts the core gives it.
type claims struct {
	*loopback
	mu      sync.Mutex
	win     bool
	routes  map[string]int
	members map[string]int
}

func (c *claims) ClaimShared(_ string, _ *Message, take func() bool) {
	c.mu.Lock()
	win := c.win
	c.mu.Unlock()
	if win {
		take()
	}
}

func (c *claims) ShareMembers(group string, n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.members[group] = n
}

func (c *claims) Route(_ context.Context, fs []string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, f := range fs {
		c.routes[f]++
	}
	return nil
}

func (c *claims) Unroute(_ context.Context, fs []string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, f := range fs {
		c.routes[f]--
	}
	return nil
}

// The core delivers a shared message only when its cluster says this node
// takes it (exactly once cluster-wide); it routes a group's filter once per
// group, beside the trie's own route of it, and tells the cluster its
// member counts.
func TestShare_ClusterDecidesAndRoutes(t *testing.T) {
	st := &memStore{sessions: make(map[string]*memSession), retained: make(map[string]*Message), wills: make(map[string]*time.Timer)}
	cl := &claims{loopback: &loopback{store: st}, routes: make(map[string]int), members: make(map[string]int)}
	b := New(st, cl, Options{})
	st.queue = b.queue
	ctx := context.Background()
	s1, s2 := &sink{}, &sink{}
	mustAttach(t, b, "m1", "", s1, true)
	mustAttach(t, b, "m2", "", s2, true)
	subscribeAll(t, b, "m1", "$share/g/a/#", "a/#")
	subscribeAll(t, b, "m2", "$share/g/a/#", "$share/h/a/#")
	if cl.routes["a/#"] != 3 || cl.members["$share/g/a/#"] != 2 || cl.members["$share/h/a/#"] != 1 {
		t.Fatalf("routes %v members %v, want a/# routed 3 times (trie, g, h), g 2 members, h 1", cl.routes, cl.members)
	}
	publishN(t, b, "a/b", 4)
	if n := len(s2.Deliveries()); n != 0 {
		t.Fatalf("member got %d messages the cluster did not let this node take", n)
	}
	cl.mu.Lock()
	cl.win = true
	cl.mu.Unlock()
	publishN(t, b, "a/b", 4)
	if n1, n2 := len(s1.Deliveries()), len(s2.Deliveries()); n1 != 8+2 || n2 != 2+4 {
		t.Fatalf("m1 got %d (want 8 non-shared + 2 of g), m2 got %d (want 2 of g + 4 of h)", n1, n2)
	}
	if err := b.Unsubscribe(ctx, "m2", "$share/h/a/#"); err != nil {
		t.Fatal(err)
	}
	if err := b.Detach(ctx, "m1", s1, nil); err != nil {
		t.Fatal(err)
	}
	if cl.routes["a/#"] != 1 || cl.members["$share/g/a/#"] != 1 || cl.members["$share/h/a/#"] != 0 {
		t.Fatalf("routes %v members %v after m1 left and m2 left h, want a/# routed once (g)", cl.routes, cl.members)
	}
}

// A message of this node alone (PublishLocal: its $SYS figures) goes to
// its shared groups without the cluster's claim: no other node has it.
func TestShare_LocalMessageTakenWithoutClaim(t *testing.T) {
	st := &memStore{sessions: make(map[string]*memSession), retained: make(map[string]*Message), wills: make(map[string]*time.Timer)}
	cl := &claims{loopback: &loopback{store: st}, routes: make(map[string]int), members: make(map[string]int)}
	b := New(st, cl, Options{})
	st.queue = b.queue
	s := &sink{}
	mustAttach(t, b, "m", "", s, true)
	subscribeAll(t, b, "m", "$share/g/$SYS/#")
	b.PublishLocal(&Message{ID: NewID(), Topic: "$SYS/broker/uptime", Payload: []byte("1")})
	b.Receive(&Message{ID: NewID(), Topic: "$SYS/broker/uptime", Payload: []byte("2")}, NoPosition)
	if got := s.Deliveries(); len(got) != 1 || string(got[0].Message.Payload) != "1" {
		t.Fatalf("got %+v, want the local message alone (the cluster refuses the other)", got)
	}
}

// handoffs is a loopback that stands for other nodes: it knows of members
// elsewhere when elsewhere is set, and takes what is handed off to it when
// accept is set (refusing with err when set).
type handoffs struct {
	*loopback
	elsewhere, accept bool
	err               error
	gateRefuses       bool
	got               map[string][]*Message
	took              []bool // what each take of ClaimShared reported
	done              []SharedDelivery
}

func (h *handoffs) SharedDone(_ context.Context, ds []SharedDelivery, _ bool) error {
	h.done = append(h.done, ds...)
	return nil
}

func (h *handoffs) ClaimShared(_ string, _ *Message, take func() bool) {
	h.took = append(h.took, take())
}

func (h *handoffs) SharedElsewhere(string) bool { return h.elsewhere }

func (h *handoffs) HandOffShared(_ context.Context, group string, msgs []*Message) (bool, error) {
	if h.err != nil {
		return false, h.err
	}
	if !h.accept {
		return false, nil
	}
	h.got[group] = append(h.got[group], msgs...)
	return true, nil
}

// refusingGate is the SessionGate of a store that holds every message
// back (older than every subscription of the client).
type refusingGate struct{ noGate }

func (refusingGate) Gate(*Message, Position, byte) (byte, bool) { return 0, false }

func newHandoffBroker(h *handoffs) *Broker {
	st := &memStore{sessions: make(map[string]*memSession), retained: make(map[string]*Message), wills: make(map[string]*time.Timer)}
	h.loopback = &loopback{store: st}
	h.got = make(map[string][]*Message)
	gs := gatingStore{st, func(string) SessionGate {
		if h.gateRefuses {
			return refusingGate{}
		}
		return NoGate
	}}
	b := New(gs, h, Options{})
	st.queue = b.queue
	return b
}

// Section 4.8.2: what a member leaves unacknowledged or unsent when its
// connection ends goes to another member of its group: one on this node
// first, else one on another node through the cluster; a persistent
// member keeps what no member can take, a clean one loses it (counted).
func TestShare_HandBack_MQTT_4_8_2(t *testing.T) {
	tests := []struct {
		name       string
		otherHere  bool // another live member of the group on this node
		cluster    handoffs
		keep       bool
		wantTaken  bool
		wantHere   int // messages the other member here got
		wantSent   int // messages handed to the cluster
		wantDrop   int64
		wantErr    bool
		wantHanded int64
	}{
		{name: "another member on this node takes them", otherHere: true, wantTaken: true, wantHere: 3, wantHanded: 3},
		{name: "persistent, none here nor elsewhere: kept", keep: true},
		{name: "persistent, a member elsewhere: handed off", keep: true, cluster: handoffs{elsewhere: true, accept: true}, wantTaken: true, wantSent: 3, wantHanded: 3},
		{name: "clean, none here: handed off whatever the cluster knows", cluster: handoffs{accept: true}, wantTaken: true, wantSent: 3, wantHanded: 3},
		{name: "clean, no other node: lost, counted", wantDrop: 3},
		{name: "clean, the cluster fails: lost, counted", cluster: handoffs{accept: true, err: errors.New("redis down")}, wantDrop: 3, wantErr: true},
		{name: "a member here before the cluster", otherHere: true, cluster: handoffs{elsewhere: true, accept: true}, wantTaken: true, wantHere: 3, wantHanded: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := tt.cluster
			b := newHandoffBroker(&h)
			ctx := context.Background()
			gone := refusing() // its connection has ended
			mustAttach(t, b, "gone", "", gone, !tt.keep)
			subscribeAll(t, b, "gone", "$share/g/t")
			other := &sink{}
			if tt.otherHere {
				mustAttach(t, b, "other", "", other, true)
				subscribeAll(t, b, "other", "$share/g/t")
			}
			var ds []SharedDelivery
			for i := range 3 {
				ds = append(ds, SharedDelivery{Group: "$share/g/t", Delivery: Delivery{Message: message("t", 1, fmt.Sprint(i)), QoS: 1}})
			}
			taken, err := b.HandBack(ctx, ds, tt.keep)
			if (err != nil) != tt.wantErr {
				t.Fatalf("HandBack error %v, want error %v", err, tt.wantErr)
			}
			for i, tk := range taken {
				if tk != tt.wantTaken {
					t.Fatalf("taken[%d] = %v, want %v", i, tk, tt.wantTaken)
				}
			}
			if got := other.Deliveries(); len(got) != tt.wantHere {
				t.Fatalf("the other member here got %d, want %d", len(got), tt.wantHere)
			}
			sent := h.got["$share/g/t"]
			if len(sent) != tt.wantSent {
				t.Fatalf("the cluster got %d, want %d", len(sent), tt.wantSent)
			}
			for i, m := range sent {
				if m != ds[i].Message {
					t.Fatalf("handed off %q at %d, want the member's messages in order", m.Payload, i)
				}
			}
			st := b.Stats()
			if st["shared_dropped"] != tt.wantDrop || st["shared_handed_back"] != tt.wantHanded {
				t.Fatalf("shared_dropped %d, shared_handed_back %d; want %d and %d", st["shared_dropped"], st["shared_handed_back"], tt.wantDrop, tt.wantHanded)
			}
		})
	}
}

// A message another node hands off (DeliverShared) goes to a live member
// of the group here even when the Gate would hold back a message that old
// from a new subscription: it went through the group's subscription when
// it was published. The member learns the group (DeliverShared), which
// a plain member (Receive) does too.
func TestShare_DeliverSharedSkipsGateAndNamesGroup(t *testing.T) {
	h := handoffs{gateRefuses: true}
	b := newHandoffBroker(&h)
	m := &sink{}
	mustAttach(t, b, "m", "", m, true)
	subscribeAll(t, b, "m", "$share/g/a/+", "$share/h/a/b")
	b.Receive(message("a/b", 1, "gated"), NoPosition)
	if n := len(m.Deliveries()); n != 0 {
		t.Fatalf("the Gate refused, yet the member got %d", n)
	}
	if !b.DeliverShared("$share/h/a/b", message("a/b", 1, "handed")) {
		t.Fatal("DeliverShared found no member")
	}
	if b.DeliverShared("$share/x/a/b", message("a/b", 1, "no such group")) {
		t.Fatal("DeliverShared took a message for a group this node does not have")
	}
	if got := m.Deliveries(); len(got) != 1 || string(got[0].Message.Payload) != "handed" || got[0].Group != "$share/h/a/b" {
		t.Fatalf("got %+v, want the handed message through $share/h/a/b", got)
	}
}

// What the core tells its cluster when it takes a message for a group: a
// member closing its connection leaves it to another node (the cluster
// hands it off), but a message the Gate holds back from every member
// (older than each one's subscription) is owed to none: it is not offered
// elsewhere either.
func TestShare_TakeReportsWhetherAnotherNodeShouldHaveIt(t *testing.T) {
	tests := []struct {
		name        string
		gateRefuses bool
		closing     bool
		want        bool
		delivered   int
		done        int // reported done to the cluster: owed by no member here
	}{
		{name: "a live member takes it", want: true, delivered: 1},
		{name: "the only member is closing: another node should", closing: true, want: false},
		{name: "the Gate holds it back from every member: done", gateRefuses: true, want: true, done: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := handoffs{gateRefuses: tt.gateRefuses}
			b := newHandoffBroker(&h)
			m := &sink{}
			if tt.closing {
				m.Refuse()
			}
			mustAttach(t, b, "m", "", m, true)
			subscribeAll(t, b, "m", "$share/g/t")
			b.Receive(message("t", 1, "x"), NoPosition)
			if len(h.took) != 1 || h.took[0] != tt.want {
				t.Fatalf("take reported %v, want [%v]", h.took, tt.want)
			}
			if n := len(m.Deliveries()); n != tt.delivered {
				t.Fatalf("member got %d, want %d", n, tt.delivered)
			}
			if len(h.done) != tt.done || (tt.done > 0 && h.done[0].Group != "$share/g/t") {
				t.Fatalf("reported done %v, want %d of $share/g/t", h.done, tt.done)
			}
		})
	}
}
