package main

// End-to-end tests of MQTT 5.0 connections (issue 10): CONNACK and its
// properties, 5.0 refusals, server-sent DISCONNECT, DISCONNECT with will,
// and 5.0 clients (paho.golang, mosquitto -V mqttv5) beside 3.1.1 ones,
// single node and across two replicas.

import (
	"bytes"
	"context"
	"net"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/bridgemq/server/internal/mqtttest"
	"github.com/bridgemq/server/packets"
	pt "github.com/bridgemq/server/packets/packetstest"
)

// connect5 dials addr and connects a 5.0 client with Clean Start; it fails
// unless the CONNACK accepts.
func connect5(t *testing.T, addr, clientID string, keepAlive uint16) (*mqtttest.Client, *packets.Connack) {
	t.Helper()
	c := mqtttest.Dial(t, addr)
	ack := c.MustConnect(&packets.Connect{ProtocolVersion: packets.Version5, CleanSession: true, ClientID: clientID, KeepAlive: keepAlive})
	return c, ack
}

// expectDisconnect reads until the server closes the connection and fails
// unless the last packet before the close is a DISCONNECT with code.
func expectDisconnect(t *testing.T, c *mqtttest.Client, code packets.ReasonCode) {
	t.Helper()
	_, got := c.ExpectClosed(waitTimeout)
	if len(got) == 0 {
		t.Fatalf("closed without DISCONNECT, want DISCONNECT 0x%02x", code)
	}
	d, ok := got[len(got)-1].(*packets.Disconnect)
	if !ok || d.ReasonCode != code {
		t.Fatalf("got %s before the close, want DISCONNECT 0x%02x last", mqtttest.Describe(got), code)
	}
}

// [MQTT-3.2.2-9] .. [MQTT-3.2.2-17], [MQTT-3.1.3-7]: a 5.0 CONNECT gets a
// 5.0 CONNACK stating the server's limits truthfully: Receive Maximum is
// -max-inflight, Maximum QoS absent (2), Retain Available, Maximum Packet
// Size -max-packet-size, Topic Alias Maximum -topic-alias-maximum (10 by
// default), wildcards available,
// Subscription Identifiers available [MQTT-3.3.4-3], Shared Subscriptions too; an
// empty client id is assigned one, returned in the CONNACK.
func TestV5_ConnackStatesServerLimits_MQTT_3_2_2_9(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		_, ack := connect5(t, d.pub().Addr(), "", 30)
		p := ack.Properties
		if p == nil {
			t.Fatal("CONNACK without properties")
		}
		check := func(name string, got *uint16, want uint16) {
			t.Helper()
			if got == nil || *got != want {
				t.Errorf("%s = %v, want %d", name, deref(got), want)
			}
		}
		checkByte := func(name string, got *byte, want byte) {
			t.Helper()
			if got == nil || *got != want {
				t.Errorf("%s = %v, want %d", name, deref(got), want)
			}
		}
		check("Receive Maximum", p.ReceiveMaximum, 7)
		check("Topic Alias Maximum", p.TopicAliasMaximum, 10)
		if p.MaximumQoS != nil {
			t.Errorf("Maximum QoS = %d, want absent (QoS 2 served)", *p.MaximumQoS)
		}
		checkByte("Retain Available", p.RetainAvailable, 1)
		checkByte("Wildcard Subscription Available", p.WildcardSubscriptionAvailable, 1)
		checkByte("Subscription Identifiers Available", p.SubscriptionIdentifierAvailable, 1)
		checkByte("Shared Subscription Available", p.SharedSubscriptionAvailable, 1)
		if p.MaximumPacketSize == nil || *p.MaximumPacketSize != 4096 {
			t.Errorf("Maximum Packet Size = %v, want 4096", deref(p.MaximumPacketSize))
		}
		if !strings.HasPrefix(p.AssignedClientIdentifier, "auto-") {
			t.Errorf("Assigned Client Identifier = %q, want one for the empty id [MQTT-3.1.3-7]", p.AssignedClientIdentifier)
		}
		if p.ServerKeepAlive != nil {
			t.Errorf("Server Keep Alive %d without -server-keep-alive [MQTT-3.2.2-22]", *p.ServerKeepAlive)
		}
		if ack.SessionPresent {
			t.Error("session present on a clean start [MQTT-3.2.2-2]")
		}
	}, "-max-inflight", "7", "-max-packet-size", "4096")
}

func deref[T any](p *T) any {
	if p == nil {
		return "absent"
	}
	return *p
}

// Section 4.12: no enhanced authentication method is implemented, so a
// CONNECT with an Authentication Method gets CONNACK 0x8C and the close.
func TestV5_ConnectAuthenticationMethod_Connack0x8C_MQTT_4_12_0_1(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		c := mqtttest.Dial(t, d.pub().Addr())
		ack := c.Connect(&packets.Connect{ProtocolVersion: packets.Version5, CleanSession: true, ClientID: unique(t, "c"), KeepAlive: 30,
			Properties: &packets.Properties{AuthenticationMethod: "SCRAM-SHA-1"}})
		if ack.ReturnCode != packets.BadAuthenticationMethod {
			t.Fatalf("CONNACK 0x%02x, want 0x8C", ack.ReturnCode)
		}
		c.ExpectClosed(waitTimeout)
	})
}

