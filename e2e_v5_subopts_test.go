package main

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/bridgemq/server/internal/mqtttest"
	"github.com/bridgemq/server/packets"
	"github.com/bridgemq/server/packets/packetstest"
)

// Subscription options (section 3.8.3.1) and Subscription Identifiers
// (section 3.8.2.1.2), each run on a single node and across two replicas:
// the subscriber is on the last replica, the other publishers on the
// first.

// publishesUntil reads what c receives until a PUBLISH with payload fence,
// acknowledging as a client does and skipping c's own acknowledgements,
// and returns the PUBLISHes before the fence.
func publishesUntil(t *testing.T, c *mqtttest.Client, fence string) []*packets.Publish {
	t.Helper()
	var got []*packets.Publish
	for {
		p, err := c.NextPublish(waitTimeout)
		if err != nil {
			t.Fatalf("waiting for %q: %v", fence, err)
		}
		if string(p.Payload) == fence {
			return got
		}
		got = append(got, p)
	}
}

// publishesUntilPuback is publishesUntil up to the PUBACK of packet id.
func publishesUntilPuback(t *testing.T, c *mqtttest.Client, id uint16) []*packets.Publish {
	t.Helper()
	var got []*packets.Publish
	for {
		switch p := c.Next().(type) {
		case *packets.Publish:
			if p.QoS == 1 {
				c.Send(&packets.Puback{PacketID: p.PacketID})
			}
			got = append(got, p)
		case *packets.Puback:
			if p.PacketID == id {
				return got
			}
		default:
			t.Fatalf("got %T %+v, want PUBLISH or PUBACK", p, p)
		}
	}
}

// subacks reads until n SUBACKs have come, acknowledging PUBLISHes, and
// returns the PUBLISHes that came meanwhile.
func subacks(t *testing.T, c *mqtttest.Client, n int) []*packets.Publish {
	t.Helper()
	var got []*packets.Publish
	for n > 0 {
		switch p := c.Next().(type) {
		case *packets.Publish:
			if p.QoS == 1 {
				c.Send(&packets.Puback{PacketID: p.PacketID})
			}
			got = append(got, p)
		case *packets.Suback:
			n--
		default:
			t.Fatalf("got %T %+v, want PUBLISH or SUBACK", p, p)
		}
	}
	return got
}

// describePubs lists the payloads of ps, for a failure message.
func describePubs(ps []*packets.Publish) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = fmt.Sprintf("%s(retain=%v ids=%v)", p.Payload, p.Retain, subIDs(p))
	}
	return out
}

// subIDs returns the Subscription Identifiers a PUBLISH carries.
func subIDs(p *packets.Publish) []uint32 {
	if p.Properties == nil {
		return nil
	}
	return p.Properties.SubscriptionIdentifiers
}

// [MQTT-3.8.3-3] with No Local the server does not send a client its own
// publications, though they travel through Redis like any other; another
// client's publication, from the other replica, still arrives. A second
// subscription without No Local overlapping the first still gets the own
// publication, at its own QoS [MQTT-3.3.5-1].
func TestV5_NoLocal_OwnPublicationsNotSent_MQTT_3_8_3_3(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		topic := unique(t, "nl")
		me, _ := connect5(t, d.sub().Addr(), unique(t, "me"), 30)
		me.Subscribe(1, packets.Subscription{Filter: topic + "/#", QoS: 1, NoLocal: true})
		other, _ := connect5(t, d.pub().Addr(), unique(t, "other"), 30)

		me.PublishQoS1(10, topic+"/a", "mine")
		other.PublishQoS1(1, topic+"/a", "theirs")
		other.PublishQoS1(2, topic+"/fence", "fence1")
		if got := publishesUntil(t, me, "fence1"); len(got) != 1 || string(got[0].Payload) != "theirs" {
			t.Fatalf("before the fence got %v, want only [theirs]", describePubs(got))
		}

		// An overlapping subscription without No Local at QoS 0: the own
		// publication goes through it alone, at QoS 0.
		me.Subscribe(2, packets.Subscription{Filter: topic + "/b", QoS: 0})
		me.Send(&packets.Publish{QoS: 1, PacketID: 11, Topic: topic + "/b", Payload: []byte("mine-b")})
		got := publishesUntilPuback(t, me, 11) // it may come before its PUBACK
		other.PublishQoS1(3, topic+"/fence", "fence2")
		got = append(got, publishesUntil(t, me, "fence2")...)
		if len(got) != 1 || string(got[0].Payload) != "mine-b" || got[0].QoS != 0 {
			t.Fatalf("before the fence got %v, want [mine-b] at QoS 0", describePubs(got))
		}
	})
}

