package main

// End-to-end tests of PUBLISH and SUBSCRIBE: QoS flows, retained messages,
// overlapping subscriptions, $-topics, topic validation, ordering and packet
// identifiers (MQTT 3.1.1 sections 3.3, 3.8 to 3.11, 4.3 to 4.7).

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/bridgemq/server/internal/mqtttest"
	"github.com/bridgemq/server/packets"
	"github.com/bridgemq/server/packets/packetstest"
)

// [MQTT-3.8.4-6] [MQTT-3.3.5-1] a message is delivered at the minimum of
// its publication QoS and the granted subscription QoS, for each of the
// nine combinations.
func TestPublish_QoSDowngrade_MQTT_3_8_4_6(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		col := newCollector()
		sub, _ := connectPaho(t, pahoOpts(d.sub(), unique(t, "sub"), true).SetOrderMatters(true))
		pub, _ := connectPaho(t, pahoOpts(d.pub(), unique(t, "pub"), true))
		base := unique(t, "t")
		for subQoS := byte(0); subQoS <= 2; subQoS++ {
			topic := fmt.Sprintf("%s/sub%d", base, subQoS)
			if got := subscribe(t, sub, topic, subQoS, col); got != subQoS {
				t.Fatalf("granted QoS %d for requested %d [MQTT-3.9.3-1]", got, subQoS)
			}
			for pubQoS := byte(0); pubQoS <= 2; pubQoS++ {
				payload := fmt.Sprintf("pub%d-sub%d", pubQoS, subQoS)
				publish(t, pub, topic, pubQoS, false, payload)
				m := col.next(t)
				if string(m.Payload()) != payload {
					t.Fatalf("got %q, want %q", m.Payload(), payload)
				}
				if want := min(pubQoS, subQoS); m.Qos() != want {
					t.Errorf("%s: delivered at QoS %d, want %d", payload, m.Qos(), want)
				}
			}
		}
	})
}

// The server side of each QoS flow, seen raw: QoS 1 → PUBACK [MQTT-4.3.2-2],
// QoS 2 → PUBREC, PUBREL → PUBCOMP [MQTT-4.3.3-2]; and outbound, the server
// sends QoS 2 as PUBLISH, expects PUBREC, answers PUBREL [MQTT-4.3.3-1].
func TestPublish_QoSFlowsRaw_MQTT_4_3_3_2(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		topic := unique(t, "t")
		sub := mqtttest.Dial(t, d.sub().Addr())
		sub.MustConnect(&packets.Connect{ClientID: unique(t, "sub"), CleanSession: true, KeepAlive: 30})
		sub.Subscribe(1, packets.Subscription{Filter: topic, QoS: 2})
		pub := mqtttest.Dial(t, d.pub().Addr())
		pub.MustConnect(&packets.Connect{ClientID: unique(t, "pub"), CleanSession: true, KeepAlive: 30})

		pub.Send(&packets.Publish{Topic: topic, Payload: []byte("q0")})
		if m := mqtttest.Expect[*packets.Publish](sub); m.QoS != 0 || m.PacketID != 0 || string(m.Payload) != "q0" {
			t.Fatalf("QoS 0 delivery %+v", m)
		}

		pub.PublishQoS1(10, topic, "q1")
		m := mqtttest.Expect[*packets.Publish](sub)
		if m.QoS != 1 || m.PacketID == 0 || m.Dup || string(m.Payload) != "q1" {
			t.Fatalf("QoS 1 delivery %+v [MQTT-2.3.1-1]", m)
		}
		sub.Send(&packets.Puback{PacketID: m.PacketID})

		pub.Send(&packets.Publish{QoS: 2, PacketID: 11, Topic: topic, Payload: []byte("q2")})
		if rec := mqtttest.Expect[*packets.Pubrec](pub); rec.PacketID != 11 {
			t.Fatalf("PUBREC id %d, want 11", rec.PacketID)
		}
		pub.Send(&packets.Pubrel{PacketID: 11})
		if comp := mqtttest.Expect[*packets.Pubcomp](pub); comp.PacketID != 11 {
			t.Fatalf("PUBCOMP id %d, want 11", comp.PacketID)
		}
		m = mqtttest.Expect[*packets.Publish](sub)
		if m.QoS != 2 || m.PacketID == 0 || string(m.Payload) != "q2" {
			t.Fatalf("QoS 2 delivery %+v", m)
		}
		sub.Send(&packets.Pubrec{PacketID: m.PacketID})
		if rel := mqtttest.Expect[*packets.Pubrel](sub); rel.PacketID != m.PacketID {
			t.Fatalf("PUBREL id %d, want %d", rel.PacketID, m.PacketID)
		}
		sub.Send(&packets.Pubcomp{PacketID: m.PacketID})
		sub.Send(&packets.Pingreq{})
		mqtttest.Expect[*packets.Pingresp](sub)
	})
}