// [MQTT-3.2.2-8] refusals of a 5.0 CONNECT use 5.0 Reason Codes: 0x85
// for a client id -client-id-pattern refuses, 0x86 for a wrong password,
// 0x87 for an anonymous client with -allow-anonymous=false; the connection
// is closed after the CONNACK [MQTT-3.2.2-7].
func TestV5_ConnectRefusals_ReasonCodes_MQTT_3_2_2_8(t *testing.T) {
	tests := []struct {
		name string
		p    packets.Connect
		want packets.ReasonCode
	}{
		{"client id not valid", packets.Connect{ClientID: "not-allowed"}, packets.ClientIdentifierNotValid},
		{"bad user name or password", packets.Connect{ClientID: "ok-1", UsernameFlag: true, Username: "alice",
			PasswordFlag: true, Password: []byte("wrong")}, packets.BadUserNameOrPassword},
		{"not authorized", packets.Connect{ClientID: "ok-2"}, packets.NotAuthorized},
		{"accepted", packets.Connect{ClientID: "ok-3", UsernameFlag: true, Username: "alice",
			PasswordFlag: true, Password: []byte("secret")}, packets.Success},
	}
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				c := mqtttest.Dial(t, d.pub().Addr())
				p := tt.p
				p.ProtocolVersion, p.CleanSession, p.KeepAlive = packets.Version5, true, 30
				ack := c.Connect(&p)
				if ack.ReturnCode != tt.want {
					t.Fatalf("CONNACK 0x%02x, want 0x%02x", ack.ReturnCode, tt.want)
				}
				if tt.want != packets.Success {
					c.ExpectClosed(waitTimeout)
				}
			})
		}
	}, "-client-id-pattern", "ok-.*", "-password-file", "auth/testdata/passwd_pbkdf2", "-allow-anonymous=false")
}

// [MQTT-4.13.1-1] a malformed 5.0 CONNECT gets CONNACK 0x81, one that is a
// protocol error CONNACK 0x82, and the connection is closed.
func TestV5_MalformedConnect_Connack0x81_MQTT_4_13_1_1(t *testing.T) {
	tests := []struct {
		name string
		raw  []byte
		want packets.ReasonCode
	}{
		{"topic alias in CONNECT", pt.Packet(0x10, pt.ConnectHead("MQTT", 5, 0x02), pt.Props(0x23, pt.U16(1)), pt.Str("c")), packets.MalformedPacket},
		{"receive maximum 0", pt.Packet(0x10, pt.ConnectHead("MQTT", 5, 0x02), pt.Props(0x21, pt.U16(0)), pt.Str("c")), packets.ProtocolError},
	}
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				c := mqtttest.Dial(t, d.pub().Addr())
				c.SetVersion(packets.Version5)
				c.Write(tt.raw)
				_, got := c.ExpectClosed(waitTimeout)
				if len(got) != 1 {
					t.Fatalf("got %s, want one CONNACK 0x%02x", mqtttest.Describe(got), tt.want)
				}
				if ack, ok := got[0].(*packets.Connack); !ok || ack.ReturnCode != tt.want {
					t.Fatalf("got %s, want CONNACK 0x%02x", mqtttest.Describe(got), tt.want)
				}
			})
		}
	})
}

// Section 4.13.1: a 5.0 server closing a connection for a malformed packet
// (0x81), a protocol error (0x82) or a packet over its Maximum Packet Size
// (0x95) sends DISCONNECT with that Reason Code first; a PUBLISH with a
// Topic Alias, when Topic Alias Maximum is 0, gets 0x94 [MQTT-3.3.2-9].
func TestV5_ReadErrors_DisconnectWithReasonCode_MQTT_4_13_1(t *testing.T) {
	big := bytes.Repeat([]byte("x"), 300)
	tests := []struct {
		name string
		raw  []byte
		want packets.ReasonCode
	}{
		{"property not allowed in PUBLISH", pt.Packet(0x30, pt.Str("a"), pt.Props(0x11, pt.U32(1)), "x"), packets.MalformedPacket},
		{"payload format indicator twice", pt.Packet(0x30, pt.Str("a"), pt.Props(0x01, 1, 0x01, 1), "x"), packets.ProtocolError},
		{"packet too large", pt.Packet(0x30, pt.Str("a"), pt.Props(), big), packets.PacketTooLarge},
		{"topic alias above the maximum MQTT-3.3.2-9", pt.Packet(0x30, pt.Str("a"), pt.Props(0x23, pt.U16(11)), "x"), packets.TopicAliasInvalid},
		{"topic alias 0 MQTT-3.3.2-8", pt.Packet(0x30, pt.Str("a"), pt.Props(0x23, pt.U16(0)), "x"), packets.TopicAliasInvalid},
		{"empty topic with an unknown alias", pt.Packet(0x30, pt.Str(""), pt.Props(0x23, pt.U16(1)), "x"), packets.ProtocolError},
		{"empty topic without alias", pt.Packet(0x30, pt.Str(""), pt.Props(), "x"), packets.ProtocolError},
		{"second CONNECT", pt.Packet(0x10, pt.ConnectHead("MQTT", 5, 0x02), pt.Props(), pt.Str("c")), packets.ProtocolError},
	}
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				c, _ := connect5(t, d.pub().Addr(), unique(t, "c"), 30)
				c.Write(tt.raw)
				expectDisconnect(t, c, tt.want)
			})
		}
	}, "-max-packet-size", "256")
}

