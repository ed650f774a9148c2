package main

// End-to-end tests of the connection-level MQTT 5.0 features (issue 10):
// Topic Aliases both ways, the client's Maximum Packet Size, the server's
// Receive Maximum, Server Keep Alive, Request Problem Information and
// Reason Strings, Request Response Information; single node and across
// two replicas.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/bridgemq/server/internal/mqtttest"
	"github.com/bridgemq/server/packets"
	"github.com/bridgemq/server/packets/packetstest"
)

// connectProps5 connects a 5.0 client with Clean Start and the CONNECT
// properties props; it fails unless the CONNACK accepts.
func connectProps5(t *testing.T, addr, clientID string, props *packets.Properties) (*mqtttest.Client, *packets.Connack) {
	t.Helper()
	c := mqtttest.Dial(t, addr)
	ack := c.MustConnect(&packets.Connect{ProtocolVersion: packets.Version5, CleanSession: true, ClientID: clientID, KeepAlive: 30, Properties: props})
	return c, ack
}

// aliasOf is the Topic Alias of p, 0 when it has none.
func aliasOf(p *packets.Publish) uint16 {
	if p.Properties == nil || p.Properties.TopicAlias == nil {
		return 0
	}
	return *p.Properties.TopicAlias
}

// reasonOf is the Reason String of properties p, "" when absent.
func reasonOf(p *packets.Properties) string {
	if p == nil {
		return ""
	}
	return p.ReasonString
}

// [MQTT-3.3.2-12] a paho.golang client sets Topic Alias 1 with a topic,
// then publishes with the alias alone; subscribers on the other replica,
// 5.0 (paho.golang) and 3.1.1, get both messages with the full topic and
// no alias: the alias is the publisher's connection's, not the message's.
func TestV5_TopicAlias_ClientToServer_FullTopicAcrossReplicas_MQTT_3_3_2_12(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		topic := unique(t, "t")
		got5 := make(chan *paho.Publish, 8)
		sub5 := paho5(t, d.sub().Addr(), unique(t, "sub5"), got5)
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		if _, err := sub5.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: topic, QoS: 1}}}); err != nil {
			t.Fatalf("paho.golang subscribe: %v", err)
		}
		sub3 := mqtttest.Dial(t, d.sub().Addr())
		sub3.MustConnect(&packets.Connect{ClientID: unique(t, "sub3"), CleanSession: true, KeepAlive: 30})
		sub3.Subscribe(1, packets.Subscription{Filter: topic, QoS: 1})

		pub := paho5(t, d.pub().Addr(), unique(t, "pub"), nil)
		one := uint16(1)
		for i, p := range []*paho.Publish{
			{Topic: topic, QoS: 1, Payload: []byte("set"), Properties: &paho.PublishProperties{TopicAlias: &one}},
			{QoS: 1, Payload: []byte("use"), Retain: true, Properties: &paho.PublishProperties{TopicAlias: &one}},
		} {
			r, err := pub.Publish(ctx, p)
			if err != nil || r == nil || r.ReasonCode != 0 {
				t.Fatalf("publish %d with topic alias: %+v, %v; want PUBACK 0x00", i, r, err)
			}
		}
		for _, want := range []string{"set", "use"} {
			select {
			case p := <-got5:
				if p.Topic != topic || string(p.Payload) != want || p.Properties.TopicAlias != nil {
					t.Fatalf("paho.golang subscriber got %q on %q alias %v, want %q on %q without alias",
						p.Payload, p.Topic, deref(p.Properties.TopicAlias), want, topic)
				}
			case <-time.After(waitTimeout):
				t.Fatalf("paho.golang subscriber did not get %q", want)
			}
			p := mqtttest.Expect[*packets.Publish](sub3)
			sub3.Send(&packets.Puback{PacketID: p.PacketID})
			if p.Topic != topic || string(p.Payload) != want {
				t.Fatalf("3.1.1 subscriber got %q on %q, want %q on %q", p.Payload, p.Topic, want, topic)
			}
		}
		// The message published through the alias was retained under its
		// topic, without the alias, for a later 5.0 subscriber.
		late, _ := connect5(t, d.sub().Addr(), unique(t, "late"), 30)
		late.Subscribe(1, packets.Subscription{Filter: topic, QoS: 1})
		if p := mqtttest.Expect[*packets.Publish](late); p.Topic != topic || !p.Retain || string(p.Payload) != "use" || aliasOf(p) != 0 {
			t.Fatalf("retained: %q on %q retain %v alias %d, want \"use\" on %q, retained, no alias", p.Payload, p.Topic, p.Retain, aliasOf(p), topic)
		}
	})
}

