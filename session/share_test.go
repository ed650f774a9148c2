package session

import (
	"context"
	"fmt"
	"testing"

	"github.com/bridgemq/server/broker"
)

// handBackBroker records what a session hands back and takes it all, or
// none.
type handBackBroker struct {
	*broker.Broker
	takeAll bool
	got     []broker.SharedDelivery
	keep    bool
}

func (b *handBackBroker) HandBack(_ context.Context, ds []broker.SharedDelivery, keep bool) ([]bool, error) {
	b.got, b.keep = append(b.got, ds...), keep
	taken := make([]bool, len(ds))
	for i := range taken {
		taken[i] = b.takeAll
	}
	return taken, nil
}

// fillCleared is the writer's fill with a cluster that forgets at once
// what a group's QoS 2 messages were owed (markCleared).
func fillCleared(s *Session) []byte {
	var out []byte
	for {
		buf, _, clearing := s.fillShared(nil, false, nil, nil)
		out = append(out, buf...)
		if len(clearing) == 0 {
			return out
		}
		s.markCleared(len(clearing))
	}
}

// payloads lists the payloads of ds.
func payloads[T any](list []T, msg func(T) *broker.Message) []string {
	out := []string{}
	for _, v := range list {
		out = append(out, string(msg(v).Payload))
	}
	return out
}

// Section 4.8.2: when a connection ends, the messages a shared
// subscription group handed it go back to the group when they were queued
// and not sent, or sent at QoS 1 and not acknowledged; a QoS 2 message
// already sent stays the member's, PUBREC received or not [MQTT-4.8.2-4]
// [MQTT-4.8.2-5]; a non-shared message always stays. What another member
// took leaves the stored session; the rest stays, in order.
func TestHandBack_WhatGoesBackToTheGroup_MQTT_4_8_2(t *testing.T) {
	tests := []struct {
		name      string
		window    int // inflight window: the first window QoS ≥ 1 messages are sent
		pubrec    int // how many of the sent ones got PUBREC
		in        []delivery
		clean     bool
		wantBack  []string
		wantKeepI []string // inflight kept when everything handed back is taken
		wantKeepQ []string // queued kept when everything handed back is taken
	}{
		{
			name: "QoS 1 sent and queued go back", window: 2,
			in:       []delivery{{"s1", 1, "$share/g/t"}, {"s2", 1, "$share/g/t"}, {"q1", 1, "$share/g/t"}, {"q2", 2, "$share/g/t"}},
			wantBack: []string{"s1", "s2", "q1", "q2"}, wantKeepI: []string{}, wantKeepQ: []string{},
		},
		{
			name: "QoS 2 sent stays, PUBREC or not", window: 3, pubrec: 1,
			in:       []delivery{{"r", 2, "$share/g/t"}, {"s", 2, "$share/g/t"}, {"a", 1, "$share/g/t"}, {"q", 2, "$share/g/t"}},
			wantBack: []string{"a", "q"}, wantKeepI: []string{"r", "s"}, wantKeepQ: []string{},
		},
		{
			name: "non-shared stay, in order with the kept", window: 1,
			in:       []delivery{{"n1", 1, ""}, {"g1", 1, "$share/g/t"}, {"n2", 2, ""}, {"h1", 1, "$share/h/t"}},
			wantBack: []string{"g1", "h1"}, wantKeepI: []string{"n1"}, wantKeepQ: []string{"n2"},
		},
		{
			name: "clean member: handed back without keep", window: 1, clean: true,
			in:       []delivery{{"s", 1, "$share/g/t"}, {"q", 1, "$share/g/t"}},
			wantBack: []string{"s", "q"}, wantKeepI: []string{}, wantKeepQ: []string{},
		},
	}
	for _, tt := range tests {
		for _, takeAll := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/taken=%v", tt.name, takeAll), func(t *testing.T) {
				s := newTestSession(t, tt.window, 100)
				hb := &handBackBroker{Broker: broker.NewMemory(broker.MemoryOptions{}), takeAll: takeAll}
				s.env.Broker = hb
				s.clean = tt.clean
				for _, d := range tt.in {
					m := &broker.Message{Topic: "t", Payload: []byte(d.payload), QoS: d.qos}
					if d.group == "" {
						s.Deliver(m, d.qos)
					} else {
						s.DeliverShared(m, d.qos, d.group)
					}
				}
				fillCleared(s) // sends the first window messages
				for id := uint16(1); id <= uint16(tt.pubrec); id++ {
					s.onPubrec(id, 0)
				}
				st, shared := s.snapshot()
				before := len(st.Inflight) + len(st.Queued)
				if len(shared) > 0 {
					s.handBack(context.Background(), st, shared)
				}
				back := payloads(hb.got, func(d broker.SharedDelivery) *broker.Message { return d.Message })
				if fmt.Sprint(back) != fmt.Sprint(tt.wantBack) {
					t.Fatalf("handed back %v, want %v", back, tt.wantBack)
				}
				if len(hb.got) > 0 && hb.keep == tt.clean {
					t.Fatalf("handed back with keep %v for a clean %v session", hb.keep, tt.clean)
				}
				for i, d := range hb.got {
					if d.Group != groupOf(tt.in, d.Message) {
						t.Fatalf("handed back %d with group %q", i, d.Group)
					}
				}
				inflight := payloads(st.Inflight, func(i broker.Inflight) *broker.Message { return i.Message })
				queued := payloads(st.Queued, func(d broker.Delivery) *broker.Message { return d.Message })
				if !takeAll {
					if len(inflight)+len(queued) != before {
						t.Fatalf("nothing was taken, yet the state lost %d messages", before-len(inflight)-len(queued))
					}
					return
				}
				if fmt.Sprint(inflight) != fmt.Sprint(tt.wantKeepI) || fmt.Sprint(queued) != fmt.Sprint(tt.wantKeepQ) {
					t.Fatalf("kept inflight %v queued %v, want %v and %v", inflight, queued, tt.wantKeepI, tt.wantKeepQ)
				}
			})
		}
	}
}

