package session

import (
	"fmt"
	"slices"
	"testing"

	"github.com/bridgemq/server/broker"
	"github.com/bridgemq/server/packets"
)

// A 5.0 connection applies the options of its matching subscriptions to
// each message as it sends it: No Local [MQTT-3.8.3-3], Retain As
// Published [MQTT-3.3.1-12] [MQTT-3.3.1-13] and the Subscription
// Identifiers of every matching subscription [MQTT-3.3.4-3].
func TestFill_AppliesSubscriptionOptions_MQTT_3_8_3_3(t *testing.T) {
	type sub struct {
		filter string
		qos    byte
		opts   broker.SubOptions
	}
	tests := []struct {
		name        string
		subs        []sub
		from        string // the publisher's client id
		retain      bool   // published with RETAIN=1
		onSubscribe bool   // a retained message sent because of a new subscription
		stored      bool   // ... that waited in a stored session
		feedID      uint32 // the identifier of the SUBSCRIBE that made the feed
		group       string // the shared subscription a group's copy came through; "" for a non-shared copy
		qos         byte   // the QoS the core chose
		wantSent    bool
		wantQoS     byte
		wantRetain  bool
		wantIDs     []uint32
	}{
		{name: "no local drops the own publication", subs: []sub{{"a/#", 1, broker.SubOptions{NoLocal: true}}},
			from: "me", qos: 1},
		{name: "no local lets another client's through", subs: []sub{{"a/#", 1, broker.SubOptions{NoLocal: true}}},
			from: "other", qos: 1, wantSent: true, wantQoS: 1},
		{name: "an overlapping subscription without no local sends it at its own QoS",
			subs: []sub{{"a/#", 2, broker.SubOptions{NoLocal: true, ID: 1}}, {"a/b", 0, broker.SubOptions{ID: 2}}},
			from: "me", qos: 2, wantSent: true, wantQoS: 0, wantIDs: []uint32{2}},
		{name: "no local leaves a retained message sent on subscribe alone", subs: []sub{{"a/#", 1, broker.SubOptions{NoLocal: true}}},
			from: "me", retain: true, onSubscribe: true, qos: 1, wantSent: true, wantQoS: 1, wantRetain: true},
		{name: "no local leaves a stored retained message alone", subs: []sub{{"a/#", 1, broker.SubOptions{NoLocal: true, ID: 6}}},
			from: "me", retain: true, stored: true, qos: 1, wantSent: true, wantQoS: 1, wantRetain: true, wantIDs: []uint32{6}},
		{name: "a retained message sent on subscribe carries its SUBSCRIBE's identifier alone (section 3.3.4)",
			subs: []sub{{"a/#", 1, broker.SubOptions{ID: 1}}, {"a/b", 1, broker.SubOptions{ID: 2}}},
			from: "other", retain: true, onSubscribe: true, feedID: 2, qos: 1, wantSent: true, wantQoS: 1, wantRetain: true, wantIDs: []uint32{2}},
		{name: "a retained message sent on subscribe without identifier carries none",
			subs: []sub{{"a/#", 1, broker.SubOptions{ID: 1}}, {"a/b", 1, broker.SubOptions{}}},
			from: "other", retain: true, onSubscribe: true, qos: 1, wantSent: true, wantQoS: 1, wantRetain: true},
		{name: "retain as published keeps RETAIN=1", subs: []sub{{"a/#", 1, broker.SubOptions{RetainAsPublished: true}}},
			from: "other", retain: true, qos: 1, wantSent: true, wantQoS: 1, wantRetain: true},
		{name: "without retain as published a live message has RETAIN=0", subs: []sub{{"a/#", 1, broker.SubOptions{ID: 5}}},
			from: "other", retain: true, qos: 1, wantSent: true, wantQoS: 1, wantIDs: []uint32{5}},
		{name: "every matching identifier, in order", subs: []sub{{"a/#", 1, broker.SubOptions{ID: 9}}, {"a/+", 1, broker.SubOptions{ID: 3}},
			{"#", 1, broker.SubOptions{}}, {"x", 1, broker.SubOptions{ID: 4}}},
			from: "other", qos: 1, wantSent: true, wantQoS: 1, wantIDs: []uint32{3, 9}},
		// A client may get a message once through each of a shared and a
		// non-shared subscription (section 4.8.2); each copy takes the
		// options of the subscription it came through.
		{name: "a shared copy takes its group's options alone",
			subs:  []sub{{"a/#", 0, broker.SubOptions{ID: 1}}, {"$share/g/a/#", 1, broker.SubOptions{RetainAsPublished: true, ID: 2}}},
			group: "$share/g/a/#", from: "other", retain: true, qos: 1, wantSent: true, wantQoS: 1, wantRetain: true, wantIDs: []uint32{2}},
		{name: "a non-shared copy takes the non-shared options alone MQTT_3_3_1_12",
			subs: []sub{{"a/#", 0, broker.SubOptions{ID: 1}}, {"$share/g/a/#", 1, broker.SubOptions{RetainAsPublished: true, ID: 2}}},
			from: "other", retain: true, qos: 0, wantSent: true, wantQoS: 0, wantIDs: []uint32{1}},
		{name: "another group's options do not apply",
			subs:  []sub{{"$share/h/a/#", 1, broker.SubOptions{RetainAsPublished: true, ID: 3}}, {"$share/g/a/#", 1, broker.SubOptions{ID: 2}}},
			group: "$share/g/a/#", from: "other", retain: true, qos: 1, wantSent: true, wantQoS: 1, wantIDs: []uint32{2}},
		{name: "no local on the non-shared subscription drops the non-shared copy",
			subs: []sub{{"a/#", 1, broker.SubOptions{NoLocal: true}}, {"$share/g/a/#", 1, broker.SubOptions{}}},
			from: "me", qos: 1},
		{name: "no local on the non-shared subscription leaves the shared copy",
			subs:  []sub{{"a/#", 1, broker.SubOptions{NoLocal: true}}, {"$share/g/a/#", 1, broker.SubOptions{}}},
			group: "$share/g/a/#", from: "me", qos: 1, wantSent: true, wantQoS: 1},
		{name: "an identifier used twice is sent twice (section 3.3.4)", subs: []sub{{"a/#", 1, broker.SubOptions{ID: 5}}, {"a/b", 1, broker.SubOptions{ID: 5}}},
			from: "other", qos: 1, wantSent: true, wantQoS: 1, wantIDs: []uint32{5, 5}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestSession5(t, 10, 10)
			s.clientID = "me"
			s.mu.Lock()
			s.allocMaps()
			for _, sb := range tt.subs {
				s.subs[sb.filter] = sb.qos
				s.setOptionsLocked(sb.filter, sb.opts)
			}
			s.mu.Unlock()
			msg := &broker.Message{Topic: "a/b", Payload: []byte("p"), QoS: 2, Retain: tt.retain, ClientID: tt.from}
			o := outgoing{msg: msg, qos: tt.qos, retain: tt.onSubscribe || tt.stored, fed: tt.onSubscribe, subID: tt.feedID}
			s.mu.Lock()
			if tt.group != "" { // as DeliverShared names the group
				s.shareIndex = map[string]uint32{"$share/other/x": 0, tt.group: 1}
				s.shareNames = []string{"$share/other/x", tt.group}
				o.shared, o.subID = true, 1
			}
			s.pending = append(s.pending, o) // as a feed or a restored session queues it
			s.mu.Unlock()
			got := decodeAll5(t, s.fill(nil, false))
			if !tt.wantSent {
				if len(got) != 0 {
					t.Fatalf("sent %d packets, want none", len(got))
				}
				return
			}
			if len(got) != 1 {
				t.Fatalf("sent %d packets, want 1", len(got))
			}
			p := got[0].(*packets.Publish)
			var ids []uint32
			if p.Properties != nil {
				ids = p.Properties.SubscriptionIdentifiers
			}
			if p.QoS != tt.wantQoS || p.Retain != tt.wantRetain || !slices.Equal(ids, tt.wantIDs) {
				t.Fatalf("sent QoS %d retain %v ids %v, want QoS %d retain %v ids %v", p.QoS, p.Retain, ids, tt.wantQoS, tt.wantRetain, tt.wantIDs)
			}
		})
	}
}

