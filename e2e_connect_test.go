package main

// End-to-end tests of CONNECT / CONNACK handling, client identifiers,
// session takeover and keep-alive (MQTT 3.1.1 sections 3.1, 3.2, 4.8).

import (
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/bridgemq/server/internal/mqtttest"
	"github.com/bridgemq/server/packets"
	"github.com/bridgemq/server/packets/packetstest"
)

// [MQTT-3.1.2-2] an unsupported protocol level gets CONNACK 0x01 and the
// connection is closed; [MQTT-3.1.2-1] so does a protocol name that is not
// the one of the announced level. Level 5 is served (e2e_v5_test.go).
func TestConnect_UnsupportedProtocol_Connack0x01_MQTT_3_1_2_2(t *testing.T) {
	tests := []struct {
		name  string
		proto string
		level byte
	}{
		{"level 2", "MQTT", 2},
		{"level 0", "MQTT", 0},
		{"level 255", "MQTT", 255},
		{"MQIsdp with level 4", "MQIsdp", 4},
		{"MQTT with level 3", "MQTT", 3},
		{"unknown name", "MQTX", 4},
	}
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				c := mqtttest.Dial(t, d.pub().Addr())
				c.Write(packetstest.Packet(0x10, packetstest.ConnectHead(tt.proto, tt.level, 0x02), packetstest.Str(unique(t, "c"))))
				_, got := c.ExpectClosed(waitTimeout)
				if len(got) != 1 {
					t.Fatalf("got %d packets before close (%s), want one CONNACK 0x01", len(got), mqtttest.Describe(got))
				}
				ack, ok := got[0].(*packets.Connack)
				if !ok || ack.ReturnCode != packets.RefusedProtocolVersion {
					t.Fatalf("got %s, want CONNACK 0x01", mqtttest.Describe(got))
				}
			})
		}
	})
}

// [MQTT-3.1.2-3] the server disconnects a client whose CONNECT has the
// reserved flag set, without CONNACK.
func TestConnect_ReservedFlagSet_Closed_MQTT_3_1_2_3(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		c := mqtttest.Dial(t, d.pub().Addr())
		c.Write(packetstest.Packet(0x10, packetstest.ConnectHead("MQTT", 4, 0x03), packetstest.Str(unique(t, "c"))))
		if _, got := c.ExpectClosed(waitTimeout); len(got) != 0 {
			t.Fatalf("got %s before close, want nothing", mqtttest.Describe(got))
		}
	})
}

// [MQTT-3.1.2-11] [MQTT-3.1.2-13] [MQTT-3.1.2-15] [MQTT-3.1.2-22] malformed
// flag combinations in CONNECT close the connection.
func TestConnect_InvalidFlagCombination_Closed_MQTT_3_1_2_11(t *testing.T) {
	tests := []struct {
		name  string
		flags byte
	}{
		{"will QoS without will flag [MQTT-3.1.2-13]", 0x02 | 0x08},
		{"will retain without will flag [MQTT-3.1.2-15]", 0x02 | 0x20},
		{"will QoS 3 [MQTT-3.1.2-14]", 0x02 | 0x04 | 0x18},
		{"password without username [MQTT-3.1.2-22]", 0x02 | 0x40},
	}
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				c := mqtttest.Dial(t, d.pub().Addr())
				c.Write(packetstest.Packet(0x10, packetstest.ConnectHead("MQTT", 4, tt.flags), packetstest.Str(unique(t, "c"))))
				_, got := c.ExpectClosed(waitTimeout)
				for _, p := range got {
					if ack, ok := p.(*packets.Connack); ok && ack.ReturnCode == packets.Accepted {
						t.Fatalf("CONNECT with flags 0x%02x accepted", tt.flags)
					}
				}
			})
		}
	})
}