// delivery is a message a test hands a session, through a shared
// subscription group or ("") not.
type delivery struct {
	payload string
	qos     byte
	group   string
}

// groupOf returns the group a test delivered m through.
func groupOf(in []delivery, m *broker.Message) string {
	for _, d := range in {
		if d.payload == string(m.Payload) {
			return d.group
		}
	}
	return "?"
}

// doneBroker records what a session reports done with (SharedDone) and
// hands back, taking all of it or none.
type doneBroker struct {
	handBackBroker
	done []string // payloads, in order; "wait:" before those waited for
}

func (b *doneBroker) SharedDone(_ context.Context, ds []broker.SharedDelivery, wait bool) error {
	for _, d := range ds {
		p := string(d.Message.Payload)
		if wait {
			p = "wait:" + p
		}
		b.done = append(b.done, p)
	}
	return nil
}

// sharedIn is a message a test hands a session: at qos, from a message
// of msgQoS, through group ("": not shared).
type sharedIn struct {
	payload     string
	msgQoS, qos byte
	group       string
}

// Section 4.8.2 across replicas: a member's node records what its members
// owe their groups, for a survivor to give to other members should the
// node die; the session reports when a member is done with a group's
// message, so that the record is removed: a QoS 1 message when
// acknowledged, a QoS 2 message before it is written (it then stays with
// the member [MQTT-4.8.2-5]: waited for), a QoS 0 delivery when sent; one
// dropped; at the end what nobody else took, and what the session drops.
// A non-shared message is never reported.
func TestSharedDone_WhenAMemberIsDoneWithAGroupsMessage_MQTT_4_8_2(t *testing.T) {
	const g = "$share/g/t"
	tests := []struct {
		name              string
		window, maxQueued int
		in                []sharedIn
		takeAll           bool
		wantQueue         []string // reported when delivered (dropped)
		wantFill          []string // returned done by the writer's fill
		wantClear         []string // held back by the fill until the cluster forgot them
		noAck             bool     // the member sends no PUBACK
		wantAck           []string // reported on PUBACK of packet id 1
		wantEnd           []string // reported when the connection ends
	}{
		{
			name: "QoS 1 when acknowledged", window: 1, maxQueued: 10,
			in:      []sharedIn{{"a", 1, 1, g}},
			wantAck: []string{"a"},
		},
		{
			name: "QoS 2 before it is written, waited for; then it stays", window: 2, maxQueued: 10,
			in:        []sharedIn{{"a", 1, 1, g}, {"b", 2, 2, g}, {"c", 2, 2, g}, {"d", 2, 2, g}},
			wantClear: []string{"b"}, wantAck: []string{"a"}, wantEnd: []string{"c", "d"},
		},
		{
			name: "QoS 2: as many cleared at once as the window has room for", window: 3, maxQueued: 10,
			in:        []sharedIn{{"a", 2, 2, g}, {"b", 1, 1, g}, {"c", 2, 2, g}, {"d", 2, 2, g}},
			wantClear: []string{"a", "c", "d"}, wantEnd: []string{"b", "d"},
		},
		{
			name: "QoS 0 grant of a QoS 1 message when sent", window: 1, maxQueued: 10,
			in:       []sharedIn{{"a", 1, 0, g}},
			wantFill: []string{"a"},
		},
		{
			name: "dropped for a full queue when delivered", window: 1, maxQueued: 1,
			in:        []sharedIn{{"a", 1, 1, g}, {"b", 1, 1, g}},
			wantQueue: []string{"b"}, wantAck: []string{"a"},
		},
		{
			name: "at the end what nobody took, and the dropped QoS 0", window: 1, maxQueued: 10, noAck: true,
			in:      []sharedIn{{"a", 1, 1, g}, {"b", 1, 1, g}, {"c", 1, 0, g}},
			wantEnd: []string{"c", "a", "b"},
		},
		{
			name: "at the end nothing another member took", window: 1, maxQueued: 10, takeAll: true, noAck: true,
			in:      []sharedIn{{"a", 1, 1, g}, {"b", 1, 1, g}, {"c", 1, 0, g}},
			wantEnd: []string{"c"},
		},
		{
			name: "non-shared never", window: 2, maxQueued: 10,
			in: []sharedIn{{"a", 1, 1, ""}, {"b", 2, 2, ""}, {"c", 0, 0, ""}},
		},
	}
	str := func(v []string) string { return fmt.Sprint(append([]string{}, v...)) }
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestSession(t, tt.window, tt.maxQueued)
			b := &doneBroker{handBackBroker: handBackBroker{Broker: broker.NewMemory(broker.MemoryOptions{}), takeAll: tt.takeAll}}
			s.env.Broker = b
			for _, d := range tt.in {
				m := &broker.Message{Topic: "t", Payload: []byte(d.payload), QoS: d.msgQoS}
				if d.group == "" {
					s.Deliver(m, d.qos)
				} else {
					s.DeliverShared(m, d.qos, d.group)
				}
			}
			if str(b.done) != str(tt.wantQueue) {
				t.Fatalf("reported done when delivered %v, want %v", b.done, tt.wantQueue)
			}
			b.done = nil
			_, done, clearing := s.fillShared(nil, false, nil, nil)
			msg := func(d broker.SharedDelivery) *broker.Message { return d.Message }
			if got := payloads(done, msg); str(got) != str(tt.wantFill) {
				t.Fatalf("fill reports done %v, want %v", got, tt.wantFill)
			}
			if got := payloads(clearing, msg); str(got) != str(tt.wantClear) {
				t.Fatalf("fill holds back %v to clear, want %v", got, tt.wantClear)
			}
			if len(clearing) > 0 {
				before := len(s.inflight)
				s.markCleared(len(clearing))
				if _, done, clearing = s.fillShared(nil, false, nil, nil); len(done)+len(clearing) > 0 {
					t.Fatalf("once cleared, fill reports %d done and holds back %d", len(done), len(clearing))
				}
				if sent := len(s.inflight) - before; sent == 0 {
					t.Fatal("nothing sent once cleared")
				}
			}
			if !tt.noAck {
				s.onPuback(1)
			}
			if str(b.done) != str(tt.wantAck) {
				t.Fatalf("reported done on PUBACK %v, want %v", b.done, tt.wantAck)
			}
			b.done = nil
			s.handOver(context.Background())
			if str(b.done) != str(tt.wantEnd) {
				t.Fatalf("reported done at the end %v, want %v", b.done, tt.wantEnd)
			}
		})
	}
}

