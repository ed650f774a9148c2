package main

// End-to-end tests of retained messages for new subscriptions: every
// matching one is sent however many there are [MQTT-3.3.1-6], and a topic
// never goes back in time after its retained message.

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/bridgemq/server/packets"
)

// publishRetainedBulk publishes one retained QoS 1 message on each topic
// through a raw connection to ts, many PUBLISH packets per write, and waits
// for every PUBACK.
func publishRetainedBulk(t testing.TB, ts *testServer, topicNames []string) {
	t.Helper()
	c := dialRaw(t, ts.Addr())
	c.mustConnect(&packets.Connect{ClientID: unique(t, "bulk"), CleanSession: true, KeepAlive: 60})
	const chunk = 200
	var buf []byte
	for start := 0; start < len(topicNames); start += chunk {
		buf = buf[:0]
		end := min(start+chunk, len(topicNames))
		for i := start; i < end; i++ {
			var err error
			buf, err = packets.Append(buf, &packets.Publish{QoS: 1, Retain: true, PacketID: uint16(i-start) + 1,
				Topic: topicNames[i], Payload: []byte(strconv.Itoa(i))})
			if err != nil {
				t.Fatalf("encode: %v", err)
			}
		}
		c.write(buf)
		for range end - start {
			expect[*packets.Puback](c)
		}
	}
}

// fenceOn returns a function that publishes a live message through pub on a
// fresh topic and waits until a subscriber on sub has it: everything pub
// accepted before has then reached sub's replica (the retained index
// included).
func fenceOn(t testing.TB, pub, sub *testServer) func() {
	topic := unique(t, "fence")
	watcher := dialRaw(t, sub.Addr())
	watcher.mustConnect(&packets.Connect{ClientID: unique(t, "watch"), CleanSession: true, KeepAlive: 60})
	watcher.subscribe(1, packets.Subscription{Filter: topic, QoS: 0})
	p := dialRaw(t, pub.Addr())
	p.mustConnect(&packets.Connect{ClientID: unique(t, "fencepub"), CleanSession: true, KeepAlive: 60})
	return func() {
		t.Helper()
		p.publishQoS1(1, topic, "fence")
		if m := expect[*packets.Publish](watcher); m.Topic != topic {
			t.Fatalf("fence: got %q", m.Topic)
		}
	}
}

// Issue 5: with more retained messages than -max-queued-messages, a new
// subscription to a filter matching all of them gets every one, each with
// RETAIN=1 [MQTT-3.3.1-6] [MQTT-3.3.1-8], none counted as dropped for a full
// queue. (Before, a single node delivered a third of them and a replica
// -max-queued-messages.)
func TestRetained_AllSentBeyondMaxQueued_MQTT_3_3_1_6(t *testing.T) {
	const n = 20_000
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		base := unique(t, "t")
		names := make([]string, n)
		for i := range names {
			names[i] = fmt.Sprintf("%s/%d/%d", base, i%100, i)
		}
		fence := fenceOn(t, d.pub(), d.sub())
		publishRetainedBulk(t, d.pub(), names)
		fence()

		c := dialRaw(t, d.sub().Addr())
		c.mustConnect(&packets.Connect{ClientID: unique(t, "sub"), CleanSession: true, KeepAlive: 60})
		c.subscribe(1, packets.Subscription{Filter: base + "/#", QoS: 1})
		seen := make(map[string]bool, n)
		deadline := time.Now().Add(30 * time.Second)
		for len(seen) < n && time.Now().Before(deadline) {
			p, err := c.read(waitTimeout)
			if err != nil {
				break
			}
			m, ok := p.(*packets.Publish)
			if !ok {
				t.Fatalf("got %T, want PUBLISH", p)
			}
			if !m.Retain {
				t.Fatalf("message on %q without RETAIN=1 [MQTT-3.3.1-8]", m.Topic)
			}
			if seen[m.Topic] {
				t.Fatalf("retained message on %q sent twice", m.Topic)
			}
			seen[m.Topic] = true
			c.send(&packets.Puback{PacketID: m.PacketID})
		}
		if len(seen) != n {
			t.Fatalf("received %d of %d retained messages [MQTT-3.3.1-6]", len(seen), n)
		}
		c.expectSilent(quietWindow)
		for _, ts := range d.servers {
			if got := ts.srv.env.Stats.DroppedQueueFull.Load(); got != 0 {
				t.Errorf("%d messages counted as dropped for a full queue", got)
			}
		}
	}, "-max-queued-messages", "100")
}
