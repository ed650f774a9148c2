package main

import (
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bridgemq/server/internal/mqtttest"
	"github.com/bridgemq/server/internal/redistest"
	"github.com/bridgemq/server/packets"
)

// ATTACK (unlucky operator): Redis restarted empty while clients stay
// connected. README: "Of two CONNECTs with one id ... exactly one stays
// connected"; "A session belongs to its user ... (live, or stored
// persistent) ... cannot be used under another". The README says an empty
// Redis loses stored sessions, not that live connections lose their owner
// and their exclusivity, nor that a session stored AFTER the restart has
// no owner.
func TestAttack_RedisRestartEmptyLiveSessions(t *testing.T) {
	pw := writePasswordFile(t, "alice", "mallory")
	rs := redistest.Start(t)
	args := []string{"-password-file", pw, "-allow-anonymous=false"}
	a := startRedisReplica(t, rs.URL(), "ra", args...)
	b := startRedisReplica(t, rs.URL(), "rb", args...)

	live := mqtttest.Dial(t, a.Addr())
	live.MustConnect(asUser("alice", "alice-live", true))
	stored := mqtttest.Dial(t, a.Addr())
	stored.MustConnect(asUser("alice", "alice-stored", false))
	stored.Subscribe(1, packets.Subscription{Filter: "alice/inbox", QoS: 1})

	rs.Restart(t)
	// Replica a registers its live clients again once it sees Redis back.
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	waitOnline(t, rdb, "alice-live", "ra", 10*time.Second)
	waitOnline(t, rdb, "alice-stored", "ra", 10*time.Second)

	// 1. another user takes alice's live client id on the other replica
	m := mqtttest.Dial(t, b.Addr())
	ack := m.Connect(asUser("mallory", "alice-live", true))
	if ack.ReturnCode == 0 {
		t.Errorf("mallory accepted with alice's live client id after the Redis restart")
		if live.Alive(2*time.Second) && m.Alive(2*time.Second) {
			t.Errorf("two connections with client id alice-live are open at once")
		}
	}
	// 2. alice's persistent session, stored after the restart, has no owner
	stored.Send(&packets.Disconnect{})
	stored.ExpectClosed(waitTimeout)
	p := mqtttest.Dial(t, a.Addr())
	p.MustConnect(asUser("alice", "alice-pub", true))
	p.PublishQoS1(1, "alice/inbox", "private")
	m2 := mqtttest.Dial(t, b.Addr())
	ack = m2.Connect(asUser("mallory", "alice-stored", false))
	if ack.ReturnCode == 0 {
		got := m2.Drain(500 * time.Millisecond)
		t.Errorf("mallory resumed alice's persistent session (present=%v) stored after the Redis restart and read %d of her messages", ack.SessionPresent, len(got))
	}
}
