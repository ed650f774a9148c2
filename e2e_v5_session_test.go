package main

// End-to-end tests of the MQTT 5.0 session's life (sections 3.1.2.4 Clean
// Start, 3.1.2.11.2 Session Expiry Interval, 4.1): Clean Start and the
// Session Expiry Interval ask two things apart, single node and across
// two replicas (the session left on one replica, taken up on the other),
// each case twice over the same deployment so that the second round meets
// what the first left behind.

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bridgemq/server/internal/mqtttest"
	"github.com/bridgemq/server/internal/redistest"
	"github.com/bridgemq/server/packets"
)

// rounds is how often a test runs its scenario over one deployment.
const rounds = 2

func u32(v uint32) *uint32 { return &v }

// topicsUntil publishes a fence on fence from pub and returns the topics c
// received before it.
func topicsUntil(t *testing.T, pub, c *mqtttest.Client, id uint16, fence string) []string {
	t.Helper()
	pub.PublishQoS1(id, fence, fence)
	var got []string
	for _, p := range c.PublishesUntil(fence) {
		got = append(got, p.Topic)
	}
	return got
}

// [MQTT-3.1.2-4] a CONNECT with Clean Start 1 discards the stored session
// (its subscriptions and queued messages) and starts a new one, which a
// Session Expiry Interval above 0 keeps once the connection ends
// [MQTT-3.1.2-23]: CONNACK says Session Present 0 [MQTT-3.2.2-2] and no
// interval of its own (the client's is used, section 3.2.2.3.2), and a
// later Clean Start 0 finds the new session, with the new subscriptions
// and what was queued for them, and nothing of the old one.
func TestV5_CleanStartWithExpiry_NewSessionKept_MQTT_3_1_2_4(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		id, oldT, newT := unique(t, "c"), unique(t, "old"), unique(t, "new")
		pub, _ := connect5(t, d.pub().Addr(), unique(t, "pub"), 30)
		for round := 1; round <= rounds; round++ {
			old, _ := connectSession5(t, d.sub().Addr(), id, false, u32(60))
			old.Subscribe(1, packets.Subscription{Filter: oldT + "/#", QoS: 1})
			leave(t, old, &packets.Disconnect{})

			c, ack := connectSession5(t, d.pub().Addr(), id, true, u32(60))
			if ack.SessionPresent {
				t.Fatalf("round %d: Session Present 1 on Clean Start 1 [MQTT-3.2.2-2]", round)
			}
			if got := ack.Properties.SessionExpiryInterval; got != nil {
				t.Fatalf("round %d: CONNACK Session Expiry Interval %d, want absent: the 60 s asked are kept", round, *got)
			}
			c.Subscribe(1, packets.Subscription{Filter: newT + "/#", QoS: 1})
			leave(t, c, &packets.Disconnect{})

			pub.PublishQoS1(1, oldT+"/x", "old")
			pub.PublishQoS1(2, newT+"/x", "new")
			back, ack := connectSession5(t, d.sub().Addr(), id, false, u32(60))
			if !ack.SessionPresent {
				t.Fatalf("round %d: the Clean Start 1 session was not kept for its interval [MQTT-3.1.2-4] [MQTT-3.1.2-23]", round)
			}
			pub.PublishQoS1(3, oldT+"/y", "old, live")
			got := topicsUntil(t, pub, back, 4, newT+"/fence")
			if len(got) != 1 || got[0] != newT+"/x" {
				t.Fatalf("round %d: got %v, want only %s/x: the discarded session's subscription must be gone", round, got, newT)
			}
			back.Send(&packets.Disconnect{})
			back.ExpectClosed(waitTimeout)
		}
	})
}