// [MQTT-3.3.1-13] a subscription with Retain As Published gets live
// messages with the RETAIN flag they were published with; [MQTT-3.3.1-12]
// without it, RETAIN is 0 on live delivery. paho.golang publishes, from
// the other replica.
func TestV5_RetainAsPublished_MQTT_3_3_1_13(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		topic := unique(t, "rap")
		sub, _ := connect5(t, d.sub().Addr(), unique(t, "sub"), 30)
		sub.Subscribe(1,
			packets.Subscription{Filter: topic + "/kept/#", QoS: 1, RetainAsPublished: true},
			packets.Subscription{Filter: topic + "/plain/#", QoS: 1})
		pub := paho5(t, d.pub().Addr(), unique(t, "pub"), nil)
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		for _, m := range []struct {
			topic  string
			retain bool
		}{{"/kept/x", true}, {"/kept/y", false}, {"/plain/x", true}, {"/plain/fence", false}} {
			if _, err := pub.Publish(ctx, &paho.Publish{Topic: topic + m.topic, QoS: 1, Retain: m.retain, Payload: []byte(m.topic)}); err != nil {
				t.Fatalf("publish %s: %v", m.topic, err)
			}
		}
		got := publishesUntil(t, sub, "/plain/fence")
		want := []string{"/kept/x(retain=true ids=[])", "/kept/y(retain=false ids=[])", "/plain/x(retain=false ids=[])"}
		if g := describePubs(got); !slices.Equal(g, want) {
			t.Fatalf("got %v, want %v", g, want)
		}
	})
}

// [MQTT-3.3.1-9] Retain Handling 0 sends the retained messages on every
// SUBSCRIBE; [MQTT-3.3.1-10] 1 only when the subscription did not exist
// before; [MQTT-3.3.1-11] 2 never. The retained message was published on
// the other replica.
func TestV5_RetainHandling_MQTT_3_3_1_9(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		topic := unique(t, "rh")
		pub, _ := connect5(t, d.pub().Addr(), unique(t, "pub"), 30)
		pub.Publish(1, 1, topic+"/r", "kept", true)
		fenceOn(t, d.pub(), d.sub())() // the retained index has reached the subscriber's replica

		sub, _ := connect5(t, d.sub().Addr(), unique(t, "sub"), 30)
		n := uint16(0)
		for _, step := range []struct {
			name     string
			sub      packets.Subscription
			retained bool
		}{
			{"0 new", packets.Subscription{Filter: topic + "/#", QoS: 1}, true},
			{"0 existing", packets.Subscription{Filter: topic + "/#", QoS: 1}, true},
			{"1 existing", packets.Subscription{Filter: topic + "/#", QoS: 1, RetainHandling: 1}, false},
			{"1 new", packets.Subscription{Filter: topic + "/+", QoS: 1, RetainHandling: 1}, true},
			{"2 new", packets.Subscription{Filter: topic + "/r", QoS: 1, RetainHandling: 2}, false},
			{"2 existing", packets.Subscription{Filter: topic + "/r", QoS: 1, RetainHandling: 2}, false},
		} {
			n++
			sub.Subscribe(n, step.sub)
			fence := fmt.Sprintf("fence-%d", n)
			pub.Publish(n+100, 1, topic+"/fence", fence, false)
			got := publishesUntil(t, sub, fence)
			if want := map[bool]int{true: 1, false: 0}[step.retained]; len(got) != want || (want == 1 && (!got[0].Retain || string(got[0].Payload) != "kept")) {
				t.Fatalf("Retain Handling %s: got %v before the fence, want %d retained message(s)", step.name, describePubs(got), want)
			}
		}
	})
}

// [MQTT-3.3.4-3] [MQTT-3.3.4-4] a message matching two subscriptions
// with different identifiers is sent once with both; one matching only
// the subscription without an identifier carries none
// (section 3.8.2.1.2); the retained message sent on subscribe carries
// the identifier of its SUBSCRIBE alone, not those of older subscriptions
// it also matches, which did not cause it to flow (section 3.3.4). The
// subscriber is on the other replica
// from the publisher; a paho.golang subscriber (which keeps one identifier
// per message) gets its own.
func TestV5_SubscriptionIdentifiers_Overlapping_MQTT_3_3_4_3(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		topic := unique(t, "sid")
		pub, _ := connect5(t, d.pub().Addr(), unique(t, "pub"), 30)
		pub.Publish(1, 1, topic+"/ret", "retained", true)
		fenceOn(t, d.pub(), d.sub())()

		sub, _ := connect5(t, d.sub().Addr(), unique(t, "sub"), 30)
		for i, s := range []struct {
			filter string
			id     uint32
		}{{topic + "/#", 7}, {topic + "/+/x", 300}, {topic + "/n/#", 0}} {
			p := &packets.Subscribe{PacketID: uint16(i + 1), Subscriptions: []packets.Subscription{{Filter: s.filter, QoS: 1}}}
			if s.id != 0 {
				p.Properties = &packets.Properties{SubscriptionIdentifiers: []uint32{s.id}}
			}
			sub.Send(p)
		}
		retained := subacks(t, sub, 3)
		got := make(chan *paho.Publish, 16)
		pc := paho5(t, d.sub().Addr(), unique(t, "paho"), got)
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		pid := 9
		if _, err := pc.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: topic + "/a/#", QoS: 1}},
			Properties: &paho.SubscribeProperties{SubscriptionIdentifier: &pid}}); err != nil {
			t.Fatalf("paho.golang subscribe: %v", err)
		}
		for _, w := range []string{"/a/x", "/a/y", "/n/x"} {
			pub.Publish(2, 1, topic+w, w, false)
		}
		pub.Publish(3, 1, topic+"/fence", "fence", false)
		want := []string{"retained(retain=true ids=[7])", "/a/x(retain=false ids=[7 300])",
			"/a/y(retain=false ids=[7])", "/n/x(retain=false ids=[7 300])"}
		if g := describePubs(append(retained, publishesUntil(t, sub, "fence")...)); !slices.Equal(g, want) {
			t.Fatalf("got %v, want %v", g, want)
		}
		sub.Send(&packets.Subscribe{PacketID: 9, Subscriptions: []packets.Subscription{{Filter: topic + "/+", QoS: 1}},
			Properties: &packets.Properties{SubscriptionIdentifiers: []uint32{8}}})
		again := subacks(t, sub, 1)
		pub.Publish(4, 1, topic+"/fence", "fence2", false)
		again = append(again, publishesUntil(t, sub, "fence2")...)
		if g, want := describePubs(again), []string{"retained(retain=true ids=[8])"}; !slices.Equal(g, want) {
			t.Fatalf("on the second SUBSCRIBE got %v, want %v", g, want)
		}
		for _, w := range []string{"/a/x", "/a/y"} {
			m := receive(t, got)
			if string(m.Payload) != w || m.Properties.SubscriptionIdentifier == nil || *m.Properties.SubscriptionIdentifier != pid {
				t.Fatalf("paho.golang got %s with id %v, want %s with %d", m.Payload, deref(m.Properties.SubscriptionIdentifier), w, pid)
			}
		}
	})
}