// [MQTT-3.1.0-1] a first packet other than CONNECT closes the connection,
// without any answer.
func TestConnect_FirstPacketNotConnect_Closed_MQTT_3_1_0_1(t *testing.T) {
	tests := []struct {
		name string
		p    packets.Packet
	}{
		{"PINGREQ", &packets.Pingreq{}},
		{"PUBLISH", &packets.Publish{Topic: "a/b", Payload: []byte("x")}},
		{"SUBSCRIBE", &packets.Subscribe{PacketID: 1, Subscriptions: []packets.Subscription{{Filter: "#"}}}},
		{"DISCONNECT", &packets.Disconnect{}},
	}
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				c := mqtttest.Dial(t, d.pub().Addr())
				c.Send(tt.p)
				if _, got := c.ExpectClosed(waitTimeout); len(got) != 0 {
					t.Fatalf("got %s before close, want nothing", mqtttest.Describe(got))
				}
			})
		}
	})
}

// [MQTT-3.1.0-2] a second CONNECT is a protocol violation: the server closes
// the connection.
func TestConnect_SecondConnect_Closed_MQTT_3_1_0_2(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		c := mqtttest.Dial(t, d.pub().Addr())
		id := unique(t, "c")
		c.MustConnect(&packets.Connect{ClientID: id, CleanSession: true, KeepAlive: 30})
		c.Send(&packets.Connect{ProtocolVersion: 4, ClientID: id, CleanSession: true, KeepAlive: 30})
		if _, got := c.ExpectClosed(waitTimeout); len(got) != 0 {
			t.Fatalf("got %s after second CONNECT, want close", mqtttest.Describe(got))
		}
	})
}

// [MQTT-3.2.0-1] the first packet from the server is CONNACK; a 3.1 client
// ("MQIsdp", level 3) is accepted like a 3.1.1 one.
func TestConnect_MQTT31AndMQTT311Accepted_MQTT_3_2_0_1(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		for _, level := range []packets.Version{packets.Version31, packets.Version311} {
			c := mqtttest.Dial(t, d.pub().Addr())
			ack := c.Connect(&packets.Connect{ProtocolVersion: level, ClientID: unique(t, "c"), CleanSession: true, KeepAlive: 30})
			if ack.ReturnCode != packets.Accepted || ack.SessionPresent {
				t.Errorf("level %d: CONNACK %+v, want accepted, no session", level, ack)
			}
			c.Send(&packets.Pingreq{})
			mqtttest.Expect[*packets.Pingresp](c) // [MQTT-3.12.4-1]
		}
	})
}

// A Paho 3.1 client (protocol version 3) round-trips a message through a
// 3.1.1 subscriber.
func TestConnect_Paho31Client_RoundTrip(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		topic := unique(t, "t")
		col := newCollector()
		sub, _ := connectPaho(t, pahoOpts(d.sub(), unique(t, "sub"), true))
		subscribe(t, sub, topic, 1, col)
		pub, _ := connectPaho(t, pahoOpts(d.pub(), unique(t, "pub"), true).SetProtocolVersion(3))
		publish(t, pub, topic, 1, false, "from 3.1")
		if m := col.next(t); string(m.Payload()) != "from 3.1" {
			t.Fatalf("payload %q", m.Payload())
		}
	})
}