// [MQTT-3.1.2-5] a CONNECT with Clean Start 0 resumes the stored session
// whatever its Session Expiry Interval: Session Present 1, its
// subscriptions kept, what was queued for it delivered. With an interval
// of 0 (or none) the session then ends with this connection
// [MQTT-3.1.2-23], by DISCONNECT or a dropped socket alike: the next
// CONNECT finds none, and nothing of it is left behind.
func TestV5_CleanStart0Expiry0_ResumesThenEnds_MQTT_3_1_2_5(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		id, topic := unique(t, "c"), unique(t, "t")
		pub, _ := connect5(t, d.pub().Addr(), unique(t, "pub"), 30)
		for round := 1; round <= rounds; round++ {
			c, _ := connectSession5(t, d.sub().Addr(), id, false, u32(60))
			c.Subscribe(1, packets.Subscription{Filter: topic + "/#", QoS: 1})
			leave(t, c, &packets.Disconnect{})
			pub.PublishQoS1(1, topic+"/queued", "queued")

			back, ack := connectSession5(t, d.pub().Addr(), id, false, nil)
			if !ack.SessionPresent {
				t.Fatalf("round %d: Session Present 0 on Clean Start 0 with a stored session [MQTT-3.1.2-5] [MQTT-3.2.2-3]", round)
			}
			if got := ack.Properties.SessionExpiryInterval; got != nil {
				t.Fatalf("round %d: CONNACK Session Expiry Interval %d, want absent", round, *got)
			}
			pub.PublishQoS1(2, topic+"/live", "live")
			got := topicsUntil(t, pub, back, 3, topic+"/fence")
			if fmt.Sprint(got) != fmt.Sprint([]string{topic + "/queued", topic + "/live"}) {
				t.Fatalf("round %d: got %v, want the queued message then the live one", round, got)
			}
			if round == 1 {
				back.Send(&packets.Disconnect{})
				back.ExpectClosed(waitTimeout)
			} else {
				_ = back.Conn.Close() // no DISCONNECT: the session ends all the same
			}

			// Past the end of that connection, whichever way it ended: a
			// CONNECT that would resume the session finds none.
			next, ack := connectSession5(t, d.sub().Addr(), id, false, u32(60))
			if ack.SessionPresent {
				t.Fatalf("round %d: the session outlived a connection with Session Expiry Interval 0 [MQTT-3.1.2-23]", round)
			}
			pub.PublishQoS1(4, topic+"/after", "after")
			next.Subscribe(2, packets.Subscription{Filter: topic + "/fence2", QoS: 1})
			if got := topicsUntil(t, pub, next, 5, topic+"/fence2"); len(got) != 0 {
				t.Fatalf("round %d: got %v from a session that ended", round, got)
			}
			next.Send(&packets.Disconnect{Properties: &packets.Properties{SessionExpiryInterval: u32(0)}})
			next.ExpectClosed(waitTimeout)
		}
	})
}

// Section 3.14.2.2.2: the Session Expiry Interval of a DISCONNECT
// replaces the CONNECT's for a session started with Clean Start 1 as for
// any other: 0 ends it [MQTT-3.1.2-23], a shorter one has it expire
// sooner, a longer one keeps it longer; without the property the
// CONNECT's interval stands.
func TestV5_CleanStartSession_DisconnectSetsExpiry_MQTT_3_14_2_2(t *testing.T) {
	cases := []struct {
		name       string
		connect    uint32
		disconnect *uint32 // nil: no property
		wait       time.Duration
		present    bool
	}{
		{"no property keeps the CONNECT's interval", 60, nil, 0, true},
		{"0 ends the session", 60, u32(0), 0, false},
		{"shorter interval expires it", 60, u32(1), 2500 * time.Millisecond, false},
		{"longer interval keeps it", 1, u32(60), 2500 * time.Millisecond, true},
	}
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				id := unique(t, "c")
				c, _ := connectSession5(t, d.sub().Addr(), id, true, u32(tc.connect))
				disc := &packets.Disconnect{}
				if tc.disconnect != nil {
					disc.Properties = &packets.Properties{SessionExpiryInterval: tc.disconnect}
				}
				leave(t, c, disc)
				time.Sleep(tc.wait)
				if _, ack := connectSession5(t, d.pub().Addr(), id, false, u32(60)); ack.SessionPresent != tc.present {
					t.Fatalf("Session Present %v, want %v", ack.SessionPresent, tc.present)
				}
			})
		}
	})
}