// [MQTT-3.3.2-7] Topic Alias mappings do not outlive the connection: the
// same client, reconnected (here to the other replica), using the alias
// with an empty topic is a Protocol Error, DISCONNECT 0x82.
func TestV5_TopicAlias_NotCarriedToTheNextConnection_MQTT_3_3_2_7(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		id, topic := unique(t, "c"), unique(t, "t")
		c, ack := connect5(t, d.pub().Addr(), id, 30)
		if m := ack.Properties.TopicAliasMaximum; m == nil || *m != 3 {
			t.Fatalf("Topic Alias Maximum %v, want 3 (-topic-alias-maximum)", deref(m))
		}
		c.Send(&packets.Publish{QoS: 1, PacketID: 1, Topic: topic, Payload: []byte("x"), Properties: &packets.Properties{TopicAlias: new(uint16(3))}})
		if a := mqtttest.Expect[*packets.Puback](c); a.ReasonCode != packets.Success {
			t.Fatalf("PUBACK 0x%02x setting alias 3", a.ReasonCode)
		}
		c.Send(&packets.Disconnect{})
		c.ExpectClosed(waitTimeout)

		again, _ := connect5(t, d.sub().Addr(), id, 30)
		again.Send(&packets.Publish{QoS: 1, PacketID: 2, Payload: []byte("y"), Properties: &packets.Properties{TopicAlias: new(uint16(3))}})
		expectDisconnect(t, again, packets.ProtocolError)
	}, "-topic-alias-maximum", "3")
}

// [MQTT-3.3.2-11] [MQTT-3.1.2-26] a client that takes Topic Aliases gets
// them from the server: the first message of a topic carries the topic
// and its alias, the next ones the alias alone; topics past the client's
// Topic Alias Maximum come in full, never with a larger alias. The
// messages cross from the other replica; a client that takes none gets
// none [MQTT-3.1.2-27].
func TestV5_TopicAlias_ServerToClient_MQTT_3_3_2_11(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		base := unique(t, "t")
		sub, _ := connectProps5(t, d.sub().Addr(), unique(t, "sub"), &packets.Properties{TopicAliasMaximum: new(uint16(1))})
		sub.Subscribe(1, packets.Subscription{Filter: base + "/#", QoS: 1})
		plain, _ := connect5(t, d.sub().Addr(), unique(t, "plain"), 30)
		plain.Subscribe(1, packets.Subscription{Filter: base + "/#", QoS: 1})

		pub, _ := connect5(t, d.pub().Addr(), unique(t, "pub"), 30)
		sent := []string{"a", "b", "a", "b", "a"}
		for i, level := range sent {
			pub.PublishQoS1(uint16(i+1), base+"/"+level, level)
		}
		type want struct {
			topic string
			alias uint16
		}
		wants := []want{{base + "/a", 1}, {base + "/b", 0}, {"", 1}, {base + "/b", 0}, {"", 1}}
		for i, w := range wants {
			p := mqtttest.Expect[*packets.Publish](sub)
			sub.Send(&packets.Puback{PacketID: p.PacketID})
			if p.Topic != w.topic || aliasOf(p) != w.alias || string(p.Payload) != sent[i] {
				t.Fatalf("message %d: %q on %q alias %d, want %q on %q alias %d", i, p.Payload, p.Topic, aliasOf(p), sent[i], w.topic, w.alias)
			}
			q := mqtttest.Expect[*packets.Publish](plain)
			plain.Send(&packets.Puback{PacketID: q.PacketID})
			if q.Topic != base+"/"+sent[i] || aliasOf(q) != 0 {
				t.Fatalf("client without Topic Alias Maximum got %q alias %d [MQTT-3.1.2-27]", q.Topic, aliasOf(q))
			}
		}
	})
}

