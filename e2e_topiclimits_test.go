package main

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/bridgemq/server/internal/mqtttest"
	"github.com/bridgemq/server/packets"
)

// Tests of the limits of issue "Bounded under abuse": a client reaching
// one is refused the one thing that went past it, as the protocol allows,
// and nobody else notices.

// TestLimits_SubscriptionsPerClient_MQTT_3_9_3_1: filters past
// -max-subscriptions-per-client get 0x80 in their SUBACK slot
// [MQTT-3.8.4-1] [MQTT-3.9.3-1]; the others of the same packet are granted,
// and a filter already held replaces its subscription [MQTT-3.8.4-3]
// without counting twice.
func TestLimits_SubscriptionsPerClient_MQTT_3_9_3_1(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		c := mqtttest.Dial(t, d.sub().Addr())
		c.MustConnect(&packets.Connect{ClientID: unique(t, "lim"), CleanSession: true})
		sub := func(fs ...string) []packets.Subscription {
			var out []packets.Subscription
			for _, f := range fs {
				out = append(out, packets.Subscription{Filter: f, QoS: 1})
			}
			return out
		}
		if got := c.Subscribe(1, sub("a/1", "a/2")...); !slices.Equal(got, []packets.ReasonCode{packets.GrantedQoS1, packets.GrantedQoS1}) {
			t.Fatalf("first SUBACK %v, want [1 1]", got)
		}
		// a/1 is held (replaced, not counted), a/3 takes the third and last
		// place, a/4 and a/+ are over the limit, a/3 again counts once.
		got := c.Subscribe(2, sub("a/1", "a/3", "a/4", "a/3", "a/+")...)
		if want := []packets.ReasonCode{packets.GrantedQoS1, packets.GrantedQoS1, packets.SubackFailure, packets.GrantedQoS1, packets.SubackFailure}; !slices.Equal(got, want) {
			t.Fatalf("SUBACK %v, want %v", got, want)
		}
		// Unsubscribing frees a place.
		c.Send(&packets.Unsubscribe{PacketID: 3, Filters: []string{"a/2"}})
		mqtttest.Expect[*packets.Unsuback](c)
		if got := c.Subscribe(4, sub("a/4", "a/5")...); !slices.Equal(got, []packets.ReasonCode{packets.GrantedQoS1, packets.SubackFailure}) {
			t.Fatalf("after UNSUBSCRIBE: SUBACK %v, want [1 128]", got)
		}
		// The refused filters are not routed: a/5 is not delivered, a/4 is.
		p := mqtttest.Dial(t, d.pub().Addr())
		p.MustConnect(&packets.Connect{ClientID: unique(t, "limpub"), CleanSession: true})
		p.PublishQoS1(1, "a/5", "refused")
		p.PublishQoS1(2, "a/4", "fence")
		if got := c.PublishesUntil("fence"); len(got) != 0 {
			t.Fatalf("received %d messages on refused filters", len(got))
		}
	}, "-max-subscriptions-per-client", "3")
}

// TestLimits_TopicLengthAndLevels_Subscribe_MQTT_3_9_3_1: a filter longer
// or deeper than -max-topic-length / -max-topic-levels gets 0x80, the other
// filters of the packet are granted.
func TestLimits_TopicLengthAndLevels_Subscribe_MQTT_3_9_3_1(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		c := mqtttest.Dial(t, d.sub().Addr())
		c.MustConnect(&packets.Connect{ClientID: unique(t, "lim"), CleanSession: true})
		got := c.Subscribe(1,
			packets.Subscription{Filter: strings.Repeat("x", 33), QoS: 0}, // 33 bytes
			packets.Subscription{Filter: strings.Repeat("x", 32), QoS: 0}, // 32 bytes: allowed
			packets.Subscription{Filter: "a/b/c/d/e", QoS: 1},             // 5 levels
			packets.Subscription{Filter: "a/b/c/+", QoS: 1},               // 4 levels: allowed
			packets.Subscription{Filter: "a/b/c/d/#", QoS: 1},             // 5 levels
		)
		if want := []packets.ReasonCode{packets.SubackFailure, packets.GrantedQoS0, packets.SubackFailure, packets.GrantedQoS1, packets.SubackFailure}; !slices.Equal(got, want) {
			t.Fatalf("SUBACK %v, want %v", got, want)
		}
	}, "-max-topic-length", "32", "-max-topic-levels", "4")
}

