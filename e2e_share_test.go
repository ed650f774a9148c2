package main

// Shared Subscriptions (MQTT 5.0 section 4.8.2, from 3.1.1 clients too),
// single node and across two replicas on Redis.

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/bridgemq/server/internal/mqtttest"
	"github.com/bridgemq/server/packets"
)

// shareDelivery is one message a member of a group received.
type shareDelivery struct {
	member  int
	payload string
}

// shareMember5 connects a paho.golang client to addr and subscribes it to
// filter at QoS 1; what it receives goes to got, tagged member.
func shareMember5(t *testing.T, addr, filter string, member int, got chan<- shareDelivery) *paho.Client {
	t.Helper()
	in := make(chan *paho.Publish, 8192)
	c := paho5(t, addr, unique(t, fmt.Sprint("m", member)), in)
	go func() {
		for p := range in {
			got <- shareDelivery{member, string(p.Payload)}
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	ack, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: 1}}})
	if err != nil || len(ack.Reasons) != 1 || ack.Reasons[0] != 1 {
		t.Fatalf("subscribe %s: %+v, %v; want granted QoS 1", filter, ack, err)
	}
	return c
}

// shareMember311 connects a 3.1.1 Paho client to ep and subscribes it to
// filter at QoS 1; what it receives goes to got, tagged member.
func shareMember311(t *testing.T, ep endpoint, filter string, member int, got chan<- shareDelivery) mqtt.Client {
	t.Helper()
	c, _ := connectPaho(t, pahoOpts(ep, unique(t, fmt.Sprint("m", member)), true))
	tok := c.Subscribe(filter, 1, func(_ mqtt.Client, m mqtt.Message) { got <- shareDelivery{member, string(m.Payload())} })
	if !tok.WaitTimeout(waitTimeout) || tok.Error() != nil {
		t.Fatalf("subscribe %s: %v", filter, tok.Error())
	}
	// Paho keys the result by the filter without its "$share/{ShareName}/".
	for _, q := range tok.(*mqtt.SubscribeToken).Result() {
		if q != 1 {
			t.Fatalf("subscribe %s: SUBACK 0x%02x, want QoS 1", filter, q)
		}
	}
	return c
}

// publishRange publishes payloads from..to-1 on topic at QoS 1 from c,
// each acknowledged before the next.
func publishRange(c *mqtttest.Client, topic string, from, to int) {
	for i := from; i < to; i++ {
		c.PublishQoS1(uint16(i%65535+1), topic, fmt.Sprint(i))
	}
}

// collectShared reads got until every payload of want has arrived,
// failing if one has not within waitTimeout of the last arrival; it
// returns how often each payload arrived and each member's count.
func collectShared(t *testing.T, got <-chan shareDelivery, want map[string]bool, members int) (seen map[string]int, per []int) {
	t.Helper()
	seen = make(map[string]int)
	per = make([]int, members)
	missing := len(want)
	for missing > 0 {
		select {
		case d := <-got:
			seen[d.payload]++
			per[d.member]++
			if want[d.payload] && seen[d.payload] == 1 {
				missing--
			}
		case <-time.After(waitTimeout):
			t.Fatalf("%d of %d messages never reached the group (per member %v)", missing, len(want), per)
		}
	}
	return seen, per
}

// sharePayloads returns the set of payloads from..to-1.
func sharePayloads(from, to int) map[string]bool {
	out := make(map[string]bool, to-from)
	for i := from; i < to; i++ {
		out[fmt.Sprint(i)] = true
	}
	return out
}

// claimedTotal is the number of shared messages the replicas of d claimed
// in Redis (0 for a single node, which claims nothing).
func claimedTotal(d *deployment) int64 {
	var n int64
	for _, s := range d.servers {
		n += s.Stats()["bridge_shared_claimed"]
	}
	return n
}