// [MQTT-3.1.3-6] an empty client id with clean session is accepted and the
// server assigns an id; [MQTT-3.1.3-8] with a persistent session it is
// refused with CONNACK 0x02 and the connection closed.
func TestConnect_EmptyClientID_MQTT_3_1_3_6(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		t.Run("clean session gets an assigned id", func(t *testing.T) {
			a := mqtttest.Dial(t, d.pub().Addr())
			a.MustConnect(&packets.Connect{CleanSession: true, KeepAlive: 30})
			b := mqtttest.Dial(t, d.pub().Addr())
			b.MustConnect(&packets.Connect{CleanSession: true, KeepAlive: 30})
			// Two empty-id clients are two sessions: neither takes over the other.
			topic := unique(t, "t")
			if codes := a.Subscribe(1, packets.Subscription{Filter: topic, QoS: 1}); codes[0] != 1 {
				t.Fatalf("SUBACK %v", codes)
			}
			b.PublishQoS1(1, topic, "hi")
			m := mqtttest.Expect[*packets.Publish](a)
			if string(m.Payload) != "hi" {
				t.Fatalf("payload %q", m.Payload)
			}
		})
		t.Run("persistent session refused 0x02", func(t *testing.T) {
			c := mqtttest.Dial(t, d.pub().Addr())
			c.Send(&packets.Connect{ProtocolVersion: 4, CleanSession: false, KeepAlive: 30})
			_, got := c.ExpectClosed(waitTimeout)
			if len(got) != 1 {
				t.Fatalf("got %s, want CONNACK 0x02 then close", mqtttest.Describe(got))
			}
			if ack, ok := got[0].(*packets.Connack); !ok || ack.ReturnCode != packets.RefusedIdentifierRejected {
				t.Fatalf("got %s, want CONNACK 0x02", mqtttest.Describe(got))
			}
		})
	})
}

// TestConnect_EmptyClientIDPersistent_Refused0x02_MQTT_3_1_3_8 checks the
// refusal through Paho, as any client library sees it.
func TestConnect_EmptyClientIDPersistent_Refused0x02_MQTT_3_1_3_8(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		c := mqtt.NewClient(pahoOpts(d.pub(), "", false))
		tok := c.Connect()
		if !tok.WaitTimeout(waitTimeout) {
			t.Fatal("no CONNACK")
		}
		if got := tok.(*mqtt.ConnectToken).ReturnCode(); packets.ReasonCode(got) != packets.RefusedIdentifierRejected {
			t.Fatalf("CONNACK return code 0x%02x, want 0x02 (err %v)", got, tok.Error())
		}
	})
}

// [MQTT-3.2.2-1] clean session → session present 0; [MQTT-3.2.2-3] no
// stored session → 0; [MQTT-3.2.2-2] a stored session → 1; [MQTT-3.1.2-6]
// a clean-session connect discards the stored session.
func TestConnect_SessionPresent_MQTT_3_2_2_2(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		id := unique(t, "c")
		steps := []struct {
			clean bool
			want  bool
		}{
			{clean: false, want: false}, // nothing stored yet [MQTT-3.2.2-3]
			{clean: false, want: true},  // resumed [MQTT-3.2.2-2]
			{clean: true, want: false},  // clean [MQTT-3.2.2-1], discards it [MQTT-3.1.2-6]
			{clean: false, want: false}, // the clean connect left nothing [MQTT-3.1.2-6]
			{clean: false, want: true},
		}
		for i, st := range steps {
			c := mqtttest.Dial(t, d.sub().Addr())
			ack := c.MustConnect(&packets.Connect{ClientID: id, CleanSession: st.clean, KeepAlive: 30})
			if ack.SessionPresent != st.want {
				t.Fatalf("step %d (clean=%v): session present %v, want %v", i, st.clean, ack.SessionPresent, st.want)
			}
			c.Send(&packets.Disconnect{})
			c.ExpectClosed(waitTimeout)
		}
	})
}

// [MQTT-3.1.4-2] a second connection with the same client id closes the
// first one.
func TestConnect_Takeover_ClosesFirst_MQTT_3_1_4_2(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		id := unique(t, "c")
		first := mqtttest.Dial(t, d.pub().Addr())
		first.MustConnect(&packets.Connect{ClientID: id, CleanSession: true, KeepAlive: 30})
		second := mqtttest.Dial(t, d.sub().Addr())
		second.MustConnect(&packets.Connect{ClientID: id, CleanSession: true, KeepAlive: 30})
		first.ExpectClosed(waitTimeout)
		second.Send(&packets.Pingreq{})
		mqtttest.Expect[*packets.Pingresp](second)
	})
}