// [MQTT-4.3.3-2] a QoS 2 PUBLISH re-sent with the same packet id (DUP=1)
// before PUBREL is delivered once.
func TestPublish_QoS2ExactlyOnceInbound_MQTT_4_3_3_2(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		topic := unique(t, "t")
		col := newCollector()
		sub, _ := connectPaho(t, pahoOpts(d.sub(), unique(t, "sub"), true).SetOrderMatters(true))
		subscribe(t, sub, topic, 2, col)

		pub := mqtttest.Dial(t, d.pub().Addr())
		pub.MustConnect(&packets.Connect{ClientID: unique(t, "pub"), CleanSession: true, KeepAlive: 30})
		for i, dup := range []bool{false, true, true} {
			pub.Send(&packets.Publish{QoS: 2, Dup: dup, PacketID: 42, Topic: topic, Payload: []byte("once")})
			if rec := mqtttest.Expect[*packets.Pubrec](pub); rec.PacketID != 42 {
				t.Fatalf("send %d: PUBREC id %d, want 42", i, rec.PacketID)
			}
		}
		pub.Send(&packets.Pubrel{PacketID: 42})
		mqtttest.Expect[*packets.Pubcomp](pub)
		// The id is free again: a new message with it is a new message.
		pub.Send(&packets.Publish{QoS: 2, PacketID: 42, Topic: topic, Payload: []byte("fence")})
		mqtttest.Expect[*packets.Pubrec](pub)
		pub.Send(&packets.Pubrel{PacketID: 42})
		mqtttest.Expect[*packets.Pubcomp](pub)

		var got []string
		for {
			m := col.next(t)
			got = append(got, string(m.Payload()))
			if string(m.Payload()) == "fence" {
				break
			}
		}
		if len(got) != 2 || got[0] != "once" {
			t.Fatalf("subscriber got %q, want [once fence]", got)
		}
		col.quiet(t)
	})
}