// receive returns the next message a paho.golang client got.
func receive(t *testing.T, got <-chan *paho.Publish) *paho.Publish {
	t.Helper()
	select {
	case m := <-got:
		if m.Properties == nil {
			m.Properties = &paho.PublishProperties{}
		}
		return m
	case <-time.After(waitTimeout):
		t.Fatal("no message")
		return nil
	}
}

// [MQTT-3.3.4-3] the identifiers and options of a persistent session's
// subscriptions are kept with it: a message that arrived while it was
// offline, replayed when it comes back on the other replica, carries the
// identifier, and No Local still holds.
func TestV5_SubscriptionIdentifiers_KeptAcrossReconnect_MQTT_3_3_4_3(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		topic, id := unique(t, "keep"), unique(t, "c")
		expiry := uint32(3600)
		c, _ := connectSession5(t, d.sub().Addr(), id, false, &expiry)
		c.Send(&packets.Subscribe{PacketID: 1, Subscriptions: []packets.Subscription{{Filter: topic + "/#", QoS: 1, NoLocal: true}},
			Properties: &packets.Properties{SubscriptionIdentifiers: []uint32{42}}})
		mqtttest.Expect[*packets.Suback](c)
		c.Send(&packets.Disconnect{})
		c.ExpectClosed(waitTimeout)

		pub, _ := connect5(t, d.pub().Addr(), unique(t, "pub"), 30)
		pub.PublishQoS1(1, topic+"/offline", "offline")

		back, ack := connectSession5(t, d.pub().Addr(), id, false, &expiry)
		if !ack.SessionPresent {
			t.Fatal("session not present on reconnect")
		}
		back.Send(&packets.Publish{QoS: 1, PacketID: 5, Topic: topic + "/own", Payload: []byte("own")})
		got := publishesUntilPuback(t, back, 5)
		pub.PublishQoS1(2, topic+"/live", "live")
		pub.PublishQoS1(3, topic+"/fence", "fence")
		got = append(got, publishesUntil(t, back, "fence")...)
		want := []string{"offline(retain=false ids=[42])", "live(retain=false ids=[42])"}
		if g := describePubs(got); !slices.Equal(g, want) {
			t.Fatalf("got %v, want %v", g, want)
		}
	})
}

// Section 3.8.2.1.2: CONNACK says Subscription Identifiers are available;
// an identifier of 0 is a Protocol Error, answered DISCONNECT 0x82.
func TestV5_SubscriptionIdentifierZero_Disconnect0x82(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		c, ack := connect5(t, d.sub().Addr(), unique(t, "c"), 30)
		if p := ack.Properties; p == nil || p.SubscriptionIdentifierAvailable == nil || *p.SubscriptionIdentifierAvailable != 1 {
			t.Fatalf("CONNACK Subscription Identifier Available %v, want 1", deref(p.SubscriptionIdentifierAvailable))
		}
		// SUBSCRIBE id 1, properties: Subscription Identifier 0 (which
		// the encoder refuses to write), filter "a" at QoS 1.
		c.Write(packetstest.Packet(0x82, packetstest.U16(1),
			packetstest.Props(byte(packets.PropSubscriptionIdentifier), 0),
			packetstest.Str("a"), 1))
		expectDisconnect(t, c, packets.ProtocolError)
	})
}
