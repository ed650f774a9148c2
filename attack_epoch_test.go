package main

import (
	"testing"
	"time"

	"github.com/bridgemq/server/internal/mqtttest"
	"github.com/bridgemq/server/internal/redistest"
	"github.com/bridgemq/server/packets"
)

// ATTACK: Redis restarted empty; the replicas republish the QoS >= 1
// messages of the last 10 s (README "Redis blips"). A subscription made
// after those messages were published - after the restart, before the
// republish - must not receive them [MQTT-4.5.0-1]; README "A subscription
// receives only what is published after it".
// oldMessage is the age past which a replica treats a message as old
// (bridge's lateMessage, 1 s), with a margin.
const oldMessage = time.Second + 200*time.Millisecond

func TestAttack_RepublishAfterRedisRestartReachesLaterSubscribers(t *testing.T) {
	for round := range 2 {
		rs := redistest.Start(t)
		a := startRedisReplica(t, rs.URL(), "ea")
		b := startRedisReplica(t, rs.URL(), "eb")
		p := mqtttest.Dial(t, a.Addr())
		p.MustConnect(&packets.Connect{ClientID: "ep-pub", CleanSession: true, KeepAlive: 60})
		for i := range 5 {
			p.Publish(uint16(i+1), 1, "ep/t", "old", false)
		}
		published := time.Now()
		// A replica judges a message old, and holds it back from filters
		// made after it, once it is older than lateMessage (1 s, which
		// allows for the replicas' clocks) by its publisher's clock. The
		// republish may come as soon as a replica's subscription to the
		// restarted Redis is back, before the subscriptions below: CI
		// once saw it 30 ms after the publishes, and the live subscriber
		// rightly got those messages, young enough to have been in
		// flight. So Redis restarts only once they are old.
		time.Sleep(time.Until(published.Add(oldMessage)))
		ra, rb := a.Stats()["bridge_replays"], b.Stats()["bridge_replays"]
		rs.Restart(t)
		// Each replica noticed the restart: its subscription to Redis
		// came back and it replayed the gap.
		waitFor(t, waitTimeout, "both replicas to reconnect to the restarted Redis", func() bool {
			return a.Stats()["bridge_replays"] > ra && b.Stats()["bridge_replays"] > rb
		})
		live := mqtttest.Dial(t, b.Addr())
		live.MustConnect(&packets.Connect{ClientID: "ep-live", CleanSession: true, KeepAlive: 60})
		live.Subscribe(1, packets.Subscription{Filter: "ep/t", QoS: 1})
		pers := mqtttest.Dial(t, b.Addr())
		pers.MustConnect(&packets.Connect{ClientID: "ep-pers", KeepAlive: 60})
		pers.Subscribe(1, packets.Subscription{Filter: "ep/#", QoS: 1})
		pers.Send(&packets.Disconnect{})
		pers.ExpectClosed(waitTimeout)
		// The heartbeat's epoch check (every -node-ttl/3) finds the new
		// Redis and republishes the five messages.
		waitFor(t, 5*time.Second+waitTimeout, "replica ea to republish after the Redis restart", func() bool {
			return a.Stats()["bridge_republished_after_redis_restart"] >= 5
		})
		if got := live.Drain(time.Second); len(got) > 0 {
			t.Errorf("round %d: live subscriber made after the restart got %d messages published before it subscribed", round, len(got))
		}
		pers = mqtttest.Dial(t, a.Addr())
		pers.MustConnect(&packets.Connect{ClientID: "ep-pers", KeepAlive: 60})
		if got := pers.Drain(time.Second); len(got) > 0 {
			t.Errorf("round %d: persistent session created after the restart replayed %d messages published before it subscribed", round, len(got))
		}
	}
}
