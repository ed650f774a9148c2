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

// ATTACK: Redis refuses writes (maxmemory, noeviction) while a client with a
// will DISCONNECTs gracefully; Redis recovers; later its replica dies.
// [MQTT-3.1.2-10] the will is deleted on DISCONNECT, never published;
// README "Nothing is kept forever".
func TestAttack_DisconnectDuringOOMThenReplicaDies(t *testing.T) {
	rs := redistest.Start(t)
	a := mqtttest.StartProcess(t, rs.URL(), "oa", "-session-expiry", "4s")
	b := mqtttest.StartProcess(t, rs.URL(), "ob", "-session-expiry", "4s")
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr()})
	defer rdb.Close()
	ctx := context.Background()
	w := mqtttest.Dial(t, b.Addr())
	w.MustConnect(&packets.Connect{ClientID: "watcher", CleanSession: true, KeepAlive: 60})
	w.Subscribe(1, packets.Subscription{Filter: "will/#", QoS: 1})
	for _, clean := range []bool{false, true} {
		id := "gone-persistent"
		if clean {
			id = "gone-clean"
		}
		v := mqtttest.Dial(t, a.Addr())
		v.MustConnect(&packets.Connect{ClientID: id, CleanSession: clean, KeepAlive: 60, Will: &packets.Will{Topic: "will/" + id, Payload: []byte("must-not-publish"), QoS: 1}})
		v.Subscribe(1, packets.Subscription{Filter: "g/" + id, QoS: 1})
		rdb.ConfigSet(ctx, "maxmemory-policy", "noeviction")
		rdb.ConfigSet(ctx, "maxmemory", "1")
		v.Send(&packets.Disconnect{})
		v.ExpectClosed(waitTimeout)
		// oa's connection gauge drops after the connection's end (its
		// Detach, refused by Redis) has run.
		waitFor(t, waitTimeout, "oa to end "+id+"'s connection", func() bool {
			return metricValue(t, a.HTTPAddr(), "mqtt_connections") == 0
		})
		rdb.ConfigSet(ctx, "maxmemory", "0")
	}
	// Once Redis has memory again, every key of both sessions gets its TTL
	// (or has already expired): none is kept forever. A key without one
	// after -session-expiry (4s) and a margin never gets one.
	keys := []string{"mqtt:client:gone-persistent", "mqtt:session:gone-persistent", "mqtt:sub:gone-persistent", "mqtt:client:gone-clean", "mqtt:session:gone-clean"}
	deadline := time.Now().Add(5*time.Second + waitTimeout)
	for _, k := range keys {
		for rdb.PTTL(ctx, k).Val() == -1 && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if ttl := rdb.PTTL(ctx, k).Val(); ttl == -1 {
			t.Errorf("%s has no TTL after its client disconnected (kept forever): %v", k, rdb.HGetAll(ctx, k).Val())
		}
	}
	a.Kill(t)
	for {
		p, err := w.Read(6 * time.Second)
		if err != nil {
			break
		}
		if pub, ok := p.(*packets.Publish); ok {
			t.Errorf("will %q on %q published for a client that sent DISCONNECT [MQTT-3.1.2-10]", pub.Payload, pub.Topic)
		}
	}
}