// Takeover as Paho sees it: the first client's connection-lost handler runs
// and the second keeps receiving.
func TestConnect_TakeoverPaho_MQTT_3_1_4_2(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		id := unique(t, "c")
		lost := make(chan error, 1)
		connectPaho(t, pahoOpts(d.pub(), id, true).SetConnectionLostHandler(func(_ mqtt.Client, err error) { lost <- err }))
		col := newCollector()
		second, _ := connectPaho(t, pahoOpts(d.sub(), id, true))
		select {
		case <-lost:
		case <-time.After(waitTimeout):
			t.Fatal("first client still connected after takeover")
		}
		topic := unique(t, "t")
		subscribe(t, second, topic, 1, col)
		publish(t, second, topic, 1, false, "still here")
		col.next(t)
	})
}

// [MQTT-3.1.2-24] a client silent for one and a half keep-alive periods is
// disconnected, and [MQTT-3.1.2-8] its will is published.
func TestConnect_KeepAliveExpiry_ClosedAndWillPublished_MQTT_3_1_2_24(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		willTopic := unique(t, "will")
		col := newCollector()
		sub, _ := connectPaho(t, pahoOpts(d.sub(), unique(t, "sub"), true))
		subscribe(t, sub, willTopic, 1, col)

		c := mqtttest.Dial(t, d.pub().Addr())
		c.MustConnect(&packets.Connect{
			ClientID: unique(t, "silent"), CleanSession: true, KeepAlive: 1,
			Will: &packets.Will{Topic: willTopic, Payload: []byte("gone silent"), QoS: 1},
		})
		took, got := c.ExpectClosed(4 * time.Second)
		if len(got) != 0 {
			t.Errorf("got %s before close", mqtttest.Describe(got))
		}
		if took < time.Second {
			t.Errorf("closed after %s, before the keep-alive of 1s ran out", took)
		}
		if took > 2500*time.Millisecond {
			t.Errorf("closed after %s, want about 1.5s", took)
		}
		m := col.next(t)
		if string(m.Payload()) != "gone silent" {
			t.Fatalf("will payload %q", m.Payload())
		}
	})
}

// [MQTT-3.1.2-23] a client that keeps sending PINGREQ inside the keep-alive
// stays connected well past 1.5 × keep-alive.
func TestConnect_KeepAlivePing_StaysOpen_MQTT_3_1_2_23(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		c := mqtttest.Dial(t, d.pub().Addr())
		c.MustConnect(&packets.Connect{ClientID: unique(t, "c"), CleanSession: true, KeepAlive: 1})
		for range 6 {
			time.Sleep(500 * time.Millisecond) // the client's own ping interval, not a wait for the server
			c.Send(&packets.Pingreq{})
			mqtttest.Expect[*packets.Pingresp](c)
		}
	})
}