// [MQTT-3.1.2-24] [MQTT-3.1.2-25] a message whose PUBLISH is larger than
// the client's Maximum Packet Size is not sent to it, and is done with as
// if it had been: it takes no place in the client's Receive Maximum of 1,
// so the next message comes without any PUBACK; it is counted. A client
// without the limit gets both.
func TestV5_ClientMaximumPacketSize_MessageNotSent_MQTT_3_1_2_25(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		topic := unique(t, "t")
		sub, _ := connectProps5(t, d.sub().Addr(), unique(t, "sub"),
			&packets.Properties{MaximumPacketSize: new(uint32(200)), ReceiveMaximum: new(uint16(1))})
		sub.Subscribe(1, packets.Subscription{Filter: topic, QoS: 1})
		other, _ := connect5(t, d.sub().Addr(), unique(t, "other"), 30)
		other.Subscribe(1, packets.Subscription{Filter: topic, QoS: 1})
		before := d.subServer(t).Stats()["dropped_too_large"]

		pub, _ := connect5(t, d.pub().Addr(), unique(t, "pub"), 30)
		big := string(bytes.Repeat([]byte("x"), 300))
		pub.PublishQoS1(1, topic, big)
		pub.PublishQoS1(2, topic, "small")
		if p := mqtttest.Expect[*packets.Publish](sub); string(p.Payload) != "small" {
			t.Fatalf("client with Maximum Packet Size 200 got %d bytes of payload, want only the small message", len(p.Payload))
		}
		for _, want := range []string{big, "small"} {
			p := mqtttest.Expect[*packets.Publish](other)
			other.Send(&packets.Puback{PacketID: p.PacketID})
			if string(p.Payload) != want {
				t.Fatalf("client without a limit got %d bytes, want %d", len(p.Payload), len(want))
			}
		}
		if n := d.subServer(t).Stats()["dropped_too_large"] - before; n != 1 {
			t.Fatalf("dropped_too_large rose by %d, want 1", n)
		}
	})
}

// [MQTT-3.3.4-7] a client may have at most the server's Receive Maximum
// (-max-inflight) QoS 1 and 2 PUBLISH packets unacknowledged, a QoS 2 one
// until its PUBCOMP: one more gets DISCONNECT 0x93, with a Reason String.
// A PUBREL that ends a flow makes room first.
func TestV5_ServerReceiveMaximum_Disconnect0x93_MQTT_3_3_4_7(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		topic := unique(t, "t")
		c, ack := connect5(t, d.pub().Addr(), unique(t, "c"), 30)
		if rm := ack.Properties.ReceiveMaximum; rm == nil || *rm != 2 {
			t.Fatalf("Receive Maximum %v, want 2", deref(rm))
		}
		send := func(id uint16) {
			c.Send(&packets.Publish{QoS: 2, PacketID: id, Topic: topic, Payload: []byte("x")})
		}
		send(1)
		send(2)
		for range 2 {
			if r := mqtttest.Expect[*packets.Pubrec](c); r.ReasonCode != packets.Success {
				t.Fatalf("PUBREC %+v", r)
			}
		}
		c.Send(&packets.Pubrel{PacketID: 1})
		mqtttest.Expect[*packets.Pubcomp](c)
		send(3) // the second flow open now
		mqtttest.Expect[*packets.Pubrec](c)
		send(4) // a third
		_, got := c.ExpectClosed(waitTimeout)
		if len(got) == 0 {
			t.Fatal("closed without DISCONNECT, want DISCONNECT 0x93")
		}
		dis, ok := got[len(got)-1].(*packets.Disconnect)
		if !ok || dis.ReasonCode != packets.ReceiveMaximumExceeded {
			t.Fatalf("got %s, want DISCONNECT 0x93 last", mqtttest.Describe(got))
		}
		if !strings.Contains(reasonOf(dis.Properties), "Receive Maximum is 2") {
			t.Fatalf("DISCONNECT Reason String %q, want one naming the Receive Maximum", reasonOf(dis.Properties))
		}
	}, "-max-inflight", "2")
}

