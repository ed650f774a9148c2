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
				s.fill(nil, false) // sends the first window messages
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