// [MQTT-3.1.2-22] via section 3.14.2.1: a 5.0 client silent for 1.5 ×
// its keep-alive gets DISCONNECT 0x8D before the close.
func TestV5_KeepAliveTimeout_Disconnect0x8D_MQTT_3_1_2_22(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		c, _ := connect5(t, d.pub().Addr(), unique(t, "c"), 1)
		expectDisconnect(t, c, packets.KeepAliveTimeout)
	})
}

// [MQTT-3.1.4-3] a new connection with the same client id takes the
// session over; the old 5.0 connection gets DISCONNECT 0x8E, also when the
// new one is on another replica.
func TestV5_Takeover_Disconnect0x8E_MQTT_3_1_4_3(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		id := unique(t, "c")
		old, _ := connect5(t, d.pub().Addr(), id, 30)
		connect5(t, d.sub().Addr(), id, 30)
		expectDisconnect(t, old, packets.SessionTakenOver)
	})
}

// Section 3.14.2.1: a server that shuts down sends its 5.0 clients
// DISCONNECT 0x8B.
func TestV5_ServerShutdown_Disconnect0x8B(t *testing.T) {
	ts := startServer(t)
	c, _ := connect5(t, ts.Addr(), unique(t, "c"), 30)
	go ts.Stop(t)
	expectDisconnect(t, c, packets.ServerShuttingDown)
}

// Section 4.11: with -server-reference, a draining server sends its 5.0
// clients DISCONNECT 0x9C (Use another server) naming where to go.
func TestV5_ServerShutdown_Disconnect0x9CWithServerReference(t *testing.T) {
	ts := startServer(t, "-server-reference", "mqtt.example:1883")
	c, _ := connect5(t, ts.Addr(), unique(t, "c"), 30)
	go ts.Stop(t)
	_, got := c.ExpectClosed(waitTimeout)
	if len(got) == 0 {
		t.Fatal("closed without DISCONNECT, want DISCONNECT 0x9C")
	}
	d, ok := got[len(got)-1].(*packets.Disconnect)
	if !ok || d.ReasonCode != packets.UseAnotherServer || d.Properties == nil || d.Properties.ServerReference != "mqtt.example:1883" {
		t.Fatalf("got %s before the close, want DISCONNECT 0x9C with Server Reference mqtt.example:1883", mqtttest.Describe(got))
	}
}

// Section 3.14.2.1: DISCONNECT 0x04 (Disconnect with Will Message) ends
// the connection and publishes the will; DISCONNECT 0x00 discards it
// [MQTT-3.14.4-3]. The will's subscriber is on the other replica.
func TestV5_DisconnectWithWill_PublishesWill_MQTT_3_14_4_3(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		topic := unique(t, "will")
		sub := mqtttest.Dial(t, d.sub().Addr())
		sub.MustConnect(&packets.Connect{ClientID: unique(t, "sub"), CleanSession: true, KeepAlive: 30})
		sub.Subscribe(1, packets.Subscription{Filter: topic + "/#", QoS: 1})
		// DISCONNECT 0x00 discards the will, 0x04 publishes it.
		for _, code := range []packets.ReasonCode{packets.NormalDisconnection, packets.DisconnectWithWill} {
			c := mqtttest.Dial(t, d.pub().Addr())
			c.MustConnect(&packets.Connect{ProtocolVersion: packets.Version5, CleanSession: true, ClientID: unique(t, "c"), KeepAlive: 30,
				Will: &packets.Will{Topic: topic + "/" + string('0'+rune(code)), Payload: []byte("gone-" + string('0'+rune(code))), QoS: 1}})
			c.Send(&packets.Disconnect{ReasonCode: code})
			c.ExpectClosed(waitTimeout)
		}
		// The will is published after the server has closed the connection,
		// so a fence published once the close was seen may overtake it:
		// wait for the will of the DISCONNECT 0x04 first (PublishesUntil
		// fails the test if it never comes), then fence what may follow it.
		got := sub.PublishesUntil("gone-4")
		fence := topic + "/fence"
		pub := mqtttest.Dial(t, d.pub().Addr())
		pub.MustConnect(&packets.Connect{ClientID: unique(t, "pub"), CleanSession: true, KeepAlive: 30})
		pub.PublishQoS1(1, fence, fence)
		got = append(got, sub.PublishesUntil(fence)...)
		if len(got) != 0 {
			var topics []string
			for _, p := range got {
				topics = append(topics, p.Topic)
			}
			t.Fatalf("got %v besides the will of the DISCONNECT 0x04 (%s/4), want nothing: DISCONNECT 0x00 discards the will [MQTT-3.14.4-3]", topics, topic)
		}
	})
}

// paho5 connects a paho.golang (MQTT 5.0) client to addr; its messages go
// to got.
func paho5(t *testing.T, addr, clientID string, got chan<- *paho.Publish) *paho.Client {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, waitTimeout)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	c := paho.NewClient(paho.ClientConfig{
		Conn: conn,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(r paho.PublishReceived) (bool, error) {
			if got != nil {
				got <- r.Packet
			}
			return true, nil
		}},
	})
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	ack, err := c.Connect(ctx, &paho.Connect{ClientID: clientID, CleanStart: true, KeepAlive: 30})
	if err != nil {
		t.Fatalf("paho.golang connect: %v", err)
	}
	if ack.ReasonCode != 0 {
		t.Fatalf("paho.golang CONNACK 0x%02x", ack.ReasonCode)
	}
	t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
	return c
}

