package main

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bridgemq/server/internal/mqtttest"
	"github.com/bridgemq/server/internal/redistest"
	"github.com/bridgemq/server/packets"
)

// ATTACK (unlucky operator): a replica with a stable -node-id (a StatefulSet
// pod name, a systemd unit) is SIGKILLed and restarted at once with the same
// id, before -node-ttl passes. README "Dead replicas ... the first survivor
// ... publishes the wills of its clients"; "Nothing is kept forever".
func TestAttack_KilledReplicaRestartedWithSameNodeID(t *testing.T) {
	rs := redistest.Start(t)
	a := mqtttest.StartProcess(t, rs.URL(), "k1", "-session-expiry", "5s")
	b := mqtttest.StartProcess(t, rs.URL(), "k2", "-session-expiry", "5s")
	w := mqtttest.Dial(t, b.Addr())
	w.MustConnect(&packets.Connect{ClientID: "watcher", CleanSession: true, KeepAlive: 60})
	w.Subscribe(1, packets.Subscription{Filter: "will/#", QoS: 1})
	v := mqtttest.Dial(t, a.Addr())
	v.MustConnect(&packets.Connect{ClientID: "victim", KeepAlive: 60, Will: &packets.Will{Topic: "will/victim", Payload: []byte("died"), QoS: 1}})
	v.Subscribe(1, packets.Subscription{Filter: "v/#", QoS: 1})
	a.Kill(t)
	mqtttest.StartProcess(t, rs.URL(), "k1", "-session-expiry", "5s") // same node id, at once
	wills := 0
	for {
		p, err := w.Read(8 * time.Second) // -node-ttl 2s
		if err != nil {
			break
		}
		if _, ok := p.(*packets.Publish); ok {
			wills++
		}
	}
	if wills != 1 {
		t.Errorf("will of the killed connection published %d times, want 1 [MQTT-3.1.2-8]", wills)
	}
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr()})
	defer rdb.Close()
	ctx := context.Background()
	t.Logf("client:victim = %v", rdb.HGetAll(ctx, "mqtt:client:victim").Val())
	for _, k := range []string{"mqtt:client:victim", "mqtt:session:victim", "mqtt:sub:victim"} {
		if rdb.PTTL(ctx, k).Val() == -1 {
			t.Errorf("%s has no TTL: the session of a connection that no longer exists is kept forever (-session-expiry 5s)", k)
		}
	}
}

// ATTACK: a replica is SIGKILLed and NOT restarted; the survivor reaps it.
// README "Nothing is kept forever ... a persistent session's client, sub: and
// session: keys get a TTL of -session-expiry when it goes offline ... so
// Redis removes an abandoned session whichever replica it was last on"; a
// clean session's client record "expires 5 minutes after the connection ends".
func TestAttack_ReapedSessionsKeptForever(t *testing.T) {
	rs := redistest.Start(t)
	a := mqtttest.StartProcess(t, rs.URL(), "ka", "-session-expiry", "3s")
	mqtttest.StartProcess(t, rs.URL(), "kb", "-session-expiry", "3s")
	p := mqtttest.Dial(t, a.Addr())
	p.MustConnect(&packets.Connect{ClientID: "persist1", KeepAlive: 60})
	p.Subscribe(1, packets.Subscription{Filter: "p/#", QoS: 1})
	c := mqtttest.Dial(t, a.Addr())
	c.MustConnect(&packets.Connect{ClientID: "clean1", CleanSession: true, KeepAlive: 60})
	a.Kill(t)
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr()})
	defer rdb.Close()
	ctx := context.Background()
	// The reap (after -node-ttl 2s) marks the clients offline and gives
	// their keys the -session-expiry TTL before it removes the node.
	waitReaped(t, rdb, "ka", 7*time.Second+waitTimeout)
	for _, k := range []string{"mqtt:client:persist1", "mqtt:session:persist1", "mqtt:sub:persist1", "mqtt:client:clean1"} {
		if ttl := rdb.PTTL(ctx, k).Val(); ttl == -1 {
			t.Errorf("%s exists with no TTL after its replica was reaped (kept forever)", k)
		}
	}
}
