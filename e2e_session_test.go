package main

// End-to-end tests of persistent sessions (clean session = 0): stored
// subscriptions, offline queueing and its bound, redelivery of unacknowledged
// messages on reconnect (MQTT 3.1.1 sections 3.1.2.4, 4.1, 4.4).

import (
	"strconv"
	"testing"

	"github.com/bridgemq/server/internal/mqtttest"
	"github.com/bridgemq/server/packets"
)

// [MQTT-3.1.2-4] a persistent session keeps its subscriptions across
// connections, and [MQTT-3.1.2-5] QoS 1 and 2 messages published while the
// client is offline are delivered when it returns; QoS 0 ones may be dropped.
func TestSession_PersistentKeepsSubscriptionsAndQueues_MQTT_3_1_2_5(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		id := unique(t, "c")
		topic := unique(t, "t")
		col := newCollector()
		c, present := connectPaho(t, pahoOpts(d.sub(), id, false))
		if present {
			t.Fatal("session present on the first connection [MQTT-3.2.2-3]")
		}
		subscribe(t, c, topic, 2, col)
		c.Disconnect(100)

		pub, _ := connectPaho(t, pahoOpts(d.pub(), unique(t, "pub"), true))
		publish(t, pub, topic, 1, false, "q1")
		publish(t, pub, topic, 2, false, "q2")
		publish(t, pub, topic, 0, false, "q0")

		// No Subscribe call now: the session's subscription must deliver.
		back := newCollector()
		_, present = connectPaho(t, pahoOpts(d.sub(), id, false).SetDefaultPublishHandler(back.handler).SetOrderMatters(true))
		if !present {
			t.Fatal("session present = 0 on resuming a persistent session [MQTT-3.2.2-2]")
		}
		for _, want := range []struct {
			payload string
			qos     byte
		}{{"q1", 1}, {"q2", 2}} {
			m := back.next(t)
			if string(m.Payload()) != want.payload || m.Qos() != want.qos {
				t.Fatalf("got %q qos %d, want %q qos %d", m.Payload(), m.Qos(), want.payload, want.qos)
			}
		}
		publish(t, pub, topic, 1, false, "live")
		for {
			m := back.next(t)
			if string(m.Payload()) == "live" {
				break
			}
			if string(m.Payload()) != "q0" {
				t.Fatalf("unexpected %q", m.Payload())
			}
		}
	})
}

// The offline queue is bounded by -max-queued-messages: with a limit of 5,
// ten messages published while offline yield the newest five on reconnect.
func TestSession_OfflineQueueBounded_MaxQueuedMessages(t *testing.T) {
	const limit, sent = 5, 10
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		id := unique(t, "c")
		topic := unique(t, "t")
		fence := topic + "-fence"
		c := mqtttest.Dial(t, d.sub().Addr())
		c.MustConnect(&packets.Connect{ClientID: id, CleanSession: false, KeepAlive: 60})
		c.Subscribe(1, packets.Subscription{Filter: topic, QoS: 1}, packets.Subscription{Filter: fence, QoS: 1})
		c.Send(&packets.Disconnect{})
		c.ExpectClosed(waitTimeout)

		pub, _ := connectPaho(t, pahoOpts(d.pub(), unique(t, "pub"), true))
		for i := range sent {
			publish(t, pub, topic, 1, false, strconv.Itoa(i))
		}

		c = mqtttest.Dial(t, d.sub().Addr())
		if ack := c.MustConnect(&packets.Connect{ClientID: id, CleanSession: false, KeepAlive: 60}); !ack.SessionPresent {
			t.Fatal("session present = 0 [MQTT-3.2.2-2]")
		}
		var got []string
		read := func() bool {
			m := mqtttest.Expect[*packets.Publish](c)
			c.Send(&packets.Puback{PacketID: m.PacketID})
			if m.Topic == fence {
				return false
			}
			got = append(got, string(m.Payload))
			return true
		}
		for len(got) < limit && read() {
		}
		publish(t, pub, fence, 1, false, "fence")
		for read() {
		}
		if len(got) != limit {
			t.Fatalf("received %d queued messages %v, want -max-queued-messages=%d", len(got), got, limit)
		}
		for i, g := range got {
			// The oldest are dropped to make room: the newest five remain,
			// in order [MQTT-4.6.0-6].
			if want := strconv.Itoa(sent - limit + i); g != want {
				t.Fatalf("queued messages %v, want the newest %d in order", got, limit)
			}
		}
	}, "-max-queued-messages", strconv.Itoa(limit))
}

// [MQTT-4.4.0-1] on reconnect with a persistent session, an unacknowledged
// QoS 1 PUBLISH is re-sent with its original packet id and DUP=1
// [MQTT-3.3.1-1].
func TestSession_UnackedQoS1ResentWithDup_MQTT_4_4_0_1(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		id := unique(t, "c")
		topic := unique(t, "t")
		c := mqtttest.Dial(t, d.sub().Addr())
		c.MustConnect(&packets.Connect{ClientID: id, CleanSession: false, KeepAlive: 60})
		c.Subscribe(1, packets.Subscription{Filter: topic, QoS: 1})

		pub, _ := connectPaho(t, pahoOpts(d.pub(), unique(t, "pub"), true))
		publish(t, pub, topic, 1, false, "unacked")
		first := mqtttest.Expect[*packets.Publish](c)
		if first.Dup {
			t.Fatal("first delivery has DUP=1 [MQTT-3.3.1-3]")
		}
		_ = c.Conn.Close() // no PUBACK

		c = mqtttest.Dial(t, d.sub().Addr())
		if ack := c.MustConnect(&packets.Connect{ClientID: id, CleanSession: false, KeepAlive: 60}); !ack.SessionPresent {
			t.Fatal("session present = 0 [MQTT-3.2.2-2]")
		}
		again := mqtttest.Expect[*packets.Publish](c)
		if string(again.Payload) != "unacked" || !again.Dup || again.PacketID != first.PacketID || again.QoS != 1 {
			t.Fatalf("re-sent %+v, want payload %q, DUP=1, packet id %d, QoS 1", again, "unacked", first.PacketID)
		}
		c.Send(&packets.Puback{PacketID: again.PacketID})
		// Acknowledged now: a third connection gets nothing.
		c.Send(&packets.Disconnect{})
		c.ExpectClosed(waitTimeout)
		c = mqtttest.Dial(t, d.sub().Addr())
		c.MustConnect(&packets.Connect{ClientID: id, CleanSession: false, KeepAlive: 60})
		c.ExpectSilent(quietWindow)
	})
}