// paho.golang publishes at QoS 0, 1 and 2 to a paho.golang subscriber on
// the other replica and to a 3.1.1 subscriber; a 3.1.1 publisher reaches the
// 5.0 subscriber. Each gets every message once [MQTT-4.3.3-1] at the QoS
// of its subscription.
func TestV5_PahoGolang_PublishSubscribe_QoS012_MQTT_4_3(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		topic := unique(t, "t")
		got5 := make(chan *paho.Publish, 16)
		sub5 := paho5(t, d.sub().Addr(), unique(t, "sub5"), got5)
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		sa, err := sub5.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: topic + "/#", QoS: 2}}})
		if err != nil || len(sa.Reasons) != 1 || sa.Reasons[0] != 2 {
			t.Fatalf("paho.golang SUBACK %+v, %v; want QoS 2 granted", sa, err)
		}
		sub3 := mqtttest.Dial(t, d.sub().Addr())
		sub3.MustConnect(&packets.Connect{ClientID: unique(t, "sub3"), CleanSession: true, KeepAlive: 30})
		sub3.Subscribe(1, packets.Subscription{Filter: topic + "/#", QoS: 2})

		pub5 := paho5(t, d.pub().Addr(), unique(t, "pub5"), nil)
		for qos := byte(0); qos <= 2; qos++ {
			r, err := pub5.Publish(ctx, &paho.Publish{Topic: topic + "/" + string('0'+rune(qos)), QoS: qos, Payload: []byte("v5")})
			if err != nil {
				t.Fatalf("paho.golang publish QoS %d: %v", qos, err)
			}
			if qos > 0 && (r == nil || r.ReasonCode != 0) {
				t.Fatalf("paho.golang publish QoS %d: response %+v, want reason code 0x00", qos, r)
			}
		}
		pub3 := mqtttest.Dial(t, d.pub().Addr())
		pub3.MustConnect(&packets.Connect{ClientID: unique(t, "pub3"), CleanSession: true, KeepAlive: 30})
		pub3.Publish(1, 1, topic+"/fence", topic+"/fence", false) // PublishesUntil's fence is a payload

		want := map[string]byte{topic + "/0": 0, topic + "/1": 1, topic + "/2": 2, topic + "/fence": 1}
		seen := map[string]bool{}
		timeout := time.After(waitTimeout)
		for len(seen) < len(want) {
			select {
			case p := <-got5:
				if q, ok := want[p.Topic]; !ok || p.QoS != q || seen[p.Topic] {
					t.Fatalf("paho.golang got %s QoS %d (seen before: %v)", p.Topic, p.QoS, seen[p.Topic])
				}
				seen[p.Topic] = true
			case <-timeout:
				t.Fatalf("paho.golang subscriber got %v of %v", seen, want)
			}
		}
		got := sub3.PublishesUntil(topic + "/fence")
		if len(got) != 3 {
			t.Fatalf("3.1.1 subscriber got %d messages before the fence, want 3", len(got))
		}
		for _, p := range got {
			if p.Properties != nil {
				t.Fatalf("3.1.1 subscriber got properties %+v", p.Properties)
			}
		}
	})
}

// mosq5Args are mosquitto client arguments for MQTT 5.0 (-V mqttv5).
func mosq5Args(ts endpoint, args ...string) []string {
	host, port, _ := net.SplitHostPort(ts.Addr())
	return append([]string{"-h", host, "-p", port, "-V", "mqttv5"}, args...)
}

// mosquitto_pub and mosquitto_sub with -V mqttv5, across replicas: QoS 1
// and QoS 2 arrive.
func TestV5_Mosquitto_RoundTrip(t *testing.T) {
	subPath := needMosquittoClients(t, "mosquitto_sub")
	needMosquittoClients(t, "mosquitto_pub")
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		for _, qos := range []string{"1", "2"} {
			topic := unique(t, "t")
			var out bytes.Buffer
			var mu sync.Mutex
			sub := exec.Command(subPath, mosq5Args(d.sub(), "-i", unique(t, "sub"), "-t", topic, "-q", qos, "-C", "1", "-v")...)
			sub.Stdout, sub.Stderr = &lockedWriter{&mu, &out}, &lockedWriter{&mu, &out}
			if err := sub.Start(); err != nil {
				t.Fatalf("start mosquitto_sub: %v", err)
			}
			done := make(chan error, 1)
			go func() { done <- sub.Wait() }()
			t.Cleanup(func() { _ = sub.Process.Kill() })
			deadline := time.After(10 * time.Second)
			for exited := false; !exited; {
				mustMosq(t, "mosquitto_pub", mosq5Args(d.pub(), "-i", unique(t, "pub"), "-t", topic, "-q", qos, "-m", "hello v5")...)
				select {
				case err := <-done:
					if err != nil {
						t.Fatalf("mosquitto_sub: %v\n%s", err, out.String())
					}
					exited = true
				case <-time.After(200 * time.Millisecond):
				case <-deadline:
					mu.Lock()
					t.Fatalf("mosquitto_sub -V mqttv5 received nothing within 10s\n%s", out.String())
				}
			}
			if got := out.String(); !strings.Contains(got, topic+" hello v5") {
				t.Fatalf("mosquitto_sub output lacks the message:\n%s", got)
			}
		}
	})
}

