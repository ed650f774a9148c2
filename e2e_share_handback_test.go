package main

// What a Shared Subscription member leaves when its connection ends with
// messages of the group unacknowledged or unsent (MQTT 5.0 section 4.8.2,
// for 3.1.1 members too): single node, and across two replicas with the
// member that goes away on one and the one that stays on the other.

import (
	"fmt"
	"testing"
	"time"

	"github.com/bridgemq/server/internal/mqtttest"
	"github.com/bridgemq/server/packets"
)

// handbackWindow is the -max-inflight of these tests: the member that goes
// away has at most this many of the group's messages in flight, and the
// rest of its share waits in its queue, unsent.
const handbackWindow = 8

// handbackArgs runs the deployments with a small inflight window.
var handbackArgs = []string{"-max-inflight", fmt.Sprint(handbackWindow)}

// readUnacked reads n PUBLISH packets from c and acknowledges none of
// them; it returns their payloads and packet ids.
func readUnacked(t *testing.T, c *mqtttest.Client, n int) (payloads []string, ids []uint16) {
	t.Helper()
	for range n {
		p := mqtttest.Expect[*packets.Publish](c)
		payloads = append(payloads, string(p.Payload))
		ids = append(ids, p.PacketID)
	}
	return payloads, ids
}

// untilFence publishes fence on topic from pub, which only the staying
// member can now take, and counts in seen what got carries before it:
// the staying member's copies that came after collectShared returned.
func untilFence(t *testing.T, pub *mqtttest.Client, topic string, got <-chan shareDelivery, seen map[string]int) {
	t.Helper()
	pub.PublishQoS1(60000, topic, "fence")
	for {
		select {
		case d := <-got:
			if d.payload == "fence" {
				return
			}
			seen[d.payload]++
		case <-time.After(waitTimeout):
			t.Fatal("the fence never reached the member that stayed")
		}
	}
}

// Section 4.8.2: a member whose session ends with its connection (a 3.1.1
// clean session) while it holds QoS 1 messages of the group, some sent and
// not acknowledged, the rest queued, does not lose them, however the
// connection ends: the other member, on the other replica, gets every
// message, each exactly once (it acknowledges all it gets: no DUP re-send
// is due).
func TestShare_CleanMemberGoesAwayUnacked_AnotherMemberGetsAll_MQTT_4_8_2(t *testing.T) {
	ways := []struct {
		name  string
		leave func(t *testing.T, d *deployment, gone *mqtttest.Client, id string)
	}{
		{"network drop", func(_ *testing.T, _ *deployment, gone *mqtttest.Client, _ string) { _ = gone.Conn.Close() }},
		{"DISCONNECT", func(_ *testing.T, _ *deployment, gone *mqtttest.Client, _ string) { gone.Send(&packets.Disconnect{}) }},
		{"takeover", func(t *testing.T, d *deployment, _ *mqtttest.Client, id string) {
			// [MQTT-3.1.4-2] a new clean connection with its client id, on
			// the other replica: the old session ends, and the new one is
			// no member of the group.
			c := mqtttest.Dial(t, d.servers[len(d.servers)-1].Addr())
			c.MustConnect(&packets.Connect{ProtocolVersion: packets.Version311, CleanSession: true, ClientID: id, KeepAlive: 30})
		}},
	}
	for _, way := range ways {
		t.Run(way.name, func(t *testing.T) {
			forEachDeployment(t, func(t *testing.T, d *deployment) {
				topic := unique(t, "t")
				filter := "$share/" + unique(t, "g") + "/" + topic
				got := make(chan shareDelivery, 8192)
				id := unique(t, "gone")
				gone := mqtttest.Dial(t, d.servers[0].Addr())
				gone.MustConnect(&packets.Connect{ProtocolVersion: packets.Version311, CleanSession: true, ClientID: id, KeepAlive: 30})
				if codes := gone.Subscribe(1, packets.Subscription{Filter: filter, QoS: 1}); codes[0] != packets.GrantedQoS1 {
					t.Fatalf("SUBACK %x", codes)
				}
				shareMember5(t, d.servers[len(d.servers)-1].Addr(), filter, 1, got)
				pub, _ := connect5(t, d.pub().Addr(), unique(t, "pub"), 30)
				const n = 200
				publishRange(pub, topic, 0, n)
				// Its window full, unacknowledged: the rest of its share is queued.
				readUnacked(t, gone, handbackWindow)
				way.leave(t, d, gone, id)
				seen, _ := collectShared(t, got, sharePayloads(0, n), 2)
				untilFence(t, pub, topic, got, seen)
				for i := range n {
					if k := seen[fmt.Sprint(i)]; k != 1 {
						t.Errorf("message %d reached the member that stayed %d times, want exactly once", i, k)
					}
				}
				if len(seen) != n {
					t.Errorf("the member that stayed got %d distinct messages, want %d", len(seen), n)
				}
				if handed := statSum(d, "bridge_shared_handed_back"); handed < handbackWindow {
					t.Errorf("%d messages handed back, want at least the %d in flight", handed, handbackWindow)
				}
				// Across replicas they went through the group's list in
				// Redis to the member on the other replica.
				if taken := statSum(d, "bridge_shared_taken_over"); len(d.servers) > 1 && taken < handbackWindow {
					t.Errorf("the other replica took %d handed-off messages from Redis, want at least %d", taken, handbackWindow)
				}
			}, handbackArgs...)
		})
	}
}