// [MQTT-3.2.2-21] with -server-keep-alive the CONNACK carries Server Keep
// Alive when the client asked for another value, and the server holds the
// client to it: a client that asked for 60 s and is silent is
// disconnected after 1.5 × 1 s with 0x8D. A client that asked for the
// same value gets no Server Keep Alive [MQTT-3.2.2-22].
func TestV5_ServerKeepAlive_MQTT_3_2_2_21(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		same, ack := connect5(t, d.pub().Addr(), unique(t, "same"), 1)
		if ack.Properties.ServerKeepAlive != nil {
			t.Fatalf("Server Keep Alive %d for a client that asked for it", *ack.Properties.ServerKeepAlive)
		}
		same.Send(&packets.Disconnect{})

		c, ack := connect5(t, d.pub().Addr(), unique(t, "c"), 60)
		if ka := ack.Properties.ServerKeepAlive; ka == nil || *ka != 1 {
			t.Fatalf("Server Keep Alive %v, want 1", deref(ka))
		}
		took, got := c.ExpectClosed(waitTimeout)
		if len(got) != 1 {
			t.Fatalf("got %s, want DISCONNECT 0x8D", mqtttest.Describe(got))
		}
		if dis, ok := got[0].(*packets.Disconnect); !ok || dis.ReasonCode != packets.KeepAliveTimeout {
			t.Fatalf("got %s, want DISCONNECT 0x8D", mqtttest.Describe(got))
		}
		if took > 10*time.Second {
			t.Fatalf("closed after %s: the client's 60 s keep-alive was used", took)
		}
	}, "-server-keep-alive", "1")
}

// [MQTT-3.1.2-29] refusals carry a Reason String when the client asked for
// problem information (the default): a PUBACK 0x87, a SUBACK with a
// refused filter, a CONNACK refusal. With Request Problem Information 0
// the acknowledgements carry none.
func TestV5_RequestProblemInformation_ReasonStrings_MQTT_3_1_2_29(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		for _, tt := range []struct {
			name   string
			props  *packets.Properties
			reason bool
		}{
			{"default", nil, true},
			{"asked", &packets.Properties{RequestProblemInformation: new(byte(1))}, true},
			{"not asked", &packets.Properties{RequestProblemInformation: new(byte(0))}, false},
		} {
			t.Run(tt.name, func(t *testing.T) {
				c, _ := connectProps5(t, d.pub().Addr(), unique(t, "c"), tt.props)
				c.Send(&packets.Publish{QoS: 1, PacketID: 1, Topic: "ro/" + unique(t, "t"), Payload: []byte("x")})
				ack := mqtttest.Expect[*packets.Puback](c)
				if ack.ReasonCode != packets.NotAuthorized || (reasonOf(ack.Properties) != "") != tt.reason {
					t.Fatalf("PUBACK 0x%02x reason %q, want 0x87 with a reason string: %v", ack.ReasonCode, reasonOf(ack.Properties), tt.reason)
				}
				c.Send(&packets.Subscribe{PacketID: 2, Subscriptions: []packets.Subscription{{Filter: "rw/#", QoS: 1}, {Filter: "nope/#", QoS: 1}}})
				sa := mqtttest.Expect[*packets.Suback](c)
				if len(sa.ReturnCodes) != 2 || sa.ReturnCodes[1] != packets.NotAuthorized {
					t.Fatalf("SUBACK %+v, want 0x87 for the second filter", sa)
				}
				if r := reasonOf(sa.Properties); (r != "") != tt.reason || (tt.reason && !strings.HasPrefix(r, "filter 2 refused")) {
					t.Fatalf("SUBACK reason %q, want one naming filter 2: %v", r, tt.reason)
				}
				if !c.Alive(waitTimeout) {
					t.Fatal("connection closed")
				}
			})
		}
		// CONNACK refusals carry one whatever the client asked.
		c := mqtttest.Dial(t, d.pub().Addr())
		ack := c.Connect(&packets.Connect{ProtocolVersion: packets.Version5, CleanSession: true, ClientID: unique(t, "c"), KeepAlive: 30,
			Properties: &packets.Properties{AuthenticationMethod: "SCRAM-SHA-1", RequestProblemInformation: new(byte(0))}})
		if ack.ReturnCode != packets.BadAuthenticationMethod || !strings.Contains(reasonOf(ack.Properties), "SCRAM-SHA-1") {
			t.Fatalf("CONNACK 0x%02x reason %q, want 0x8C naming the method", ack.ReturnCode, reasonOf(ack.Properties))
		}
	}, "-acl-file", "testdata/e2e_readonly.acl")
}