// [MQTT-3.3.1-9] [MQTT-3.3.1-10] [MQTT-3.3.1-11] which subscriptions get
// the retained messages of their filter when made.
func TestSendsRetained_RetainHandling_MQTT_3_3_1_10(t *testing.T) {
	for _, tt := range []struct {
		handling byte
		existed  bool
		want     bool
	}{{0, false, true}, {0, true, true}, {1, false, true}, {1, true, false}, {2, false, false}, {2, true, false}} {
		t.Run(fmt.Sprintf("handling %d existed %v", tt.handling, tt.existed), func(t *testing.T) {
			if got := sendsRetained(broker.SubOptions{RetainHandling: tt.handling}, tt.existed); got != tt.want {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}
}

// A client that uses no options keeps no options map: the writer's check
// for it costs one nil test per message.
func TestSetOptions_ZeroOptionsKeepNoMap(t *testing.T) {
	s := newTestSession5(t, 10, 10)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.setOptionsLocked("a", broker.SubOptions{})
	if s.subOpts != nil {
		t.Fatal("zero options made a map")
	}
	s.setOptionsLocked("a", broker.SubOptions{ID: 1})
	s.setOptionsLocked("a", broker.SubOptions{})
	if len(s.subOpts) != 0 {
		t.Fatalf("options left after a plain resubscribe: %v", s.subOpts)
	}
}

// [MQTT-3.3.4-3] a persistent session comes back with its options: the
// unacknowledged message re-sent with DUP=1 and the queued one carry the
// identifiers of the stored subscriptions, and No Local still holds.
func TestRestore_SubscriptionIdentifiersOnResentAndQueued_MQTT_3_3_4_3(t *testing.T) {
	s := newTestSession5(t, 10, 100)
	s.clientID = "me"
	own := message("t/own", 1)
	own.ClientID = "me"
	s.restore(&broker.StoredSession{
		Subscriptions: map[string]byte{"t/#": 1, "t/+": 1},
		Options:       map[string]broker.SubOptions{"t/#": {ID: 4, NoLocal: true}},
		Inflight:      []broker.Inflight{{PacketID: 7, Delivery: broker.Delivery{Message: message("t/unacked", 1), QoS: 1}}},
		Queued:        []broker.Delivery{{Message: own, QoS: 1}, {Message: message("t/queued", 1), QoS: 1}},
	})
	var got []string
	for _, p := range decodeAll5(t, s.fill(nil, false)) {
		pub := p.(*packets.Publish)
		var ids []uint32
		if pub.Properties != nil {
			ids = pub.Properties.SubscriptionIdentifiers
		}
		got = append(got, fmt.Sprintf("%s dup=%v ids=%v", pub.Topic, pub.Dup, ids))
	}
	want := []string{"t/unacked dup=true ids=[4]", "t/own dup=false ids=[]", "t/queued dup=false ids=[4]"}
	if !slices.Equal(got, want) {
		t.Fatalf("sent %v, want %v", got, want)
	}
}
