package main

import (
	"testing"
	"time"

	"github.com/bridgemq/server/internal/mqtttest"
	"github.com/bridgemq/server/packets"
)

// ATTACK 1: README "A session belongs to its user ... that CONNECT gets
// CONNACK 0x05 and changes nothing (neither the stored session nor the live
// connection)". The shipped test puts mallory on the other replica; here
// mallory connects to the SAME replica as alice's live connection.
func TestAttack_OwnerSameReplicaKicksLiveConnection(t *testing.T) {
	pw := writePasswordFile(t, "alice", "mallory")
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		for _, clean := range []bool{false, true} {
			id, topic := unique(t, "dev"), unique(t, "alice")
			w := mqtttest.Dial(t, d.pub().Addr())
			w.MustConnect(asUser("alice", unique(t, "watch"), true))
			w.Subscribe(1, packets.Subscription{Filter: topic + "/will", QoS: 1})
			alice := mqtttest.Dial(t, d.sub().Addr())
			c := asUser("alice", id, false)
			c.Will = &packets.Will{Topic: topic + "/will", Payload: []byte("alice-died"), QoS: 1}
			alice.MustConnect(c)
			alice.Subscribe(1, packets.Subscription{Filter: topic, QoS: 1})

			m := mqtttest.Dial(t, d.sub().Addr()) // same replica as alice
			ack := m.Connect(asUser("mallory", id, clean))
			if ack.ReturnCode != packets.RefusedNotAuthorized {
				t.Errorf("clean=%v: mallory got CONNACK 0x%02x, want 0x05", clean, ack.ReturnCode)
			}
			// alice must still be connected.
			p, err := alice.Read(2 * time.Second)
			if err == nil {
				t.Errorf("clean=%v: alice got unexpected %T", clean, p)
			} else if !mqtttest.IsTimeout(err) {
				t.Errorf("clean=%v: alice's live connection was closed by mallory's refused CONNECT: %v", clean, err)
			}
			if p, err := w.Read(time.Second); err == nil {
				if pub, ok := p.(*packets.Publish); ok {
					t.Errorf("clean=%v: alice's will was published: %q", clean, pub.Payload)
				}
			}
		}
	}, "-password-file", pw, "-allow-anonymous=false")
}

// ATTACK: two users racing for a fresh client id on two replicas. Whoever
// wins, the other user must get 0x05 or be closed before its CONNACK; the
// winner's connection must not be taken over by the other user.
func TestAttack_OwnerRaceTwoUsers(t *testing.T) {
	pw := writePasswordFile(t, "alice", "mallory")
	d := startReplicas(t, 2, "-password-file", pw, "-allow-anonymous=false")
	bad := 0
	for round := range 30 {
		id := unique(t, "own-race")
		ca, cm := mqtttest.Dial(t, d.servers[0].Addr()), mqtttest.Dial(t, d.servers[1].Addr())
		done := make(chan struct{})
		go func() { ca.Send(asUserV("alice", id, round%2 == 0)); close(done) }()
		cm.Send(asUserV("mallory", id, round%2 == 0))
		<-done
		codes := map[string]int{}
		for name, c := range map[string]*mqtttest.Client{"alice": ca, "mallory": cm} {
			codes[name] = -1
			if p, err := c.Read(12 * time.Second); err == nil {
				if ack, ok := p.(*packets.Connack); ok {
					codes[name] = int(ack.ReturnCode)
				}
			}
		}
		aliceOpen := codes["alice"] == 0 && ca.Alive(2*time.Second)
		malloryOpen := codes["mallory"] == 0 && cm.Alive(2*time.Second)
		if codes["alice"] == 0 && codes["mallory"] == 0 {
			bad++
			t.Errorf("round %d: both users accepted for one id (alice open %v, mallory open %v)", round, aliceOpen, malloryOpen)
		}
		_ = ca.Conn.Close()
		_ = cm.Conn.Close()
	}
	t.Logf("bad rounds %d/30", bad)
}

func asUserV(user, id string, clean bool) *packets.Connect {
	c := asUser(user, id, clean)
	c.ProtocolVersion = packets.Version311
	return c
}

// ATTACK: "Anonymous is a user of its own": anonymous vs named, both ways,
// live and stored, on the other replica (where the claim path checks the
// owner) - with a password file and anonymous allowed.
func TestAttack_OwnerAnonymousVsNamed(t *testing.T) {
	pw := writePasswordFile(t, "alice")
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		anon := func(id string, clean bool) *packets.Connect {
			return &packets.Connect{ClientID: id, CleanSession: clean, KeepAlive: 60}
		}
		for _, first := range []string{"anon", "alice"} {
			id := unique(t, "av")
			mk := func(who string, clean bool) *packets.Connect {
				if who == "anon" {
					return anon(id, clean)
				}
				return asUser("alice", id, clean)
			}
			other := map[string]string{"anon": "alice", "alice": "anon"}[first]
			c := mqtttest.Dial(t, d.sub().Addr())
			c.MustConnect(mk(first, false))
			x := mqtttest.Dial(t, d.pub().Addr())
			if ack := x.Connect(mk(other, false)); ack.ReturnCode != packets.RefusedNotAuthorized {
				t.Errorf("%s on %s's live session: 0x%02x", other, first, ack.ReturnCode)
			}
			c.Send(&packets.Disconnect{})
			c.ExpectClosed(waitTimeout)
			x = mqtttest.Dial(t, d.pub().Addr())
			if ack := x.Connect(mk(other, true)); ack.ReturnCode != packets.RefusedNotAuthorized {
				t.Errorf("%s (clean) on %s's stored session: 0x%02x", other, first, ack.ReturnCode)
			}
		}
	}, "-password-file", pw)
}
