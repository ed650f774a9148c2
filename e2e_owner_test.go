package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/bridgemq/server/internal/mqtttest"
	"github.com/bridgemq/server/packets"
	"github.com/bridgemq/server/packets/packetstest"
)

// writePasswordFile writes a mosquitto_passwd file with each user's
// password equal to its name.
func writePasswordFile(t testing.TB, users ...string) string {
	t.Helper()
	var all []byte
	for _, u := range users {
		b, err := os.ReadFile(writeGeneratedPasswordFile(t, u, u))
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, b...)
	}
	path := filepath.Join(t.TempDir(), "passwd-all")
	if err := os.WriteFile(path, all, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func asUser(user, clientID string, clean bool) *packets.Connect {
	return &packets.Connect{ClientID: clientID, CleanSession: clean, KeepAlive: 30,
		UsernameFlag: true, Username: user, PasswordFlag: true, Password: []byte(user)}
}

// A session belongs to the user that created it: another user's CONNECT
// with its client id gets CONNACK 0x05 and leaves the session and the live
// connection untouched, on whichever replica it lands (issue 7, item 2).
func TestSession_AnotherUserCannotTakeSession_Connack0x05_Issue7_2(t *testing.T) {
	pw := writePasswordFile(t, "alice", "mallory")
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		id, topic := unique(t, "dev"), unique(t, "alice")
		alice := mqtttest.Dial(t, d.sub().Addr())
		alice.MustConnect(asUser("alice", id, false))
		alice.Subscribe(1, packets.Subscription{Filter: topic, QoS: 1})

		for _, clean := range []bool{false, true} {
			m := mqtttest.Dial(t, d.pub().Addr())
			if ack := m.Connect(asUser("mallory", id, clean)); ack.ReturnCode != packets.RefusedNotAuthorized || ack.SessionPresent {
				t.Fatalf("mallory (clean=%v) on alice's live session: CONNACK 0x%02x present=%v, want 0x05", clean, ack.ReturnCode, ack.SessionPresent)
			}
			m.ExpectClosed(waitTimeout)
		}
		// alice is still connected and still subscribed.
		p := mqtttest.Dial(t, d.pub().Addr())
		p.MustConnect(asUser("mallory", unique(t, "pub"), true))
		p.PublishQoS1(1, topic, "live")
		if got := alice.PublishesUntil("live"); len(got) != 0 {
			t.Fatalf("unexpected messages before the fence: %d", len(got))
		}
		alice.Send(&packets.Disconnect{})
		alice.ExpectClosed(waitTimeout)

		p.PublishQoS1(2, topic, "queued")
		m := mqtttest.Dial(t, d.pub().Addr())
		if ack := m.Connect(asUser("mallory", id, false)); ack.ReturnCode != packets.RefusedNotAuthorized {
			t.Fatalf("mallory on alice's stored session: CONNACK 0x%02x, want 0x05", ack.ReturnCode)
		}
		back := mqtttest.Dial(t, d.sub().Addr())
		if ack := back.MustConnect(asUser("alice", id, false)); !ack.SessionPresent {
			t.Fatal("alice's session was lost to mallory's attempt")
		}
		if got := back.PublishesUntil("queued"); len(got) != 0 {
			t.Fatalf("unexpected messages before the queued one: %d", len(got))
		}
	}, "-password-file", pw, "-allow-anonymous=false")
}

// A new persistent session receives only what is published after it
// subscribed [MQTT-4.5.0-1], on a broker with a history: run twice in a
// row on the same replicas and Redis, with the topics' earlier messages
// still in the streams (issue 7, item 3).
func TestSession_NewPersistentSessionNotReplayedHistory_Issue7_3_MQTT_4_5_0_1(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		topic := unique(t, "hist")
		pub := mqtttest.Dial(t, d.pub().Addr())
		pub.MustConnect(&packets.Connect{ClientID: unique(t, "pub"), CleanSession: true, KeepAlive: 30})
		pid := uint16(0)
		for round := range 2 {
			for i := range 5 {
				pid++
				pub.PublishQoS1(pid, topic, fmt.Sprintf("before-%d-%d", round, i))
			}
			id := unique(t, "new")
			s := mqtttest.Dial(t, d.sub().Addr())
			s.MustConnect(&packets.Connect{ClientID: id, KeepAlive: 30})
			s.Subscribe(1, packets.Subscription{Filter: topic, QoS: 1})
			s.Send(&packets.Disconnect{})
			s.ExpectClosed(waitTimeout)
			pid++
			pub.PublishQoS1(pid, topic, fmt.Sprintf("offline-%d", round))

			s = mqtttest.Dial(t, d.sub().Addr())
			if ack := s.MustConnect(&packets.Connect{ClientID: id, KeepAlive: 30}); !ack.SessionPresent {
				t.Fatalf("round %d: session not present", round)
			}
			if got := s.PublishesUntil(fmt.Sprintf("offline-%d", round)); len(got) != 0 {
				t.Fatalf("round %d: replayed %d messages from before the session subscribed, first %q", round, len(got), got[0].Payload)
			}
			s.Send(&packets.Disconnect{})
		}
	})
}

// Two CONNECTs with one client id racing on two replicas: exactly one
// connection stays, the other is closed [MQTT-3.1.4-2] (issue 7, item 7).
func TestSession_RacingConnectsOnTwoReplicasOneSurvives_Issue7_7_MQTT_3_1_4_2(t *testing.T) {
	d := startReplicas(t, 2)
	for _, clean := range []bool{true, false} {
		for round := range 20 {
			id := unique(t, "race")
			conns := []*mqtttest.Client{mqtttest.Dial(t, d.servers[0].Addr()), mqtttest.Dial(t, d.servers[1].Addr())}
			var wg sync.WaitGroup
			codes := make([]packets.ReasonCode, 2)
			for _, c := range conns {
				wg.Add(1)
				go func() {
					defer wg.Done()
					c.Send(&packets.Connect{ProtocolVersion: packets.Version311, ClientID: id, CleanSession: clean, KeepAlive: 30})
				}()
			}
			wg.Wait()
			acked := []bool{false, false}
			for i, c := range conns {
				// The loser may be closed before its CONNACK is written.
				p, err := c.Read(waitTimeout)
				if ack, ok := p.(*packets.Connack); err == nil && ok {
					codes[i], acked[i] = ack.ReturnCode, true
				}
			}
			// The loser is closed; the survivor answers a PINGREQ.
			open := 0
			deadline := time.Now().Add(3 * time.Second)
			for i, c := range conns {
				if !acked[i] {
					continue
				}
				_ = c.Conn.SetWriteDeadline(deadline)
				if _, err := c.Conn.Write(packetstest.Named("pingreq").Raw); err != nil {
					continue
				}
				_ = c.Conn.SetReadDeadline(deadline)
				p, err := c.ReadPacket()
				if err == nil {
					if _, ok := p.(*packets.Pingresp); !ok {
						t.Fatalf("connection %d: got %T, want PINGRESP", i, p)
					}
					open++
				}
			}
			if open != 1 {
				t.Fatalf("clean=%v round %d: %d connections open after racing CONNACKs %v, want exactly 1", clean, round, open, codes)
			}
			for _, c := range conns {
				_ = c.Conn.Close()
			}
		}
	}
}