// lockedWriter serialises writes of a command's stdout and stderr.
type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// Section 3.4.2.1 / 3.5.2.1: a 5.0 PUBLISH the ACL does not let the client
// write gets PUBACK or PUBREC 0x87 and is dropped; a QoS 2 flow ends there
// (no PUBREL is expected [MQTT-4.3.3-4]); an accepted one gets 0x00. 3.1.1
// keeps acknowledging silently (TestACL_DenyPublish_AckedAndDropped).
func TestV5_PubackPubrecNotAuthorized_MQTT_3_4_2_1(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		base := unique(t, "t")
		sub := mqtttest.Dial(t, d.sub().Addr())
		sub.MustConnect(&packets.Connect{ClientID: unique(t, "sub"), CleanSession: true, KeepAlive: 30})
		sub.Subscribe(1, packets.Subscription{Filter: "ro/" + base + "/#", QoS: 2}, packets.Subscription{Filter: "rw/" + base + "/#", QoS: 2})

		c, _ := connect5(t, d.pub().Addr(), unique(t, "pub"), 30)
		denied := "ro/" + base + "/x"
		c.Send(&packets.Publish{QoS: 1, PacketID: 1, Topic: denied, Payload: []byte("q1")})
		if ack := mqtttest.Expect[*packets.Puback](c); ack.PacketID != 1 || ack.ReasonCode != packets.NotAuthorized {
			t.Fatalf("PUBACK %+v, want id 1 reason 0x87", ack)
		}
		c.Send(&packets.Publish{QoS: 2, PacketID: 2, Topic: denied, Payload: []byte("q2"), Retain: true})
		if rec := mqtttest.Expect[*packets.Pubrec](c); rec.PacketID != 2 || rec.ReasonCode != packets.NotAuthorized {
			t.Fatalf("PUBREC %+v, want id 2 reason 0x87", rec)
		}
		// The id is free again: a new QoS 2 PUBLISH with it is a new message.
		fence := "rw/" + base + "/fence"
		c.Send(&packets.Publish{QoS: 2, PacketID: 2, Topic: fence, Payload: []byte(fence)})
		if rec := mqtttest.Expect[*packets.Pubrec](c); rec.PacketID != 2 || rec.ReasonCode != packets.Success {
			t.Fatalf("PUBREC %+v, want id 2 reason 0x00", rec)
		}
		c.Send(&packets.Pubrel{PacketID: 2})
		if comp := mqtttest.Expect[*packets.Pubcomp](c); comp.ReasonCode != packets.Success {
			t.Fatalf("PUBCOMP %+v, want 0x00", comp)
		}
		if got := sub.PublishesUntil(fence); len(got) != 0 {
			t.Fatalf("denied publish delivered: %s %q", got[0].Topic, got[0].Payload)
		}
	}, "-acl-file", "testdata/e2e_readonly.acl")
}

// Section 3.9.3: a 5.0 SUBACK says why a filter is refused: 0x87 the ACL
// denies it, 0x8F over -max-topic-levels or not a valid filter (a shared
// subscription with a wildcard in its ShareName [MQTT-4.8.2-1]), 0x97 past
// -max-subscriptions-per-client; 3.1.1 keeps 0x80 for all of them
// (TestACL_DenySubscribe_Suback0x80).
func TestV5_SubackReasonCodes_MQTT_3_9_3_2(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		c, _ := connect5(t, d.sub().Addr(), unique(t, "c"), 30)
		a, b := unique(t, "a"), unique(t, "b")
		codes := c.Subscribe(1,
			packets.Subscription{Filter: a, QoS: 1},
			packets.Subscription{Filter: "test/nosubscribe", QoS: 1},
			packets.Subscription{Filter: "l1/l2/l3/l4/l5", QoS: 1},
			packets.Subscription{Filter: "bad/#/x", QoS: 1},
			packets.Subscription{Filter: "$share/+/" + a, QoS: 1},
			packets.Subscription{Filter: b, QoS: 2},
			packets.Subscription{Filter: unique(t, "c"), QoS: 0})
		want := []packets.ReasonCode{packets.GrantedQoS1, packets.NotAuthorized, packets.TopicFilterInvalid,
			packets.TopicFilterInvalid, packets.TopicFilterInvalid, packets.GrantedQoS2, packets.QuotaExceeded}
		if len(codes) != len(want) {
			t.Fatalf("SUBACK %v, want %v", codes, want)
		}
		for i := range want {
			if codes[i] != want[i] {
				t.Fatalf("SUBACK %x, want %x", codes, want)
			}
		}
	}, "-acl-file", "testdata/e2e_interop.acl", "-max-topic-levels", "4", "-max-subscriptions-per-client", "2")
}

// [MQTT-3.11.3-1] a 5.0 UNSUBACK has one Reason Code per filter: 0x00, or
// 0x11 when there was no such subscription.
func TestV5_UnsubackNoSubscriptionExisted_MQTT_3_11_3_1(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		c, _ := connect5(t, d.sub().Addr(), unique(t, "c"), 30)
		a := unique(t, "a")
		c.Subscribe(1, packets.Subscription{Filter: a, QoS: 1})
		c.Send(&packets.Unsubscribe{PacketID: 2, Filters: []string{a, unique(t, "never")}})
		ack := mqtttest.Expect[*packets.Unsuback](c)
		if ack.PacketID != 2 || len(ack.ReasonCodes) != 2 || ack.ReasonCodes[0] != packets.Success || ack.ReasonCodes[1] != packets.NoSubscriptionExisted {
			t.Fatalf("UNSUBACK %+v, want id 2 codes [0x00 0x11]", ack)
		}
	})
}

