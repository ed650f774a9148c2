package main

import (
	"testing"
	"time"

	"github.com/bridgemq/server/internal/mqtttest"
	"github.com/bridgemq/server/packets"
)

// A will with a Will Delay Interval waits for it [MQTT-3.1.3-9]: a client
// that stays away has its will published once the delay has passed, not
// before; one whose new connection arrives first (here on the other
// replica) has none published. Both connections end by a network failure,
// with no DISCONNECT.
func TestV5_WillDelay_MQTT_3_1_3_9(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		const delay = 2 * time.Second
		topic := unique(t, "wd")
		sub := mqtttest.Dial(t, d.sub().Addr())
		sub.MustConnect(&packets.Connect{ClientID: unique(t, "sub"), CleanSession: true, KeepAlive: 30})
		sub.Subscribe(1, packets.Subscription{Filter: topic + "/#", QoS: 1})
		connect := func(addr, id, will string) *mqtttest.Client {
			expiry, wd := uint32(60), uint32(delay/time.Second)
			c := mqtttest.Dial(t, addr)
			c.MustConnect(&packets.Connect{ProtocolVersion: packets.Version5, ClientID: id, KeepAlive: 30,
				Properties: &packets.Properties{SessionExpiryInterval: &expiry},
				Will: &packets.Will{Topic: topic + "/" + will, Payload: []byte(will), QoS: 1,
					Properties: &packets.Properties{WillDelayInterval: &wd}}})
			return c
		}
		backID := unique(t, "back")
		back := connect(d.pub().Addr(), backID, "back")
		away := connect(d.pub().Addr(), unique(t, "away"), "away")
		_ = back.Conn.Close()
		backLost := time.Now()
		_ = away.Conn.Close()
		awayLost := time.Now()
		// The client comes back within the delay, on the other replica,
		// with no will this time; it leaves with DISCONNECT.
		again := mqtttest.Dial(t, d.sub().Addr())
		again.SetVersion(packets.Version5)
		expiry := uint32(60)
		if ack := again.MustConnect(&packets.Connect{ProtocolVersion: packets.Version5, ClientID: backID, KeepAlive: 30,
			Properties: &packets.Properties{SessionExpiryInterval: &expiry}}); !ack.SessionPresent {
			t.Fatal("session not present on return")
		}
		if since := time.Since(backLost); since >= delay {
			t.Fatalf("came back after %v, not within the %v delay: the test proves nothing", since, delay)
		}
		got := sub.PublishesUntil("away")
		if waited := time.Since(awayLost); waited < delay {
			t.Errorf("the will came %v after its connection was lost, before its %v delay", waited, delay)
		}
		// The cancelled will would have been due at backLost+delay; each
		// node looks for due wills every 250 ms. Past that, a fence.
		time.Sleep(time.Until(backLost.Add(delay + time.Second)))
		pub := mqtttest.Dial(t, d.pub().Addr())
		pub.MustConnect(&packets.Connect{ClientID: unique(t, "pub"), CleanSession: true, KeepAlive: 30})
		pub.PublishQoS1(1, topic+"/fence", "fence")
		got = append(got, sub.PublishesUntil("fence")...)
		for _, p := range got {
			t.Errorf("got %s %q: the will of a client that came back within the delay was published", p.Topic, p.Payload)
		}
		again.Send(&packets.Disconnect{})
	})
}