// Section 4.8.2: each message matching a shared subscription goes to
// exactly one member of the group, whichever replicas the members are on
// (two on one replica, one on the other), and the members share the load:
// none gets more than 1.5× its fair share of 3,000 QoS 1 messages.
func TestShare_QoS1_ExactlyOnceAcrossGroup_FairShare_MQTT_4_8_2(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		topic := unique(t, "t")
		filter := "$share/" + unique(t, "g") + "/" + topic
		got := make(chan shareDelivery, 8192)
		first, last := d.servers[0], d.servers[len(d.servers)-1]
		shareMember5(t, first.Addr(), filter, 0, got)
		shareMember5(t, first.Addr(), filter, 1, got)
		shareMember5(t, last.Addr(), filter, 2, got)
		pub, _ := connect5(t, d.pub().Addr(), unique(t, "pub"), 30)
		const n = 3000
		before := claimedTotal(d)
		publishRange(pub, topic, 0, n) // the members' buffers hold them all
		seen, per := collectShared(t, got, sharePayloads(0, n), 3)
		for p, k := range seen {
			if k != 1 {
				t.Fatalf("message %s delivered %d times to the group, want once", p, k)
			}
		}
		for m, k := range per {
			if k > n/3*3/2 {
				t.Errorf("member %d got %d of %d messages, more than 1.5× its fair share %d (all: %v)", m, k, n, n/3, per)
			}
			// Stricter than the 1.5× bound, which sending every message to
			// the replica with two members would meet: no member starves.
			if k < n/3/2 {
				t.Errorf("member %d got %d of %d messages, less than half its fair share %d (all: %v)", m, k, n, n/3, per)
			}
		}
		if len(d.servers) > 1 {
			if claimed := claimedTotal(d) - before; claimed != n {
				t.Errorf("replicas claimed %d messages, want exactly %d", claimed, n)
			}
		}
		t.Logf("%s: per member %v", d.name, per)
	})
}

// Section 4.8.2: a member that leaves mid-stream stops taking messages; the
// others, on the other replica, get every message published after it
// left, exactly once.
func TestShare_MemberLeavesMidStream_OthersGetEverything(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		topic := unique(t, "t")
		filter := "$share/g/" + topic
		got := make(chan shareDelivery, 8192)
		first, last := d.servers[0], d.servers[len(d.servers)-1]
		// The leaver is its replica's only member: the other replica takes
		// over what was the leaver's share.
		leaver := shareMember5(t, last.Addr(), filter, 0, got)
		shareMember5(t, first.Addr(), filter, 1, got)
		shareMember5(t, first.Addr(), filter, 2, got)
		pub, _ := connect5(t, d.pub().Addr(), unique(t, "pub"), 30)
		const half = 500
		publishRange(pub, topic, 0, half)
		_, per := collectShared(t, got, sharePayloads(0, half), 3)
		if per[0] == 0 {
			t.Fatalf("the member about to leave got nothing before it left: %v", per)
		}
		members := last.Stats()["bridge_shared_members"]
		_ = leaver.Disconnect(&paho.Disconnect{})
		waitFor(t, waitTimeout, "the member's shared subscription to go", func() bool { return last.Stats()["bridge_shared_members"] == members-1 })
		publishRange(pub, topic, half, 2*half)
		seen, per := collectShared(t, got, sharePayloads(half, 2*half), 3)
		if per[0] != 0 {
			t.Errorf("the member that left got %d messages after it left", per[0])
		}
		for i := half; i < 2*half; i++ {
			if k := seen[fmt.Sprint(i)]; k != 1 {
				t.Fatalf("message %d delivered %d times after the member left, want once", i, k)
			}
		}
	})
}