// TestLimits_TopicLengthAndLevels_Publish: a PUBLISH whose topic is over
// the limits is refused: at QoS 0 it is dropped and the connection stays;
// at QoS 1 and 2 the connection is closed without PUBACK/PUBREC, since
// 3.1.1 has no negative acknowledgement [MQTT-4.3.2-2]. Nobody receives
// it.
func TestLimits_TopicLengthAndLevels_Publish(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		s := mqtttest.Dial(t, d.sub().Addr())
		s.MustConnect(&packets.Connect{ClientID: unique(t, "limsub"), CleanSession: true})
		if got := s.Subscribe(1, packets.Subscription{Filter: "#", QoS: 1}); got[0] != 1 {
			t.Fatalf("SUBACK %v", got)
		}
		long := strings.Repeat("y", 33)
		deep := "a/b/c/d/e"
		for _, topic := range []string{long, deep} {
			p := mqtttest.Dial(t, d.pub().Addr())
			p.MustConnect(&packets.Connect{ClientID: unique(t, "limpub"), CleanSession: true})
			p.Send(&packets.Publish{QoS: 0, Topic: topic, Payload: []byte("qos0")})
			p.PublishQoS1(1, "ok/1", "still connected") // QoS 0 refusal kept the connection
			for _, qos := range []byte{1, 2} {
				p := mqtttest.Dial(t, d.pub().Addr())
				p.MustConnect(&packets.Connect{ClientID: unique(t, "limpub"), CleanSession: true})
				p.Send(&packets.Publish{QoS: qos, PacketID: 7, Topic: topic, Payload: []byte("refused")})
				if _, got := p.ExpectClosed(waitTimeout); len(got) != 0 {
					t.Fatalf("QoS %d PUBLISH on %.20q: got %s before close, want nothing", qos, topic, mqtttest.Describe(got))
				}
			}
		}
		p := mqtttest.Dial(t, d.pub().Addr())
		p.MustConnect(&packets.Connect{ClientID: unique(t, "limpub"), CleanSession: true})
		p.PublishQoS1(1, "ok/2", "fence")
		got := s.PublishesUntil("fence")
		if len(got) != 2 || got[0].Topic != "ok/1" || got[1].Topic != "ok/1" {
			var topics []string
			for _, m := range got {
				topics = append(topics, fmt.Sprintf("%.20q", m.Topic))
			}
			t.Fatalf("subscriber received %v, want ok/1 twice", topics)
		}
	}, "-max-topic-length", "32", "-max-topic-levels", "4")
}

// TestLimits_WillTopic_RefusesConnect_MQTT_3_1_4_1: a CONNECT whose will
// topic is over the limits is refused: closed without CONNACK, as for an
// invalid will topic; a CONNECT within them is accepted.
func TestLimits_WillTopic_RefusesConnect_MQTT_3_1_4_1(t *testing.T) {
	ts := startServer(t, "-max-topic-length", "32", "-max-topic-levels", "4")
	for _, topic := range []string{strings.Repeat("w", 33), "w/x/y/z/v"} {
		c := mqtttest.Dial(t, ts.Addr())
		c.Send(&packets.Connect{ProtocolVersion: packets.Version311, ClientID: unique(t, "will"), CleanSession: true,
			Will: &packets.Will{Topic: topic, Payload: []byte("bye")}})
		if _, got := c.ExpectClosed(waitTimeout); len(got) != 0 {
			t.Fatalf("will topic %q: got %s, want the connection closed without CONNACK", topic, mqtttest.Describe(got))
		}
	}
	c := mqtttest.Dial(t, ts.Addr())
	c.MustConnect(&packets.Connect{ClientID: unique(t, "will"), CleanSession: true,
		Will: &packets.Will{Topic: "w/x/y/z", Payload: []byte("bye")}})
}

// TestLimits_WillTopic5_Connack0x90: a 5.0 CONNECT whose will topic is not
// a valid Topic Name (a wildcard, empty) [MQTT-3.1.3-10] or is over the
// limits gets CONNACK 0x90 Topic Name invalid with a Reason String
// (section 3.2.2.2), not a bare close.
func TestLimits_WillTopic5_Connack0x90(t *testing.T) {
	ts := startServer(t, "-max-topic-length", "32", "-max-topic-levels", "4")
	for _, topic := range []string{"a/#", "a/+/b", "", strings.Repeat("w", 33), "w/x/y/z/v"} {
		c := mqtttest.Dial(t, ts.Addr())
		ack := c.Connect(&packets.Connect{ProtocolVersion: packets.Version5, ClientID: unique(t, "will"), CleanSession: true,
			Will: &packets.Will{Topic: topic, Payload: []byte("bye")}})
		if ack.ReturnCode != packets.TopicNameInvalid || ack.Properties == nil || !strings.Contains(ack.Properties.ReasonString, "will topic") {
			t.Fatalf("will topic %q: CONNACK 0x%02x %+v, want 0x90 with a Reason String naming the will topic", topic, byte(ack.ReturnCode), ack.Properties)
		}
		c.ExpectClosed(waitTimeout)
	}
}