// [MQTT-3.1.2-23] a session whose replica dies with its connection open is
// kept by the survivor that reaps the replica for the session's own
// Session Expiry Interval, cut to -session-expiry, as a DISCONNECT would
// have kept it, not for -session-expiry whatever it asked; a 3.1.1
// persistent session for -session-expiry; one with interval 0 not at all.
// Twice on one Redis: the second dead replica's clients are the first's,
// back with what the first round left of their sessions.
func TestV5_DeadReplica_SessionKeptForItsOwnInterval_MQTT_3_1_2_23(t *testing.T) {
	rs := redistest.Start(t)
	b := startRedisReplica(t, rs.URL(), "node-b", "-node-ttl", "2s", "-session-expiry", "1h")
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	ctx := context.Background()
	const short = 3 * time.Second
	clients := []struct {
		name       string
		v311       bool
		cleanStart bool
		expiry     *uint32
		min, max   time.Duration // the reaped session's keys' TTL; 0, 0: none left
	}{
		{"own interval", false, false, u32(3), 0, short},
		{"clean start, own interval", false, true, u32(3), 0, short},
		{"long interval", false, false, u32(600), short, 600 * time.Second},
		{"never, cut to -session-expiry", false, false, u32(0xFFFFFFFF), 600 * time.Second, time.Hour},
		{"3.1.1 persistent", true, false, nil, 600 * time.Second, time.Hour},
		{"interval 0", false, false, nil, 0, 0},
	}
	ids := make([]string, len(clients))
	for i := range clients {
		ids[i] = unique(t, "c")
	}
	for round := 1; round <= rounds; round++ {
		node := fmt.Sprintf("node-a%d", round)
		a := mqtttest.StartProcess(t, rs.URL(), node, "-session-expiry", "1h")
		for i, cl := range clients {
			c := mqtttest.Dial(t, a.Addr())
			p := &packets.Connect{ProtocolVersion: packets.Version5, ClientID: ids[i], CleanSession: cl.cleanStart, KeepAlive: 60}
			if cl.v311 {
				p.ProtocolVersion = packets.Version311
			} else if cl.expiry != nil {
				p.Properties = &packets.Properties{SessionExpiryInterval: cl.expiry}
			}
			c.MustConnect(p)
			c.Subscribe(1, packets.Subscription{Filter: ids[i] + "/#", QoS: 1})
		}
		a.Kill(t)

		// Reaped once the survivor removed the dead node's records, its
		// last step: each client's session keys then have the expiry a
		// DISCONNECT would have given them (interval 0: none left).
		deadline := time.Now().Add(20 * time.Second)
		for rdb.Exists(ctx, "mqtt:node:"+node).Val() != 0 || rdb.SIsMember(ctx, "mqtt:nodes", node).Val() {
			if time.Now().After(deadline) {
				t.Fatalf("round %d: %s not reaped after 20 s", round, node)
			}
			time.Sleep(50 * time.Millisecond)
		}
		reaped := time.Now()
		for i, cl := range clients {
			for _, k := range []string{"mqtt:session:", "mqtt:sub:"} {
				ttl := rdb.PTTL(ctx, k+ids[i]).Val()
				if cl.max == 0 && ttl != -2 {
					t.Errorf("round %d, %s: %s left with TTL %v, want none left", round, cl.name, k, ttl)
				}
				if cl.max > 0 && (ttl <= cl.min || ttl > cl.max) {
					t.Errorf("round %d, %s: %s TTL %v, want (%v, %v]", round, cl.name, k, ttl, cl.min, cl.max)
				}
			}
		}
		if t.Failed() {
			t.FailNow()
		}

		// Past the short interval, on the survivor: the sessions kept for
		// it are gone, the others are there.
		time.Sleep(time.Until(reaped.Add(short + 500*time.Millisecond)))
		for i, cl := range clients {
			c := mqtttest.Dial(t, b.Addr())
			p := &packets.Connect{ProtocolVersion: packets.Version5, ClientID: ids[i], KeepAlive: 60,
				Properties: &packets.Properties{SessionExpiryInterval: u32(600)}}
			if cl.v311 {
				p.ProtocolVersion, p.Properties = packets.Version311, nil
			}
			want := cl.min >= short
			if ack := c.MustConnect(p); ack.SessionPresent != want {
				t.Errorf("round %d, %s: Session Present %v %v after the reap, want %v", round, cl.name,
					ack.SessionPresent, time.Since(reaped).Round(time.Millisecond), want)
			}
			c.Send(&packets.Disconnect{})
			c.ExpectClosed(waitTimeout)
		}
	}
}