// [MQTT-4.8.2-1] [MQTT-4.8.2-2]: a ShareName that is empty or holds a
// wildcard, or no filter after it, is refused: SUBACK 0x8F Topic Filter
// invalid for 5.0, 0x80 for 3.1.1; a valid one in the same SUBSCRIBE is
// granted.
func TestShare_InvalidShareNameRefused_MQTT_4_8_2_1(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		bad := []string{"$share//t", "$share/+/t", "$share/g#/t", "$share/g", "$share/g/", "$share/g/a/#/b"}
		subs := []packets.Subscription{{Filter: "$share/g/" + unique(t, "ok"), QoS: 1}}
		for _, f := range bad {
			subs = append(subs, packets.Subscription{Filter: f, QoS: 1})
		}
		c5, _ := connect5(t, d.sub().Addr(), unique(t, "c5"), 30)
		codes := c5.Subscribe(1, subs...)
		c3 := mqtttest.Dial(t, d.sub().Addr())
		c3.MustConnect(&packets.Connect{ProtocolVersion: packets.Version311, CleanSession: true, ClientID: unique(t, "c3"), KeepAlive: 30})
		codes3 := c3.Subscribe(1, subs...)
		if codes[0] != packets.GrantedQoS1 || codes3[0] != packets.GrantedQoS1 {
			t.Fatalf("valid shared subscription: SUBACK 5.0 %x, 3.1.1 %x; want granted QoS 1", codes[0], codes3[0])
		}
		for i, f := range bad {
			if codes[i+1] != packets.TopicFilterInvalid || codes3[i+1] != packets.SubackFailure {
				t.Errorf("%q: SUBACK 5.0 0x%02x, 3.1.1 0x%02x; want 0x8F and 0x80", f, codes[i+1], codes3[i+1])
			}
		}
	})
}

// A 3.1.1 client may join a group (as Mosquitto and EMQX allow), beside a
// 5.0 member on the other replica: each message reaches one of them.
func TestShare_V311MemberBeside5_ExactlyOnce(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		topic := unique(t, "t")
		filter := "$share/g/" + topic
		got := make(chan shareDelivery, 8192)
		shareMember311(t, d.servers[0], filter, 0, got)
		shareMember5(t, d.servers[len(d.servers)-1].Addr(), filter, 1, got)
		pub := mqtttest.Dial(t, d.pub().Addr())
		pub.MustConnect(&packets.Connect{ProtocolVersion: packets.Version311, CleanSession: true, ClientID: unique(t, "pub"), KeepAlive: 30})
		const n = 400
		publishRange(pub, topic, 0, n) // the members' buffers hold them all
		seen, per := collectShared(t, got, sharePayloads(0, n), 2)
		for p, k := range seen {
			if k != 1 {
				t.Fatalf("message %s delivered %d times, want once", p, k)
			}
		}
		if per[0] == 0 || per[1] == 0 {
			t.Fatalf("per member %v: both the 3.1.1 and the 5.0 member should take a share", per)
		}
	})
}

// A client with a shared and a non-shared subscription matching a message
// gets it through each, independently: every message through the
// non-shared one [MQTT-3.3.5-1], and its turn of the group's; the other
// member takes the rest of the group's.
func TestShare_SharedAndNonSharedOnOneClient_MQTT_3_3_5_1(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		topic := unique(t, "t")
		filter := "$share/g/" + topic
		got := make(chan shareDelivery, 8192)
		both := shareMember5(t, d.sub().Addr(), filter, 0, got)
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		if _, err := both.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: topic, QoS: 1}}}); err != nil {
			t.Fatal(err)
		}
		shareMember5(t, d.servers[0].Addr(), filter, 1, got)
		pub, _ := connect5(t, d.pub().Addr(), unique(t, "pub"), 30)
		const n = 300
		publishRange(pub, topic, 0, n)
		seen := make(map[string][2]int)
		for total := 0; total < 2*n; total++ {
			select {
			case g := <-got:
				c := seen[g.payload]
				c[g.member]++
				seen[g.payload] = c
			case <-time.After(waitTimeout):
				t.Fatalf("%d of %d copies arrived", total, 2*n)
			}
		}
		shared := [2]int{}
		for i := range n {
			c := seen[fmt.Sprint(i)]
			if c[0] < 1 || c[0]+c[1] != 2 {
				t.Fatalf("message %d: %d copies to the client with both, %d to the other member; want one non-shared and one shared copy", i, c[0], c[1])
			}
			shared[0] += c[0] - 1
			shared[1] += c[1]
		}
		if shared[0] == 0 || shared[1] == 0 {
			t.Fatalf("group messages per member %v: both members should take some", shared)
		}
	})
}