// A connection that is closing (its socket closed) puts nothing more in
// flight: a group's QoS 2 message put in flight then would stay with this
// member, never sent [MQTT-4.8.2-5]; left queued, it goes back to the
// group.
func TestFill_ClosingConnectionKeepsGroupMessagesQueued_MQTT_4_8_2(t *testing.T) {
	for _, qos := range []byte{1, 2} {
		t.Run(fmt.Sprint("QoS ", qos), func(t *testing.T) {
			s := newTestSession(t, 10, 10)
			hb := &handBackBroker{Broker: broker.NewMemory(broker.MemoryOptions{}), takeAll: true}
			s.env.Broker = hb
			s.DeliverShared(&broker.Message{Topic: "t", Payload: []byte("a"), QoS: qos}, qos, "$share/g/t")
			s.mu.Lock()
			s.halted = true
			s.mu.Unlock()
			if buf := fillCleared(s); len(buf) != 0 || len(s.inflight) != 0 {
				t.Fatalf("a closing connection wrote %d bytes, %d in flight", len(buf), len(s.inflight))
			}
			s.handOver(context.Background())
			if got := payloads(hb.got, func(d broker.SharedDelivery) *broker.Message { return d.Message }); fmt.Sprint(got) != "[a]" {
				t.Fatalf("handed back %v, want [a]", got)
			}
		})
	}
}