// [MQTT-3.3.1-5] [MQTT-3.3.1-6] a retained message is delivered to a new
// subscription with RETAIN=1 [MQTT-3.3.1-8]; live deliveries carry RETAIN=0
// [MQTT-3.3.1-9]; [MQTT-3.3.1-7] a new retained message replaces the old;
// [MQTT-3.3.1-10] [MQTT-3.3.1-11] an empty retained payload clears it and is
// itself delivered to live subscribers but not stored.
func TestPublish_Retained_MQTT_3_3_1_6(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		base := unique(t, "t")
		topic := base + "/r"
		pub, _ := connectPaho(t, pahoOpts(d.pub(), unique(t, "pub"), true))
		publish(t, pub, topic, 1, true, "first")
		publish(t, pub, topic, 1, true, "second")

		col := newCollector()
		sub, _ := connectPaho(t, pahoOpts(d.sub(), unique(t, "sub"), true).SetOrderMatters(true))
		subscribe(t, sub, base+"/+", 1, col)
		m := col.next(t)
		if string(m.Payload()) != "second" || !m.Retained() {
			t.Fatalf("on subscribe got %q retained=%v, want %q retained=true", m.Payload(), m.Retained(), "second")
		}

		publish(t, pub, topic, 1, true, "live")
		m = col.next(t)
		if string(m.Payload()) != "live" || m.Retained() {
			t.Fatalf("live delivery %q retained=%v, want retained=false [MQTT-3.3.1-9]", m.Payload(), m.Retained())
		}

		publish(t, pub, topic, 1, true, "")
		m = col.next(t)
		if len(m.Payload()) != 0 || m.Retained() {
			t.Fatalf("clearing publish delivered as %q retained=%v, want empty, retained=false", m.Payload(), m.Retained())
		}

		// A fresh subscriber gets the fence's retained message and nothing
		// for the cleared topic.
		fence := base + "/fence"
		publish(t, pub, fence, 1, true, "fence")
		late := newCollector()
		sub2, _ := connectPaho(t, pahoOpts(d.sub(), unique(t, "late"), true))
		subscribe(t, sub2, base+"/#", 1, late)
		if got := late.until(t, fence); len(got) != 0 {
			t.Fatalf("cleared topic still delivered %q", got[0].Payload())
		}
		late.quiet(t)
	})
}

// [MQTT-3.3.1-12] a RETAIN=0 publish neither stores nor replaces the
// retained message.
func TestPublish_NonRetainedDoesNotReplaceRetained_MQTT_3_3_1_12(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		topic := unique(t, "t")
		pub, _ := connectPaho(t, pahoOpts(d.pub(), unique(t, "pub"), true))
		publish(t, pub, topic, 1, true, "kept")
		publish(t, pub, topic, 1, false, "transient")
		col := newCollector()
		sub, _ := connectPaho(t, pahoOpts(d.sub(), unique(t, "sub"), true))
		subscribe(t, sub, topic, 1, col)
		if m := col.next(t); string(m.Payload()) != "kept" || !m.Retained() {
			t.Fatalf("got %q retained=%v, want %q", m.Payload(), m.Retained(), "kept")
		}
		col.quiet(t)
	})
}

// Retained messages for a wildcard subscription: every match, once each.
func TestPublish_RetainedWildcard_MQTT_3_3_1_6(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		base := unique(t, "t")
		pub, _ := connectPaho(t, pahoOpts(d.pub(), unique(t, "pub"), true))
		want := map[string]bool{}
		for _, sfx := range []string{"a", "b", "a/x", "b/y/z"} {
			publish(t, pub, base+"/"+sfx, 1, true, sfx)
			want[base+"/"+sfx] = true
		}
		publish(t, pub, base+"-other", 1, true, "not matched")
		col := newCollector()
		sub, _ := connectPaho(t, pahoOpts(d.sub(), unique(t, "sub"), true))
		subscribe(t, sub, base+"/#", 1, col)
		for range len(want) {
			m := col.next(t)
			if !want[m.Topic()] || !m.Retained() {
				t.Fatalf("unexpected %q retained=%v", m.Topic(), m.Retained())
			}
			delete(want, m.Topic())
		}
		col.quiet(t)
	})
}