// Section 3.7.2.1: a PUBREL for a packet id the server does not know gets
// PUBCOMP 0x92 [MQTT-4.3.3-11]; 3.1.1 answers PUBCOMP as before.
func TestV5_PubrelUnknownID_Pubcomp0x92_MQTT_4_3_3_11(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		c, _ := connect5(t, d.pub().Addr(), unique(t, "c"), 30)
		c.Send(&packets.Pubrel{PacketID: 77})
		if comp := mqtttest.Expect[*packets.Pubcomp](c); comp.PacketID != 77 || comp.ReasonCode != packets.PacketIdentifierNotFound {
			t.Fatalf("PUBCOMP %+v, want id 77 reason 0x92", comp)
		}
	})
}

// Section 3.4.2.1: a 5.0 QoS 1 PUBLISH past -max-topic-levels gets PUBACK
// 0x90 (Topic Name Invalid: not accepted by this server) and the
// connection stays open, where 3.1.1 can only close it.
func TestV5_PublishOverTopicLimit_Puback0x90(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		c, _ := connect5(t, d.pub().Addr(), unique(t, "c"), 30)
		c.Send(&packets.Publish{QoS: 1, PacketID: 1, Topic: "l1/l2/l3/l4/l5", Payload: []byte("x")})
		if ack := mqtttest.Expect[*packets.Puback](c); ack.ReasonCode != packets.TopicNameInvalid {
			t.Fatalf("PUBACK %+v, want 0x90", ack)
		}
		if !c.Alive(waitTimeout) {
			t.Fatal("connection closed after a refused PUBLISH")
		}
	}, "-max-topic-levels", "4")
}

// props5 are the message properties of the property tests: every one that
// travels with a message.
func props5(expiry uint32) *packets.Properties {
	one := byte(1)
	return &packets.Properties{PayloadFormatIndicator: &one, MessageExpiryInterval: &expiry, ContentType: "application/json",
		ResponseTopic: "reply/here", CorrelationData: []byte{0, 1, 0xfe},
		UserProperties: []packets.UserProperty{{Name: "k", Value: "1"}, {Name: "k", Value: "2"}, {Name: "z", Value: ""}}}
}

// checkProps fails unless got carries want's properties unchanged
// [MQTT-3.3.2-4] [MQTT-3.3.2-17] [MQTT-3.3.2-18] [MQTT-3.3.2-20], with a
// Message Expiry Interval of at most maxExpiry and above 0 [MQTT-3.3.2-6].
func checkProps(t *testing.T, got *packets.Publish, want *packets.Properties, maxExpiry uint32) {
	t.Helper()
	p := got.Properties
	if p == nil {
		t.Fatalf("%s arrived without properties", got.Topic)
	}
	if p.PayloadFormatIndicator == nil || *p.PayloadFormatIndicator != *want.PayloadFormatIndicator ||
		p.ContentType != want.ContentType || p.ResponseTopic != want.ResponseTopic ||
		!bytes.Equal(p.CorrelationData, want.CorrelationData) || len(p.UserProperties) != len(want.UserProperties) {
		t.Fatalf("properties %+v, want %+v", p, want)
	}
	for i := range want.UserProperties {
		if p.UserProperties[i] != want.UserProperties[i] {
			t.Fatalf("user properties %v, want %v in order", p.UserProperties, want.UserProperties)
		}
	}
	if p.MessageExpiryInterval == nil || *p.MessageExpiryInterval == 0 || *p.MessageExpiryInterval > maxExpiry {
		t.Fatalf("message expiry %v, want 1..%d", deref(p.MessageExpiryInterval), maxExpiry)
	}
}

// Section 3.3.2.3: the properties of a 5.0 PUBLISH reach a 5.0 subscriber
// on the other replica unchanged, live and as a retained message; a 3.1.1
// subscriber gets the same message without them.
func TestV5_MessageProperties_ReachSubscribers_MQTT_3_3_2_17(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		topic := unique(t, "t")
		sub5, _ := connect5(t, d.sub().Addr(), unique(t, "sub5"), 30)
		sub5.Subscribe(1, packets.Subscription{Filter: topic, QoS: 1})
		sub3 := mqtttest.Dial(t, d.sub().Addr())
		sub3.MustConnect(&packets.Connect{ClientID: unique(t, "sub3"), CleanSession: true, KeepAlive: 30})
		sub3.Subscribe(1, packets.Subscription{Filter: topic, QoS: 1})

		pub, _ := connect5(t, d.pub().Addr(), unique(t, "pub"), 30)
		want := props5(600)
		pub.Send(&packets.Publish{QoS: 1, PacketID: 1, Topic: topic, Payload: []byte(topic), Retain: true, Properties: want})
		mqtttest.Expect[*packets.Puback](pub)

		got := mqtttest.Expect[*packets.Publish](sub5)
		sub5.Send(&packets.Puback{PacketID: got.PacketID})
		checkProps(t, got, want, 600)
		if got3 := mqtttest.Expect[*packets.Publish](sub3); string(got3.Payload) != topic {
			t.Fatalf("3.1.1 subscriber got %q", got3.Payload)
		}

		late, _ := connect5(t, d.pub().Addr(), unique(t, "late"), 30)
		late.Subscribe(1, packets.Subscription{Filter: topic, QoS: 1})
		ret := mqtttest.Expect[*packets.Publish](late)
		if !ret.Retain {
			t.Fatal("retained message without RETAIN=1 [MQTT-3.3.1-8]")
		}
		checkProps(t, ret, want, 600)
		pub.Send(&packets.Publish{QoS: 1, PacketID: 2, Topic: topic, Retain: true}) // clear it
		mqtttest.Expect[*packets.Puback](pub)
	})
}