// Section 3.1.2.11.6: a client that sets Request Response Information 1
// gets Response Information, a topic prefix of its own, and request and
// response work through it across replicas; one that does not gets none
// [MQTT-3.1.2-28].
func TestV5_ResponseInformation_RequestResponse_MQTT_3_1_2_28(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		id := unique(t, "requester")
		plain, ack := connect5(t, d.sub().Addr(), unique(t, "plain"), 30)
		if ri := ack.Properties.ResponseInformation; ri != "" {
			t.Fatalf("Response Information %q without Request Response Information", ri)
		}
		plain.Send(&packets.Disconnect{})

		req, ack := connectProps5(t, d.sub().Addr(), id, &packets.Properties{RequestResponseInformation: new(byte(1))})
		prefix := ack.Properties.ResponseInformation
		if prefix != "resp/"+id+"/" {
			t.Fatalf("Response Information %q, want %q", prefix, "resp/"+id+"/")
		}
		service := unique(t, "service")
		responder, _ := connect5(t, d.pub().Addr(), unique(t, "responder"), 30)
		responder.Subscribe(1, packets.Subscription{Filter: service, QoS: 1})
		req.Subscribe(1, packets.Subscription{Filter: prefix + "#", QoS: 1})
		req.Send(&packets.Publish{QoS: 1, PacketID: 2, Topic: service, Payload: []byte("ping"),
			Properties: &packets.Properties{ResponseTopic: prefix + "answer", CorrelationData: []byte{7}}})
		mqtttest.Expect[*packets.Puback](req)

		in := mqtttest.Expect[*packets.Publish](responder)
		responder.Send(&packets.Puback{PacketID: in.PacketID})
		if in.Properties == nil || in.Properties.ResponseTopic != prefix+"answer" {
			t.Fatalf("request arrived with properties %+v", in.Properties)
		}
		responder.Send(&packets.Publish{QoS: 1, PacketID: 3, Topic: in.Properties.ResponseTopic, Payload: []byte("pong"),
			Properties: &packets.Properties{CorrelationData: in.Properties.CorrelationData}})
		mqtttest.Expect[*packets.Puback](responder)
		out := mqtttest.Expect[*packets.Publish](req)
		if string(out.Payload) != "pong" || out.Properties == nil || !bytes.Equal(out.Properties.CorrelationData, []byte{7}) {
			t.Fatalf("response %q with %+v", out.Payload, out.Properties)
		}
	})
}