// [MQTT-3.3.5-1] overlapping subscriptions deliver one copy, at the highest
// granted QoS.
func TestSubscribe_OverlappingOneCopyHighestQoS_MQTT_3_3_5_1(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		base := unique(t, "t")
		sub := mqtttest.Dial(t, d.sub().Addr())
		sub.MustConnect(&packets.Connect{ClientID: unique(t, "sub"), CleanSession: true, KeepAlive: 30})
		codes := sub.Subscribe(1,
			packets.Subscription{Filter: base + "/#", QoS: 2},
			packets.Subscription{Filter: base + "/+", QoS: 1},
			packets.Subscription{Filter: base + "/x", QoS: 0})
		if fmt.Sprint(codes) != "[2 1 0]" {
			t.Fatalf("SUBACK %v, want [2 1 0]", codes)
		}
		pub, _ := connectPaho(t, pahoOpts(d.pub(), unique(t, "pub"), true))
		publish(t, pub, base+"/x", 2, false, "one")
		publish(t, pub, base+"/x", 0, false, "fence")

		got := sub.PublishesUntil("fence")
		if len(got) != 1 || got[0].QoS != 2 {
			t.Fatalf("got %d copies (%s), want one at QoS 2", len(got), mqtttest.Describe(toPackets(got)))
		}
	})
}

func toPackets(ps []*packets.Publish) []packets.Packet {
	out := make([]packets.Packet, len(ps))
	for i, p := range ps {
		out[i] = p
	}
	return out
}

// [MQTT-4.7.2-1] topics beginning with $ are not matched by filters starting
// with a wildcard, but are matched by a filter naming the $ level.
func TestSubscribe_WildcardDoesNotMatchDollarTopics_MQTT_4_7_2_1(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		level := unique(t, "t")
		dollar := "$" + level + "/x"
		fence := level + "/x"

		wild := newCollector()
		sub, _ := connectPaho(t, pahoOpts(d.sub(), unique(t, "wild"), true).SetOrderMatters(true).SetDefaultPublishHandler(wild.handler))
		for _, f := range []string{"#", "+/x", "+/+", "+/#"} {
			subscribe(t, sub, f, 1, wild)
		}
		explicit := newCollector()
		sub2, _ := connectPaho(t, pahoOpts(d.sub(), unique(t, "explicit"), true))
		subscribe(t, sub2, "$"+level+"/#", 1, explicit)

		pub, _ := connectPaho(t, pahoOpts(d.pub(), unique(t, "pub"), true))
		publish(t, pub, dollar, 1, false, "dollar")
		publish(t, pub, fence, 1, false, "fence")

		if m := explicit.next(t); m.Topic() != dollar {
			t.Fatalf("explicit $ filter got %q, want %q", m.Topic(), dollar)
		}
		for _, m := range wild.until(t, fence) {
			if m.Topic() == dollar {
				t.Fatalf("a leading-wildcard filter matched %q", dollar)
			}
		}
	})
}

// [MQTT-3.3.2-2] a PUBLISH topic name with a wildcard, and [MQTT-4.7.3-1] an
// empty one, closes the connection.
func TestPublish_InvalidTopicName_Closed_MQTT_3_3_2_2(t *testing.T) {
	tests := []struct{ name, topic string }{
		{"plus", "a/+"},
		{"hash", "a/#"},
		{"bare hash", "#"},
		{"plus inside a level", "a/b+"},
		{"empty [MQTT-4.7.3-1]", ""},
	}
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				c := mqtttest.Dial(t, d.pub().Addr())
				c.MustConnect(&packets.Connect{ClientID: unique(t, "c"), CleanSession: true, KeepAlive: 30})
				// QoS 1, packet id 1, payload "x"
				c.Write(packetstest.Packet(0x32, packetstest.Str(tt.topic), 0, 1, "x"))
				_, got := c.ExpectClosed(waitTimeout)
				for _, p := range got {
					if _, ok := p.(*packets.Puback); ok {
						t.Fatalf("PUBLISH to %q acknowledged", tt.topic)
					}
				}
			})
		}
	})
}