// Sections 3.1.2.5 and 3.3.2.3.3: a persistent 5.0 session (Clean Start 0,
// Session Expiry Interval above 0) gets the messages that arrived while it
// was offline with their properties, on any replica, with what is left of
// their Message Expiry Interval [MQTT-3.3.2-6]; one whose interval passed
// while it waited is not delivered [MQTT-3.3.2-5].
func TestV5_OfflineQueue_PropertiesAndExpiry_MQTT_3_3_2_5(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		topic, id := unique(t, "t"), unique(t, "c")
		expiry := uint32(3600)
		c := mqtttest.Dial(t, d.sub().Addr())
		c.MustConnect(&packets.Connect{ProtocolVersion: packets.Version5, ClientID: id, KeepAlive: 30,
			Properties: &packets.Properties{SessionExpiryInterval: &expiry}})
		c.Subscribe(1, packets.Subscription{Filter: topic + "/#", QoS: 1})
		c.Send(&packets.Disconnect{})
		c.ExpectClosed(waitTimeout)

		pub, _ := connect5(t, d.pub().Addr(), unique(t, "pub"), 30)
		want := props5(3)
		pub.Send(&packets.Publish{QoS: 1, PacketID: 1, Topic: topic + "/short", Payload: []byte("short"), Properties: props5(1)})
		mqtttest.Expect[*packets.Puback](pub)
		pub.Send(&packets.Publish{QoS: 1, PacketID: 2, Topic: topic + "/kept", Payload: []byte("kept"), Properties: want})
		mqtttest.Expect[*packets.Puback](pub)
		time.Sleep(1100 * time.Millisecond) // past the first message's expiry, 1 s into the second's

		back := mqtttest.Dial(t, d.pub().Addr())
		if ack := back.MustConnect(&packets.Connect{ProtocolVersion: packets.Version5, ClientID: id, KeepAlive: 30,
			Properties: &packets.Properties{SessionExpiryInterval: &expiry}}); !ack.SessionPresent {
			t.Fatal("session not present on reconnect")
		}
		fence := topic + "/fence"
		pub.Send(&packets.Publish{QoS: 1, PacketID: 3, Topic: fence, Payload: []byte(fence)})
		mqtttest.Expect[*packets.Puback](pub)
		got := back.PublishesUntil(fence)
		if len(got) != 1 || got[0].Topic != topic+"/kept" {
			var topics []string
			for _, p := range got {
				topics = append(topics, p.Topic)
			}
			t.Fatalf("got %v before the fence, want only %s/kept (the expired one dropped)", topics, topic)
		}
		checkProps(t, got[0], want, 2)
	})
}

// Section 3.1.3.2: the will properties travel with the will as a
// PUBLISH's do.
func TestV5_WillProperties_Travel_MQTT_3_1_3_9(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		topic := unique(t, "will")
		sub, _ := connect5(t, d.sub().Addr(), unique(t, "sub"), 30)
		sub.Subscribe(1, packets.Subscription{Filter: topic, QoS: 1})
		want := props5(600)
		c := mqtttest.Dial(t, d.pub().Addr())
		c.MustConnect(&packets.Connect{ProtocolVersion: packets.Version5, CleanSession: true, ClientID: unique(t, "c"), KeepAlive: 30,
			Will: &packets.Will{Topic: topic, Payload: []byte("gone"), QoS: 1, Properties: want}})
		c.Send(&packets.Disconnect{ReasonCode: packets.DisconnectWithWill})
		got := mqtttest.Expect[*packets.Publish](sub)
		checkProps(t, got, want, 600)
	})
}

// connectSession5 connects a 5.0 client with the given Clean Start and
// Session Expiry Interval (nil: absent) and returns it with its CONNACK.
func connectSession5(t *testing.T, addr, id string, cleanStart bool, expiry *uint32) (*mqtttest.Client, *packets.Connack) {
	t.Helper()
	c := mqtttest.Dial(t, addr)
	p := &packets.Connect{ProtocolVersion: packets.Version5, ClientID: id, CleanSession: cleanStart, KeepAlive: 30}
	if expiry != nil {
		p.Properties = &packets.Properties{SessionExpiryInterval: expiry}
	}
	return c, c.MustConnect(p)
}

// leave subscribes c to a filter, so that a stored session has something
// to keep, and disconnects it normally.
func leave(t *testing.T, c *mqtttest.Client, d *packets.Disconnect) {
	t.Helper()
	c.Subscribe(1, packets.Subscription{Filter: unique(t, "f"), QoS: 1})
	c.Send(d)
	c.ExpectClosed(waitTimeout)
}