// Section 4.8.2: a persistent member (5.0, Session Expiry 300 s) that goes
// away does not keep the group's QoS 1 messages for its return, although
// the specification allows it to: they go to the other member at once,
// and its stored session no longer holds them, so that its return re-sends
// none of them (DUP=1) and the group gets each once from the server.
func TestShare_PersistentMemberHandsQoS1OverAtOnce_NotResentOnReturn_MQTT_4_8_2(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		topic, own := unique(t, "t"), unique(t, "own")
		filter := "$share/" + unique(t, "g") + "/" + topic
		got := make(chan shareDelivery, 8192)
		id := unique(t, "gone")
		expiry := uint32(300)
		gone, _ := connectSession5(t, d.servers[0].Addr(), id, false, &expiry)
		if codes := gone.Subscribe(1, packets.Subscription{Filter: filter, QoS: 1}, packets.Subscription{Filter: own, QoS: 1}); codes[0] != packets.GrantedQoS1 || codes[1] != packets.GrantedQoS1 {
			t.Fatalf("SUBACK %x", codes)
		}
		shareMember5(t, d.servers[len(d.servers)-1].Addr(), filter, 1, got)
		pub, _ := connect5(t, d.pub().Addr(), unique(t, "pub"), 30)
		const n = 200
		publishRange(pub, topic, 0, n)
		readUnacked(t, gone, handbackWindow)
		_ = gone.Conn.Close()
		seen, _ := collectShared(t, got, sharePayloads(0, n), 2)
		untilFence(t, pub, topic, got, seen)
		for i := range n {
			if k := seen[fmt.Sprint(i)]; k != 1 {
				t.Errorf("message %d reached the member that stayed %d times, want exactly once", i, k)
			}
		}
		back, ack := connectSession5(t, d.servers[len(d.servers)-1].Addr(), id, false, &expiry)
		if !ack.SessionPresent {
			t.Fatal("CONNACK session present 0, want the stored session")
		}
		pub.PublishQoS1(60001, own, "own fence")
		if resent := back.PublishesUntil("own fence"); len(resent) != 0 {
			t.Fatalf("the returning member got %d messages (first %q DUP %v), want none: the group's went to the other member", len(resent), resent[0].Payload, resent[0].Dup)
		}
	}, handbackArgs...)
}