// [MQTT-4.7.1-2] '#' must be last and alone in its level, [MQTT-4.7.1-3]
// '+' alone in its level; [MQTT-4.7.3-1] a filter is not empty. An invalid
// filter gets 0x80 in the SUBACK while the valid ones beside it are granted.
func TestSubscribe_InvalidFilter_Suback0x80_MQTT_4_7_1_2(t *testing.T) {
	tests := []struct{ name, filter string }{
		{"hash not last", "a/#/b"},
		{"hash inside a level", "a/b#"},
		{"plus inside a level [MQTT-4.7.1-3]", "a/b+/c"},
		{"plus prefix [MQTT-4.7.1-3]", "+a"},
	}
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				c := mqtttest.Dial(t, d.sub().Addr())
				c.MustConnect(&packets.Connect{ClientID: unique(t, "c"), CleanSession: true, KeepAlive: 30})
				valid := unique(t, "t")
				// Packet id 7, both filters at QoS 1.
				c.Write(packetstest.Packet(0x82, 0, 7, packetstest.Str(valid), 1, packetstest.Str(tt.filter), 1))
				ack := mqtttest.Expect[*packets.Suback](c)
				if ack.PacketID != 7 || len(ack.ReturnCodes) != 2 {
					t.Fatalf("SUBACK %+v, want id 7 with 2 codes [MQTT-3.8.4-5]", ack)
				}
				if ack.ReturnCodes[0] != 1 || ack.ReturnCodes[1] != packets.SubackFailure {
					t.Fatalf("SUBACK codes %v, want [1 128]", ack.ReturnCodes)
				}
				c.Send(&packets.Pingreq{})
				mqtttest.Expect[*packets.Pingresp](c)
			})
		}
	})
}

// [MQTT-4.7.3-1] an empty filter is never granted: the server answers 0x80
// or, treating the SUBSCRIBE as malformed, closes the connection.
func TestSubscribe_EmptyFilter_RefusedOrClosed_MQTT_4_7_3_1(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		c := mqtttest.Dial(t, d.sub().Addr())
		c.MustConnect(&packets.Connect{ClientID: unique(t, "c"), CleanSession: true, KeepAlive: 30})
		c.Write(packetstest.Named("subscribe_empty_filter_MQTT_4_7_3_1").Raw)
		p, err := c.Read(waitTimeout)
		if err != nil {
			c.ExpectClosed(waitTimeout)
			return
		}
		ack, ok := p.(*packets.Suback)
		if !ok || len(ack.ReturnCodes) != 1 || ack.ReturnCodes[0] != packets.SubackFailure {
			t.Fatalf("got %T %+v, want SUBACK [128] or a closed connection", p, p)
		}
	})
}

// [MQTT-3.10.4-4] [MQTT-3.10.4-5] UNSUBACK answers every UNSUBSCRIBE, also
// for a filter never subscribed; [MQTT-3.10.4-1] after it, messages on the
// filter stop.
func TestUnsubscribe_UnsubackAlways_MQTT_3_10_4_5(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		base := unique(t, "t")
		c := mqtttest.Dial(t, d.sub().Addr())
		c.MustConnect(&packets.Connect{ClientID: unique(t, "c"), CleanSession: true, KeepAlive: 30})

		c.Send(&packets.Unsubscribe{PacketID: 3, Filters: []string{base + "/never"}})
		if ack := mqtttest.Expect[*packets.Unsuback](c); ack.PacketID != 3 {
			t.Fatalf("UNSUBACK id %d, want 3 [MQTT-3.10.4-4]", ack.PacketID)
		}

		c.Subscribe(4, packets.Subscription{Filter: base + "/a", QoS: 0}, packets.Subscription{Filter: base + "/b", QoS: 0})
		c.Send(&packets.Unsubscribe{PacketID: 5, Filters: []string{base + "/a", base + "/never"}})
		if ack := mqtttest.Expect[*packets.Unsuback](c); ack.PacketID != 5 {
			t.Fatalf("UNSUBACK id %d, want 5", ack.PacketID)
		}
		pub, _ := connectPaho(t, pahoOpts(d.pub(), unique(t, "pub"), true))
		publish(t, pub, base+"/a", 0, false, "unsubscribed")
		publish(t, pub, base+"/b", 0, false, "still subscribed")
		if m := mqtttest.Expect[*packets.Publish](c); string(m.Payload) != "still subscribed" {
			t.Fatalf("got %q on %q after UNSUBSCRIBE", m.Payload, m.Topic)
		}
		c.ExpectSilent(quietWindow)
	})
}