// A DISCONNECT the server sends on a protocol error is not lost to a reset
// [MQTT-4.13.1-1]: the server shuts its sending side and closes the socket
// a second later, so the client reads the DISCONNECT, may still write (a
// PINGREQ its pinger had due), and then reads the end of the stream. A
// socket closed at once with the rest of the packet too large unread was
// reset: that write, or the next read, failed with "connection reset".
func TestV5_ServerDisconnect_NotReset_MQTT_4_13_1_1(t *testing.T) {
	s := startServer(t, "-max-packet-size", "1KiB")
	c := mqtttest.Dial(t, s.Addr())
	c.MustConnect(&packets.Connect{ProtocolVersion: packets.Version5, CleanSession: true, ClientID: unique(t, "c"), KeepAlive: 30})
	c.Send(&packets.Publish{Topic: "t", Payload: bytes.Repeat([]byte("."), 1024)})
	if d := mqtttest.Expect[*packets.Disconnect](c); d.ReasonCode != packets.PacketTooLarge {
		t.Fatalf("DISCONNECT 0x%02x, want 0x95", byte(d.ReasonCode))
	}
	if _, err := c.Conn.Write(packetstest.Named("pingreq").Raw); err != nil {
		t.Fatalf("a write after the DISCONNECT: %v", err)
	}
	if p, err := c.Read(mqtttest.WaitTimeout); !errors.Is(err, io.EOF) {
		t.Fatalf("after the DISCONNECT: %T, %v; want the end of the stream", p, err)
	}
}

// [MQTT-3.1.2-24] the server sends no packet larger than the client's
// Maximum Packet Size, acknowledgements included: a SUBACK for 60 filters
// (65 bytes) to a client that takes 40 is not sent, and, since the client
// would wait for it forever, the connection ends with DISCONNECT 0x95
// (4 bytes); a CONNACK with the server's properties to a client that takes
// 8 bytes is not sent either, and the connection closes without a packet.
func TestV5_ClientMaximumPacketSize_AckTooLarge_NotSent_MQTT_3_1_2_24(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		c, _ := connectProps5(t, d.sub().Addr(), unique(t, "small"), &packets.Properties{MaximumPacketSize: new(uint32(40))})
		subs := make([]packets.Subscription, 60)
		for i := range subs {
			subs[i] = packets.Subscription{Filter: fmt.Sprintf("%s/%d", unique(t, "f"), i), QoS: 1}
		}
		c.Send(&packets.Subscribe{PacketID: 1, Subscriptions: subs})
		_, got := c.ExpectClosed(waitTimeout)
		for _, p := range got {
			if _, ok := p.(*packets.Suback); ok {
				t.Fatalf("got a SUBACK over the client's Maximum Packet Size: %s", mqtttest.Describe(got))
			}
		}
		if len(got) == 0 {
			t.Fatal("closed without DISCONNECT, want DISCONNECT 0x95")
		}
		if dis, ok := got[len(got)-1].(*packets.Disconnect); !ok || dis.ReasonCode != packets.PacketTooLarge {
			t.Fatalf("got %s, want DISCONNECT 0x95 last", mqtttest.Describe(got))
		}

		// A SUBACK that fits is sent, to the same limit.
		ok, _ := connectProps5(t, d.sub().Addr(), unique(t, "fits"), &packets.Properties{MaximumPacketSize: new(uint32(40))})
		if codes := ok.Subscribe(1, subs[:10]...); len(codes) != 10 {
			t.Fatalf("SUBACK with %d codes, want 10", len(codes))
		}

		raw := mqtttest.Dial(t, d.sub().Addr())
		raw.SetVersion(packets.Version5)
		raw.Send(&packets.Connect{ProtocolVersion: packets.Version5, CleanSession: true, ClientID: unique(t, "tiny"), KeepAlive: 30,
			Properties: &packets.Properties{MaximumPacketSize: new(uint32(8))}})
		if _, got := raw.ExpectClosed(waitTimeout); len(got) != 0 {
			t.Fatalf("got %s, want the connection closed without a CONNACK over 8 bytes", mqtttest.Describe(got))
		}
	})
}
