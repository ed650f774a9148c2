package main

import (
	"errors"
	"net"
	"testing"
	"time"

	"github.com/bridgemq/server/packets"
	"github.com/bridgemq/server/packets/packetstest"
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
			w := dialRaw(t, d.pub().Addr())
			w.mustConnect(asUser("alice", unique(t, "watch"), true))
			w.subscribe(1, packets.Subscription{Filter: topic + "/will", QoS: 1})
			alice := dialRaw(t, d.sub().Addr())
			c := asUser("alice", id, false)
			c.Will = &packets.Will{Topic: topic + "/will", Payload: []byte("alice-died"), QoS: 1}
			alice.mustConnect(c)
			alice.subscribe(1, packets.Subscription{Filter: topic, QoS: 1})

			m := dialRaw(t, d.sub().Addr()) // same replica as alice
			ack := m.connect(asUser("mallory", id, clean))
			if ack.ReturnCode != packets.RefusedNotAuthorized {
				t.Errorf("clean=%v: mallory got CONNACK 0x%02x, want 0x05", clean, ack.ReturnCode)
			}
			// alice must still be connected.
			p, err := alice.read(2 * time.Second)
			if err == nil {
				t.Errorf("clean=%v: alice got unexpected %T", clean, p)
			} else if !isTimeout(err) {
				t.Errorf("clean=%v: alice's live connection was closed by mallory's refused CONNECT: %v", clean, err)
			}
			if p, err := w.read(time.Second); err == nil {
				if pub, ok := p.(*packets.Publish); ok {
					t.Errorf("clean=%v: alice's will was published: %q", clean, pub.Payload)
				}
			}
		}
	}, "-password-file", pw, "-allow-anonymous=false")
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
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
		ca, cm := dialRaw(t, d.servers[0].Addr()), dialRaw(t, d.servers[1].Addr())
		done := make(chan struct{})
		go func() { ca.send(asUserV("alice", id, round%2 == 0)); close(done) }()
		cm.send(asUserV("mallory", id, round%2 == 0))
		<-done
		codes := map[string]int{}
		for name, c := range map[string]*rawClient{"alice": ca, "mallory": cm} {
			codes[name] = -1
			if p, err := c.read(12 * time.Second); err == nil {
				if ack, ok := p.(*packets.Connack); ok {
					codes[name] = int(ack.ReturnCode)
				}
			}
		}
		aliceOpen := codes["alice"] == 0 && ca.alive(2*time.Second)
		malloryOpen := codes["mallory"] == 0 && cm.alive(2*time.Second)
		if codes["alice"] == 0 && codes["mallory"] == 0 {
			bad++
			t.Errorf("round %d: both users accepted for one id (alice open %v, mallory open %v)", round, aliceOpen, malloryOpen)
		}
		_ = ca.conn.Close()
		_ = cm.conn.Close()
	}
	t.Logf("bad rounds %d/30", bad)
}

func asUserV(user, id string, clean bool) *packets.Connect {
	c := asUser(user, id, clean)
	c.ProtocolVersion = packets.Version311
	return c
}

// alive reports whether c answers a PINGREQ within d (PUBLISHes skipped).
func (c *rawClient) alive(d time.Duration) bool {
	deadline := time.Now().Add(d)
	_ = c.conn.SetWriteDeadline(deadline)
	if _, err := c.conn.Write(packetstest.Named("pingreq").Raw); err != nil {
		return false
	}
	for {
		_ = c.conn.SetReadDeadline(deadline)
		p, err := c.r.ReadPacket()
		if err != nil {
			return false
		}
		if _, ok := p.(*packets.Pingresp); ok {
			return true
		}
	}
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
			c := dialRaw(t, d.sub().Addr())
			c.mustConnect(mk(first, false))
			x := dialRaw(t, d.pub().Addr())
			if ack := x.connect(mk(other, false)); ack.ReturnCode != packets.RefusedNotAuthorized {
				t.Errorf("%s on %s's live session: 0x%02x", other, first, ack.ReturnCode)
			}
			c.send(&packets.Disconnect{})
			c.expectClosed(waitTimeout)
			x = dialRaw(t, d.pub().Addr())
			if ack := x.connect(mk(other, true)); ack.ReturnCode != packets.RefusedNotAuthorized {
				t.Errorf("%s (clean) on %s's stored session: 0x%02x", other, first, ack.ReturnCode)
			}
		}
	}, "-password-file", pw)
}