// [MQTT-4.8.2-4] [MQTT-4.8.2-5]: a QoS 2 message of the group already sent
// to a member stays that member's when its connection breaks, PUBREC
// received or not: the other member never gets it, and the returning
// member gets the PUBREL of those it answered and the PUBLISH again
// (DUP=1) of the others. The QoS 2 messages still queued for it, never
// sent, go to the other member (section 4.8.2).
func TestShare_QoS2SentStaysWithMember_QueuedGoToAnother_MQTT_4_8_2_4_5(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		topic, own := unique(t, "t"), unique(t, "own")
		filter := "$share/" + unique(t, "g") + "/" + topic
		got := make(chan shareDelivery, 8192)
		id := unique(t, "gone")
		expiry := uint32(300)
		gone, _ := connectSession5(t, d.servers[0].Addr(), id, false, &expiry)
		if codes := gone.Subscribe(1, packets.Subscription{Filter: filter, QoS: 2}, packets.Subscription{Filter: own, QoS: 1}); codes[0] != packets.GrantedQoS2 {
			t.Fatalf("SUBACK %x", codes)
		}
		shareMember5(t, d.servers[len(d.servers)-1].Addr(), filter, 1, got)
		pub, _ := connect5(t, d.pub().Addr(), unique(t, "pub"), 30)
		const n, answered = 200, 3
		for i := range n {
			pub.Publish(uint16(i+1), 2, topic, fmt.Sprint(i), false)
		}
		// The window is full with exactly these: none completes.
		held, ids := readUnacked(t, gone, handbackWindow)
		for _, pid := range ids[:answered] {
			gone.Send(&packets.Pubrec{PacketID: pid})
			if rel := mqtttest.Expect[*packets.Pubrel](gone); rel.PacketID != pid {
				t.Fatalf("PUBREL %d, want %d", rel.PacketID, pid)
			}
		}
		_ = gone.Conn.Close()
		want := sharePayloads(0, n)
		for _, p := range held {
			delete(want, p)
		}
		seen, _ := collectShared(t, got, want, 2)
		untilFence(t, pub, topic, got, seen)
		for _, p := range held {
			if seen[p] != 0 {
				t.Errorf("QoS 2 message %s, sent to the member that left, reached the other member too [MQTT-4.8.2-5]", p)
			}
		}
		for p := range want {
			if seen[p] != 1 {
				t.Errorf("message %s reached the member that stayed %d times, want exactly once", p, seen[p])
			}
		}
		back, ack := connectSession5(t, d.servers[len(d.servers)-1].Addr(), id, false, &expiry)
		if !ack.SessionPresent {
			t.Fatal("CONNACK session present 0, want the stored session")
		}
		// [MQTT-4.8.2-4] its delivery is completed to this client.
		rels := map[uint16]bool{}
		var dups []string
		for range handbackWindow {
			switch p := relOrPublish(t, back).(type) {
			case *packets.Pubrel:
				rels[p.PacketID] = true
			case *packets.Publish:
				if !p.Dup || p.QoS != 2 {
					t.Fatalf("re-sent %q with DUP %v QoS %d, want DUP=1 QoS 2", p.Payload, p.Dup, p.QoS)
				}
				dups = append(dups, string(p.Payload))
			}
		}
		for _, pid := range ids[:answered] {
			if !rels[pid] {
				t.Errorf("no PUBREL %d re-sent for a message answered with PUBREC", pid)
			}
		}
		if fmt.Sprint(dups) != fmt.Sprint(held[answered:]) {
			t.Errorf("re-sent PUBLISHes %v, want %v", dups, held[answered:])
		}
	}, handbackArgs...)
}

// relOrPublish reads the next packet of a returning member, which must be
// a PUBREL or a PUBLISH.
func relOrPublish(t *testing.T, c *mqtttest.Client) packets.Packet {
	t.Helper()
	p := c.Next()
	switch p.(type) {
	case *packets.Pubrel, *packets.Publish:
	default:
		t.Fatalf("got %T %+v, want PUBREL or PUBLISH", p, p)
	}
	return p
}

// statSum adds up one statistic over the servers of d.
func statSum(d *deployment, key string) int64 {
	var n int64
	for _, s := range d.servers {
		n += s.Stats()[key]
	}
	return n
}