// [MQTT-3.1.2-8] the will is published when the network connection closes
// without DISCONNECT; [MQTT-3.1.2-10] DISCONNECT discards it.
func TestConnect_Will_MQTT_3_1_2_8(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		base := unique(t, "t")
		willTopic := base + "/will"
		fence := base + "/fence"
		col := newCollector()
		sub, _ := connectPaho(t, pahoOpts(d.sub(), unique(t, "sub"), true))
		subscribe(t, sub, base+"/#", 2, col)

		t.Run("abrupt close publishes it", func(t *testing.T) {
			c := mqtttest.Dial(t, d.pub().Addr())
			c.MustConnect(&packets.Connect{
				ClientID: unique(t, "c"), CleanSession: true, KeepAlive: 30,
				Will: &packets.Will{Topic: willTopic, Payload: []byte("abrupt"), QoS: 2},
			})
			_ = c.Conn.Close()
			m := col.next(t)
			if m.Topic() != willTopic || string(m.Payload()) != "abrupt" || m.Qos() != 2 {
				t.Fatalf("got %q %q qos %d, want the will at QoS 2", m.Topic(), m.Payload(), m.Qos())
			}
		})
		t.Run("protocol violation publishes it", func(t *testing.T) {
			c := mqtttest.Dial(t, d.pub().Addr())
			c.MustConnect(&packets.Connect{
				ClientID: unique(t, "c"), CleanSession: true, KeepAlive: 30,
				Will: &packets.Will{Topic: willTopic, Payload: []byte("violation"), QoS: 1},
			})
			c.Write(packetstest.Named("subscribe_empty_body").Raw) // SUBSCRIBE without packet id: malformed
			c.ExpectClosed(waitTimeout)
			if m := col.next(t); string(m.Payload()) != "violation" {
				t.Fatalf("got %q, want the will", m.Payload())
			}
		})
		t.Run("DISCONNECT discards it", func(t *testing.T) {
			c := mqtttest.Dial(t, d.pub().Addr())
			c.MustConnect(&packets.Connect{
				ClientID: unique(t, "c"), CleanSession: true, KeepAlive: 30,
				Will: &packets.Will{Topic: willTopic, Payload: []byte("must not appear"), QoS: 1},
			})
			c.Send(&packets.Disconnect{})
			c.ExpectClosed(waitTimeout)
			pub, _ := connectPaho(t, pahoOpts(d.pub(), unique(t, "pub"), true))
			publish(t, pub, fence, 1, false, "fence")
			if got := col.until(t, fence); len(got) != 0 {
				t.Fatalf("got %q after DISCONNECT", got[0].Payload())
			}
			col.quiet(t)
		})
		t.Run("retained will", func(t *testing.T) {
			retTopic := base + "/retained"
			c := mqtttest.Dial(t, d.pub().Addr())
			c.MustConnect(&packets.Connect{
				ClientID: unique(t, "c"), CleanSession: true, KeepAlive: 30,
				Will: &packets.Will{Topic: retTopic, Payload: []byte("kept"), QoS: 1, Retain: true},
			})
			_ = c.Conn.Close()
			if m := col.next(t); string(m.Payload()) != "kept" {
				t.Fatalf("got %q", m.Payload())
			}
			late := newCollector()
			s2, _ := connectPaho(t, pahoOpts(d.sub(), unique(t, "late"), true))
			subscribe(t, s2, retTopic, 1, late)
			m := late.next(t)
			if string(m.Payload()) != "kept" || !m.Retained() {
				t.Fatalf("late subscriber got %q retained=%v, want the retained will [MQTT-3.1.2-17]", m.Payload(), m.Retained())
			}
		})
	})
}

// A connection ended by a takeover did not send DISCONNECT, so its will is
// published, once, as Mosquitto does [MQTT-3.1.2-8]; the new connection's
// will is not.
func TestConnect_TakeoverPublishesTheOldWill_MQTT_3_1_2_8(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		id := unique(t, "c")
		willTopic := unique(t, "will")
		wills := newCollector()
		watcher, _ := connectPaho(t, pahoOpts(d.sub(), unique(t, "watch"), true))
		subscribe(t, watcher, willTopic, 1, wills)
		first := mqtttest.Dial(t, d.pub().Addr())
		first.MustConnect(&packets.Connect{ClientID: id, CleanSession: true, KeepAlive: 30,
			Will: &packets.Will{Topic: willTopic, Payload: []byte("first"), QoS: 1}})
		second := mqtttest.Dial(t, d.sub().Addr())
		second.MustConnect(&packets.Connect{ClientID: id, CleanSession: true, KeepAlive: 30,
			Will: &packets.Will{Topic: willTopic, Payload: []byte("second"), QoS: 1}})
		first.ExpectClosed(waitTimeout)
		if m := wills.next(t); string(m.Payload()) != "first" {
			t.Fatalf("will %q published, want the taken-over connection's", m.Payload())
		}
		wills.quiet(t)
		second.Send(&packets.Disconnect{})
		second.ExpectClosed(waitTimeout)
		wills.quiet(t)
	})
}