// [MQTT-4.6.0-6] messages on one topic arrive in the order they were
// published: 1000 QoS 1 messages.
func TestPublish_PerTopicOrdering_MQTT_4_6_0_6(t *testing.T) {
	const n = 1000
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		topic := unique(t, "t")
		col := newCollector()
		sub, _ := connectPaho(t, pahoOpts(d.sub(), unique(t, "sub"), true).SetOrderMatters(true))
		subscribe(t, sub, topic, 1, col)
		pub, _ := connectPaho(t, pahoOpts(d.pub(), unique(t, "pub"), true).SetOrderMatters(true))
		toks := make([]mqtt.Token, n)
		for i := range n {
			toks[i] = pub.Publish(topic, 1, false, strconv.Itoa(i))
		}
		for i, tok := range toks {
			if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
				t.Fatalf("publish %d: %v", i, tok.Error())
			}
		}
		for i := range n {
			m := col.next(t)
			if got := string(m.Payload()); got != strconv.Itoa(i) {
				t.Fatalf("message %d has payload %q: out of order", i, got)
			}
		}
	})
}

// [MQTT-2.3.1-1] packet ids are never 0; [MQTT-2.3.1-2] not reused while in
// flight; and no more than -max-inflight QoS 1 messages are outstanding.
func TestPublish_PacketIDsDistinctAndInflightBounded_MQTT_2_3_1_2(t *testing.T) {
	const maxInflight = 5
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		topic := unique(t, "t")
		sub := mqtttest.Dial(t, d.sub().Addr())
		sub.MustConnect(&packets.Connect{ClientID: unique(t, "sub"), CleanSession: true, KeepAlive: 60})
		sub.Subscribe(1, packets.Subscription{Filter: topic, QoS: 1})

		pub, _ := connectPaho(t, pahoOpts(d.pub(), unique(t, "pub"), true))
		for i := range 3 * maxInflight {
			publish(t, pub, topic, 1, false, strconv.Itoa(i))
		}

		inflight := map[uint16]string{}
		readOutstanding := func() {
			for {
				p, err := sub.Read(quietWindow)
				if err != nil {
					return
				}
				m, ok := p.(*packets.Publish)
				if !ok {
					t.Fatalf("got %T, want PUBLISH", p)
				}
				if m.PacketID == 0 {
					t.Fatalf("packet id 0 [MQTT-2.3.1-1]")
				}
				if prev, dup := inflight[m.PacketID]; dup {
					t.Fatalf("packet id %d reused for %q while %q is unacknowledged [MQTT-2.3.1-2]", m.PacketID, m.Payload, prev)
				}
				inflight[m.PacketID] = string(m.Payload)
			}
		}
		readOutstanding()
		if len(inflight) != maxInflight {
			t.Fatalf("%d messages outstanding, want -max-inflight=%d", len(inflight), maxInflight)
		}
		// Acknowledge the lowest-numbered message: exactly one more comes.
		next := 0
		for next < 3*maxInflight {
			var ackID uint16
			for id, p := range inflight {
				if p == strconv.Itoa(next) {
					ackID = id
				}
			}
			if ackID == 0 {
				t.Fatalf("message %d not among the outstanding %v", next, inflight)
			}
			sub.Send(&packets.Puback{PacketID: ackID})
			delete(inflight, ackID)
			next++
			readOutstanding()
			if want := min(maxInflight, 3*maxInflight-next); len(inflight) != want {
				t.Fatalf("after %d acks: %d outstanding, want %d", next, len(inflight), want)
			}
		}
	}, "-max-inflight", strconv.Itoa(maxInflight))
}
