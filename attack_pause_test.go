package main

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bridgemq/server/internal/mqtttest"
	"github.com/bridgemq/server/internal/redistest"
	"github.com/bridgemq/server/packets"
)

// ATTACK: after a replica was paused past -node-ttl and resumed, its
// zombie connection ends while the same client id is connected on another
// replica: the zombie's Detach stores its session over the live one and arms
// the session expiry on the live session's keys. README "Nothing is kept
// forever ... a persistent session's client, sub: and session: keys get a TTL
// of -session-expiry when it goes offline and lose it when it resumes";
// "A session belongs to its user" (the owner field lives in session:).
func TestAttack_ZombieDetachExpiresLiveSession(t *testing.T) {
	rs := redistest.Start(t)
	args := []string{"-session-expiry", "6s"}
	a := mqtttest.StartProcess(t, rs.URL(), "za", args...)
	b := mqtttest.StartProcess(t, rs.URL(), "zb", args...)
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr()})
	defer rdb.Close()
	ctx := context.Background()

	old := mqtttest.Dial(t, a.Addr())
	old.MustConnect(&packets.Connect{ClientID: "dev9", KeepAlive: 60})
	old.Subscribe(1, packets.Subscription{Filter: "old/#", QoS: 1})
	_ = a.Cmd.Process.Signal(syscall.SIGSTOP)
	waitReaped(t, rdb, "za", 5*time.Second+waitTimeout) // -node-ttl 2s: zb reaps za
	_ = a.Cmd.Process.Signal(syscall.SIGCONT)
	// za finds its liveness key gone and re-registers its live connection:
	// the client record is za's and online again, and za's node index
	// (deleted by the reap) names dev9.
	waitFor(t, waitTimeout, "za to re-register dev9 after resuming", func() bool {
		rec := rdb.HGetAll(ctx, "mqtt:client:dev9").Val()
		return rec["node"] == "za" && rec["state"] == "1" && rdb.HExists(ctx, "mqtt:node:za", "dev9").Val()
	})
	nw := mqtttest.Dial(t, b.Addr())
	nw.MustConnect(&packets.Connect{ClientID: "dev9", KeepAlive: 60, Will: &packets.Will{Topic: "will/dev9", Payload: []byte("x")}})
	nw.Subscribe(1, packets.Subscription{Filter: "new/#", QoS: 1})
	old.Send(&packets.Disconnect{}) // the zombie ends
	// za's connection gauge drops after the connection's end (its Detach)
	// has run.
	waitFor(t, waitTimeout, "za to end the zombie's connection", func() bool {
		return metricValue(t, a.HTTPAddr(), "mqtt_connections") == 0
	})
	if !nw.Alive(3 * time.Second) {
		t.Fatal("new connection closed")
	}
	for _, k := range []string{"mqtt:client:dev9", "mqtt:session:dev9", "mqtt:sub:dev9"} {
		if ttl := rdb.PTTL(ctx, k).Val(); ttl >= 0 {
			t.Errorf("%s of the session connected on zb has a TTL %v (session expiry armed while online)", k, ttl)
		}
	}
	t.Logf("sub:dev9 while new connection is live: %v", rdb.HGetAll(ctx, "mqtt:sub:dev9").Val())
	time.Sleep(7 * time.Second) // past -session-expiry, client still connected on zb
	if !nw.Alive(3 * time.Second) {
		t.Fatal("new connection closed")
	}
	for _, k := range []string{"mqtt:session:dev9", "mqtt:sub:dev9"} {
		if rdb.Exists(ctx, k).Val() == 0 {
			t.Errorf("%s deleted by Redis while its session is connected on zb", k)
		}
	}
}

// ATTACK: a replica paused longer than a takeover waits (5 s) but shorter
// than -node-ttl: the client connects elsewhere and is taken over without
// an answer. When the replica resumes, its reader still holds the backlog
// of messages for the superseded connection. README "one connection per
// client id ... QoS 2 exactly once": the superseded connection gets
// nothing after the new CONNACK, and the new one gets every message.
func TestAttack_PausedReplicaSendsNothingToSupersededConnection(t *testing.T) {
	rs := redistest.Start(t)
	// Not reaped during the pause: -node-ttl well above the takeover wait.
	a := mqtttest.StartProcess(t, rs.URL(), "pa", "-node-ttl", "20s")
	b := mqtttest.StartProcess(t, rs.URL(), "pb", "-node-ttl", "20s")
	old := mqtttest.Dial(t, b.Addr())
	old.MustConnect(&packets.Connect{ClientID: "dev-p", KeepAlive: 60})
	old.Subscribe(1, packets.Subscription{Filter: "ps/#", QoS: 2})
	_ = b.Cmd.Process.Signal(syscall.SIGSTOP)
	resumed := false
	defer func() {
		if !resumed {
			_ = b.Cmd.Process.Signal(syscall.SIGCONT)
		}
	}()
	nw := mqtttest.Dial(t, a.Addr())
	// The CONNACK waits out the unanswered takeover (5 s).
	nw.Send(&packets.Connect{ProtocolVersion: packets.Version311, ClientID: "dev-p", KeepAlive: 60})
	p, err := nw.Read(waitTimeout + 10*time.Second)
	if ack, ok := p.(*packets.Connack); err != nil || !ok || ack.ReturnCode != packets.Accepted || !ack.SessionPresent {
		t.Fatalf("new connection: %v %+v, want CONNACK accepted with the session present", err, p)
	}
	pub := mqtttest.Dial(t, a.Addr())
	pub.MustConnect(&packets.Connect{ClientID: "pub-p", CleanSession: true, KeepAlive: 60})
	// Enough that the paused replica's reader, which handles the
	// takeover request first and then these, would hand some to the old
	// connection before it is closed.
	const n = 300
	for i := range n {
		pub.PublishQoS1(uint16(i+1), "ps/x", fmt.Sprintf("m%d", i))
	}
	pub.PublishQoS1(n+1, "ps/x", "fence")
	if got := nw.PublishesUntil("fence"); len(got) != n {
		t.Fatalf("new connection got %d messages before the fence, want %d", len(got), n)
	}
	_ = b.Cmd.Process.Signal(syscall.SIGCONT)
	resumed = true
	_, got := old.ExpectClosed(waitTimeout + 10*time.Second)
	for _, p := range got {
		if pp, ok := p.(*packets.Publish); ok {
			t.Errorf("superseded connection got PUBLISH %s %q after its session moved", pp.Topic, pp.Payload)
		}
	}
	if !nw.Alive(time.Second) {
		t.Fatal("new connection closed")
	}
}