// Retained messages are not sent on a new shared subscription (section
// 4.8.2; section 3.3.1.3 sends them for a new non-shared one).
func TestShare_RetainedNotSentOnSharedSubscribe(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		topic := unique(t, "t")
		pub, _ := connect5(t, d.pub().Addr(), unique(t, "pub"), 30)
		pub.Publish(1, 1, topic, "retained", true)
		c, _ := connect5(t, d.sub().Addr(), unique(t, "c"), 30)
		if codes := c.Subscribe(1, packets.Subscription{Filter: "$share/g/" + topic, QoS: 1}); codes[0] != packets.GrantedQoS1 {
			t.Fatalf("SUBACK %x", codes)
		}
		pub.PublishQoS1(2, topic, "fence")
		if got := c.PublishesUntil("fence"); len(got) != 0 {
			t.Fatalf("a shared subscription got %q before the fence: retained messages are not sent on it", got[0].Payload)
		}
		// A non-shared subscription to the same topic gets it [MQTT-3.3.1-6].
		if codes := c.Subscribe(2, packets.Subscription{Filter: topic, QoS: 1}); codes[0] != packets.GrantedQoS1 {
			t.Fatalf("SUBACK %x", codes)
		}
		if p := mqtttest.Expect[*packets.Publish](c); string(p.Payload) != "retained" || !p.Retain {
			t.Fatalf("got %q retain %v, want the retained message", p.Payload, p.Retain)
		}
	})
}

// A persistent member keeps its shared subscription in its stored session
// and rejoins the group when it comes back, on the other replica; while no
// member was connected, the group's messages were not kept for it (the
// README's choice: a member counts only while connected). A 5.0 member's
// messages through the shared subscription carry its Subscription
// Identifier [MQTT-3.3.4-3].
func TestShare_PersistentMemberRejoinsOnReconnect_MQTT_3_3_4_3(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		topic := unique(t, "t")
		filter := "$share/g/" + topic
		id := unique(t, "member")
		expiry := uint32(300)
		c, _ := connectSession5(t, d.servers[0].Addr(), id, false, &expiry)
		c.Send(&packets.Subscribe{PacketID: 1, Subscriptions: []packets.Subscription{{Filter: filter, QoS: 1}},
			Properties: &packets.Properties{SubscriptionIdentifiers: []uint32{7}}})
		if ack := mqtttest.Expect[*packets.Suback](c); ack.ReturnCodes[0] != packets.GrantedQoS1 {
			t.Fatalf("SUBACK %x", ack.ReturnCodes)
		}
		c.Send(&packets.Disconnect{})
		c.ExpectClosed(waitTimeout)
		pub, _ := connect5(t, d.pub().Addr(), unique(t, "pub"), 30)
		pub.PublishQoS1(1, topic, "while away")
		back, ack := connectSession5(t, d.servers[len(d.servers)-1].Addr(), id, false, &expiry)
		if !ack.SessionPresent {
			t.Fatal("CONNACK session present 0, want the stored session")
		}
		for i := range 5 {
			pub.PublishQoS1(uint16(i+2), topic, fmt.Sprint(i))
		}
		got := back.PublishesUntil("4")
		if len(got) != 4 {
			t.Fatalf("rejoined member got %d messages before the last, want 4 (nothing from while it was away)", len(got))
		}
		for i, p := range got {
			if string(p.Payload) != fmt.Sprint(i) {
				t.Fatalf("message %d is %q, want %q", i, p.Payload, fmt.Sprint(i))
			}
			if p.Properties == nil || len(p.Properties.SubscriptionIdentifiers) != 1 || p.Properties.SubscriptionIdentifiers[0] != 7 {
				t.Fatalf("message %q without Subscription Identifier 7: %+v", p.Payload, p.Properties)
			}
		}
	})
}