// [MQTT-4.4.0-1] for QoS 2, a PUBLISH never answered is re-sent with DUP=1,
// and once PUBREC was received the PUBREL (not the PUBLISH) is re-sent with
// the original packet id [MQTT-4.3.3-1].
func TestSession_UnackedQoS2ResentOnReconnect_MQTT_4_4_0_1(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		id := unique(t, "c")
		topic := unique(t, "t")
		connect := func() *mqtttest.Client {
			c := mqtttest.Dial(t, d.sub().Addr())
			if ack := c.MustConnect(&packets.Connect{ClientID: id, CleanSession: false, KeepAlive: 60}); !ack.SessionPresent {
				t.Fatal("session present = 0 [MQTT-3.2.2-2]")
			}
			return c
		}
		c := mqtttest.Dial(t, d.sub().Addr())
		c.MustConnect(&packets.Connect{ClientID: id, CleanSession: false, KeepAlive: 60})
		c.Subscribe(1, packets.Subscription{Filter: topic, QoS: 2})
		pub, _ := connectPaho(t, pahoOpts(d.pub(), unique(t, "pub"), true))
		publish(t, pub, topic, 2, false, "exactly once")

		first := mqtttest.Expect[*packets.Publish](c)
		_ = c.Conn.Close() // neither PUBREC nor anything else

		c = connect()
		again := mqtttest.Expect[*packets.Publish](c)
		if !again.Dup || again.PacketID != first.PacketID || string(again.Payload) != "exactly once" {
			t.Fatalf("re-sent %+v, want DUP=1 packet id %d", again, first.PacketID)
		}
		c.Send(&packets.Pubrec{PacketID: again.PacketID})
		if rel := mqtttest.Expect[*packets.Pubrel](c); rel.PacketID != first.PacketID {
			t.Fatalf("PUBREL id %d, want %d", rel.PacketID, first.PacketID)
		}
		_ = c.Conn.Close() // no PUBCOMP

		c = connect()
		rel := mqtttest.Expect[*packets.Pubrel](c)
		if rel.PacketID != first.PacketID {
			t.Fatalf("re-sent PUBREL id %d, want %d", rel.PacketID, first.PacketID)
		}
		c.Send(&packets.Pubcomp{PacketID: rel.PacketID})
		c.ExpectSilent(quietWindow)
	})
}

// [MQTT-3.1.2-6] a clean-session connection discards the stored session:
// its subscriptions no longer deliver.
func TestSession_CleanSessionDiscardsState_MQTT_3_1_2_6(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		id := unique(t, "c")
		topic := unique(t, "t")
		c := mqtttest.Dial(t, d.sub().Addr())
		c.MustConnect(&packets.Connect{ClientID: id, CleanSession: false, KeepAlive: 60})
		c.Subscribe(1, packets.Subscription{Filter: topic, QoS: 1})
		c.Send(&packets.Disconnect{})
		c.ExpectClosed(waitTimeout)

		c = mqtttest.Dial(t, d.sub().Addr())
		if ack := c.MustConnect(&packets.Connect{ClientID: id, CleanSession: true, KeepAlive: 60}); ack.SessionPresent {
			t.Fatal("session present = 1 with clean session [MQTT-3.2.2-1]")
		}
		pub, _ := connectPaho(t, pahoOpts(d.pub(), unique(t, "pub"), true))
		publish(t, pub, topic, 1, false, "nobody subscribed")
		c.ExpectSilent(quietWindow)
	})
}

// [MQTT-3.1.4-3] a takeover of a persistent session keeps it: the new
// connection resumes the subscriptions.
func TestSession_TakeoverResumesPersistentSession_MQTT_3_1_4_3(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		id := unique(t, "c")
		topic := unique(t, "t")
		first := mqtttest.Dial(t, d.pub().Addr())
		first.MustConnect(&packets.Connect{ClientID: id, CleanSession: false, KeepAlive: 60})
		first.Subscribe(1, packets.Subscription{Filter: topic, QoS: 1})

		second := mqtttest.Dial(t, d.sub().Addr())
		if ack := second.MustConnect(&packets.Connect{ClientID: id, CleanSession: false, KeepAlive: 60}); !ack.SessionPresent {
			t.Fatal("session present = 0 after takeover of a persistent session")
		}
		first.ExpectClosed(waitTimeout)
		pub, _ := connectPaho(t, pahoOpts(d.pub(), unique(t, "pub"), true))
		publish(t, pub, topic, 1, false, "to the new connection")
		if m := mqtttest.Expect[*packets.Publish](second); string(m.Payload) != "to the new connection" {
			t.Fatalf("got %q", m.Payload)
		}
	})
}