// [MQTT-3.1.2-23] a session with Session Expiry Interval 0 (or none) ends
// with its connection; one with an interval is kept for it and no longer,
// on any replica; [MQTT-3.1.2-4] Clean Start 1 discards a stored session.
func TestV5_SessionExpiryAndCleanStart_MQTT_3_1_2_23(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		t.Run("interval 0 ends with the connection", func(t *testing.T) {
			id := unique(t, "c")
			c, _ := connectSession5(t, d.sub().Addr(), id, false, nil)
			leave(t, c, &packets.Disconnect{})
			if _, ack := connectSession5(t, d.pub().Addr(), id, false, u32(60)); ack.SessionPresent {
				t.Fatal("session present after a connection with Session Expiry Interval 0")
			}
		})
		t.Run("kept for its interval", func(t *testing.T) {
			id := unique(t, "c")
			c, _ := connectSession5(t, d.sub().Addr(), id, false, u32(60))
			leave(t, c, &packets.Disconnect{})
			c2, ack := connectSession5(t, d.pub().Addr(), id, false, u32(1))
			if !ack.SessionPresent {
				t.Fatal("session not present within its interval")
			}
			leave(t, c2, &packets.Disconnect{})
			time.Sleep(2500 * time.Millisecond) // past the 1 s interval the last connection set
			if _, ack := connectSession5(t, d.sub().Addr(), id, false, u32(60)); ack.SessionPresent {
				t.Fatal("session present after its Session Expiry Interval passed")
			}
		})
		t.Run("DISCONNECT sets interval 0", func(t *testing.T) {
			id := unique(t, "c")
			c, _ := connectSession5(t, d.sub().Addr(), id, false, u32(60))
			leave(t, c, &packets.Disconnect{Properties: &packets.Properties{SessionExpiryInterval: u32(0)}})
			if _, ack := connectSession5(t, d.pub().Addr(), id, false, u32(60)); ack.SessionPresent {
				t.Fatal("session present after DISCONNECT with Session Expiry Interval 0")
			}
		})
		t.Run("clean start discards", func(t *testing.T) {
			id := unique(t, "c")
			c, _ := connectSession5(t, d.sub().Addr(), id, false, u32(60))
			leave(t, c, &packets.Disconnect{})
			c2, ack := connectSession5(t, d.pub().Addr(), id, true, nil)
			if ack.SessionPresent {
				t.Fatal("session present on Clean Start 1 [MQTT-3.2.2-2]")
			}
			c2.Send(&packets.Disconnect{})
			c2.ExpectClosed(waitTimeout)
			if _, ack := connectSession5(t, d.sub().Addr(), id, false, u32(60)); ack.SessionPresent {
				t.Fatal("the discarded session came back")
			}
		})
		t.Run("DISCONNECT expiry after CONNECT 0 is a protocol error", func(t *testing.T) {
			c, _ := connectSession5(t, d.sub().Addr(), unique(t, "c"), true, nil)
			c.Send(&packets.Disconnect{Properties: &packets.Properties{SessionExpiryInterval: u32(60)}})
			expectDisconnect(t, c, packets.ProtocolError) // [MQTT-3.14.2-2]
		})
	})
}

// Section 3.2.2.3.2: a Session Expiry Interval above -session-expiry is
// cut to it, and CONNACK says so; Clean Start 1 does not change that: its
// new session is kept for the interval asked [MQTT-3.1.2-4], and CONNACK
// states none within the bound.
func TestV5_SessionExpiryCapped_ConnackStatesIt(t *testing.T) {
	ts := startServer(t, "-session-expiry", "10s")
	for _, tc := range []struct {
		name  string
		clean bool
		ask   uint32
		want  any
	}{{"capped", false, 3600, uint32(10)}, {"never capped", false, 0xFFFFFFFF, uint32(10)}, {"within", false, 5, "absent"}, {"clean start", true, 5, "absent"}, {"clean start capped", true, 3600, uint32(10)}} {
		t.Run(tc.name, func(t *testing.T) {
			_, ack := connectSession5(t, ts.Addr(), unique(t, "c"), tc.clean, u32(tc.ask))
			if got := deref(ack.Properties.SessionExpiryInterval); got != tc.want {
				t.Fatalf("CONNACK Session Expiry Interval %v, want %v", got, tc.want)
			}
		})
	}
}

// [MQTT-3.3.4-9] the server sends no more unacknowledged QoS 1 PUBLISH
// packets than the client's Receive Maximum; an acknowledgement lets the
// next one go.
func TestV5_ClientReceiveMaximum_MQTT_3_3_4_9(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		topic := unique(t, "t")
		two := uint16(2)
		sub := mqtttest.Dial(t, d.sub().Addr())
		sub.MustConnect(&packets.Connect{ProtocolVersion: packets.Version5, CleanSession: true, ClientID: unique(t, "sub"), KeepAlive: 30,
			Properties: &packets.Properties{ReceiveMaximum: &two}})
		sub.Subscribe(1, packets.Subscription{Filter: topic, QoS: 1})
		pub, _ := connect5(t, d.pub().Addr(), unique(t, "pub"), 30)
		for i := range 5 {
			pub.Send(&packets.Publish{QoS: 1, PacketID: uint16(i + 1), Topic: topic, Payload: []byte{byte('0' + i)}})
			mqtttest.Expect[*packets.Puback](pub)
		}
		first := mqtttest.Expect[*packets.Publish](sub)
		mqtttest.Expect[*packets.Publish](sub)
		if p, err := sub.Read(quietWindow); err == nil {
			t.Fatalf("a third unacknowledged PUBLISH arrived: %+v", p)
		}
		sub.Send(&packets.Puback{PacketID: first.PacketID})
		if p := mqtttest.Expect[*packets.Publish](sub); string(p.Payload) != "2" {
			t.Fatalf("after the PUBACK got %q, want the third message", p.Payload)
		}
	})
}
