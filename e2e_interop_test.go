package main

// The scenarios of the Eclipse Paho MQTT 3.1.1 interoperability suite
// (paho.mqtt.testing, interoperability/client_test.py), rewritten as Go tests
// against a server whose ACL denies test/nosubscribe to anonymous clients,
// as the suite expects. The suite's own topic names are kept.

import (
	"fmt"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/bridgemq/server/internal/mqtttest"
	"github.com/bridgemq/server/packets"
)

// The interoperability suite's topics, wildcard topics and denied topic.
var (
	interopTopics      = []string{"TopicA", "TopicA/B", "Topic/C", "TopicA/C", "/TopicA"}
	interopWildtopics  = []string{"TopicA/+", "+/C", "#", "/#", "/+", "+/+", "TopicA/#"}
	interopNoSubscribe = "test/nosubscribe"
)

// interop runs f against every deployment started with the suite's ACL
// and any extra flags, and through HAProxy in front of three replicas,
// where the suite's clients land on different replicas.
func interop(t *testing.T, f func(t *testing.T, d *deployment), extra ...string) {
	args := append([]string{"-acl-file", "testdata/e2e_interop.acl"}, extra...)
	forEachDeployment(t, f, args...)
	t.Run("haproxy-3-replicas", func(t *testing.T) {
		f(t, startBehindHAProxy(t, 3, args...))
	})
}

func TestInterop_Basic(t *testing.T) { interop(t, interopBasic) }

func interopBasic(t *testing.T, d *deployment) {
	col := newCollector()
	c, _ := connectPaho(t, pahoOpts(d.sub(), unique(t, "myclientid"), true).SetOrderMatters(true))
	subscribe(t, c, interopTopics[0], 2, col)
	for qos, payload := range []string{"qos 0", "qos 1", "qos 2"} {
		publish(t, c, interopTopics[0], byte(qos), false, payload)
	}
	for qos, want := range []string{"qos 0", "qos 1", "qos 2"} {
		m := col.next(t)
		if string(m.Payload()) != want || m.Qos() != byte(qos) {
			t.Fatalf("got %q qos %d, want %q qos %d", m.Payload(), m.Qos(), want, qos)
		}
	}
	c.Disconnect(100)
}

func TestInterop_RetainedMessages(t *testing.T) { interop(t, interopRetainedMessages) }

func interopRetainedMessages(t *testing.T, d *deployment) {
	pub, _ := connectPaho(t, pahoOpts(d.pub(), unique(t, "pub"), true))
	for qos, topic := range interopTopics[1:4] {
		publish(t, pub, topic, byte(qos), true, "qos "+string(rune('0'+qos)))
	}
	col := newCollector()
	sub, _ := connectPaho(t, pahoOpts(d.sub(), unique(t, "sub"), true))
	subscribe(t, sub, interopWildtopics[5], 2, col)
	want := map[string]bool{interopTopics[1]: true, interopTopics[2]: true, interopTopics[3]: true}
	for range 3 {
		m := col.next(t)
		if !want[m.Topic()] || !m.Retained() {
			t.Fatalf("got %q retained=%v", m.Topic(), m.Retained())
		}
		delete(want, m.Topic())
	}
	col.quiet(t)

	// Clear the retained messages: a new subscriber gets none.
	for _, topic := range interopTopics[1:4] {
		publish(t, pub, topic, 1, true, "")
	}
	empty := newCollector()
	sub2, _ := connectPaho(t, pahoOpts(d.sub(), unique(t, "sub2"), true))
	subscribe(t, sub2, interopWildtopics[5], 2, empty)
	empty.quiet(t)
}

func TestInterop_ZeroLengthClientID(t *testing.T) { interop(t, interopZeroLengthClientID) }

func interopZeroLengthClientID(t *testing.T, d *deployment) {
	c := mqtt.NewClient(pahoOpts(d.pub(), "", true))
	if tok := c.Connect(); !tok.WaitTimeout(waitTimeout) || tok.Error() != nil {
		t.Fatalf("empty client id with clean session refused: %v", tok.Error())
	}
	c.Disconnect(100)
	c = mqtt.NewClient(pahoOpts(d.pub(), "", false))
	tok := c.Connect()
	if !tok.WaitTimeout(waitTimeout) {
		t.Fatal("no CONNACK")
	}
	if rc := tok.(*mqtt.ConnectToken).ReturnCode(); packets.ReasonCode(rc) != packets.RefusedIdentifierRejected {
		t.Fatalf("CONNACK 0x%02x, want 0x02", rc)
	}
}

func TestInterop_WillMessage(t *testing.T) { interop(t, interopWillMessage) }

func interopWillMessage(t *testing.T, d *deployment) {
	col := newCollector()
	watcher, _ := connectPaho(t, pahoOpts(d.sub(), unique(t, "watcher"), true))
	subscribe(t, watcher, interopTopics[2], 2, col)
	c := mqtttest.Dial(t, d.pub().Addr())
	c.MustConnect(&packets.Connect{ClientID: unique(t, "myclientid"), CleanSession: true, KeepAlive: 2,
		Will: &packets.Will{Topic: interopTopics[2], Payload: []byte("client not disconnected")}})
	_ = c.Conn.Close()
	if m := col.next(t); string(m.Payload()) != "client not disconnected" {
		t.Fatalf("got %q", m.Payload())
	}
}

func TestInterop_OfflineMessageQueueing(t *testing.T) { interop(t, interopOfflineMessageQueueing) }

func interopOfflineMessageQueueing(t *testing.T, d *deployment) {
	id := unique(t, "myclientid")
	a, _ := connectPaho(t, pahoOpts(d.sub(), id, false))
	subscribe(t, a, interopWildtopics[5], 2, newCollector())
	a.Disconnect(100)

	b, _ := connectPaho(t, pahoOpts(d.pub(), unique(t, "myclientid2"), true))
	for qos, topic := range interopTopics[1:4] {
		publish(t, b, topic, byte(qos), false, "qos "+string(rune('0'+qos)))
	}

	col := newCollector()
	connectPaho(t, pahoOpts(d.sub(), id, false).SetDefaultPublishHandler(col.handler))
	got := map[string]bool{}
	for len(got) < 2 {
		m := col.next(t)
		got[m.Topic()] = true
	}
	if !got[interopTopics[2]] && !got[interopTopics[3]] {
		t.Fatalf("queued QoS 1 and 2 messages missing: got %v", got)
	}
	// The QoS 0 message may or may not have been kept [MQTT-3.1.2-5].
	select {
	case m := <-col:
		got[m.Topic()] = true
	case <-time.After(quietWindow):
	}
	if !got[interopTopics[2]] || !got[interopTopics[3]] {
		t.Fatalf("got %v, want at least %q and %q", got, interopTopics[2], interopTopics[3])
	}
}

func TestInterop_OverlappingSubscriptions(t *testing.T) { interop(t, interopOverlappingSubscriptions) }

func interopOverlappingSubscriptions(t *testing.T, d *deployment) {
	col := newCollector()
	// No per-filter handler: Paho would call each matching one, so
	// every message goes through the default handler, once per copy.
	c, _ := connectPaho(t, pahoOpts(d.sub(), unique(t, "myclientid"), true).SetDefaultPublishHandler(col.handler))
	tok := c.SubscribeMultiple(map[string]byte{interopWildtopics[6]: 2, interopWildtopics[0]: 1}, nil)
	if !tok.WaitTimeout(waitTimeout) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	publish(t, c, interopTopics[3], 2, false, "overlapping topic filters")
	m := col.next(t)
	if m.Qos() != 2 {
		t.Fatalf("delivered at QoS %d, want 2 [MQTT-3.3.5-1]", m.Qos())
	}
	col.quiet(t)
}

func TestInterop_Keepalive(t *testing.T) { interop(t, interopKeepalive) }

func interopKeepalive(t *testing.T, d *deployment) {
	col := newCollector()
	watcher, _ := connectPaho(t, pahoOpts(d.sub(), unique(t, "watcher"), true))
	subscribe(t, watcher, interopTopics[4], 2, col)
	c := mqtttest.Dial(t, d.pub().Addr())
	c.MustConnect(&packets.Connect{ClientID: unique(t, "myclientid"), CleanSession: true, KeepAlive: 2,
		Will: &packets.Will{Topic: interopTopics[4], Payload: []byte("keepalive expiry")}})
	c.ExpectClosed(5 * time.Second)
	if m := col.next(t); string(m.Payload()) != "keepalive expiry" {
		t.Fatalf("got %q", m.Payload())
	}
}

func TestInterop_RedeliveryOnReconnect(t *testing.T) { interop(t, interopRedeliveryOnReconnect) }

func interopRedeliveryOnReconnect(t *testing.T, d *deployment) {
	id := unique(t, "myclientid")
	c := mqtttest.Dial(t, d.sub().Addr())
	c.MustConnect(&packets.Connect{ClientID: id, CleanSession: false, KeepAlive: 60})
	c.Subscribe(1, packets.Subscription{Filter: interopWildtopics[6], QoS: 2})
	c.Send(&packets.Publish{QoS: 1, PacketID: 2, Topic: interopTopics[1], Payload: []byte("m1")})
	c.Send(&packets.Publish{QoS: 2, PacketID: 3, Topic: interopTopics[3], Payload: []byte("m2")})
	// Read the acks of our publishes and the deliveries, acknowledging
	// none of the deliveries.
	var deliveries int
	for deliveries < 2 {
		switch p := c.Next().(type) {
		case *packets.Publish:
			deliveries++
		case *packets.Pubrec:
			c.Send(&packets.Pubrel{PacketID: p.PacketID})
		case *packets.Puback, *packets.Pubcomp:
		default:
			t.Fatalf("unexpected %T", p)
		}
	}
	c.Send(&packets.Disconnect{})
	c.ExpectClosed(waitTimeout)

	c = mqtttest.Dial(t, d.sub().Addr())
	c.MustConnect(&packets.Connect{ClientID: id, CleanSession: false, KeepAlive: 60})
	got := map[string]bool{}
	for len(got) < 2 {
		m := mqtttest.Expect[*packets.Publish](c)
		if !m.Dup {
			t.Errorf("redelivery of %q without DUP [MQTT-4.4.0-1]", m.Payload)
		}
		got[string(m.Payload)] = true
	}
	if !got["m1"] || !got["m2"] {
		t.Fatalf("redelivered %v, want m1 and m2", got)
	}
}

func TestInterop_SubscribeFailure(t *testing.T) { interop(t, interopSubscribeFailure) }

func interopSubscribeFailure(t *testing.T, d *deployment) {
	c, _ := connectPaho(t, pahoOpts(d.sub(), unique(t, "myclientid"), true))
	if code := subscribe(t, c, interopNoSubscribe, 2, newCollector()); packets.ReasonCode(code) != packets.SubackFailure {
		t.Fatalf("SUBACK 0x%02x for %q, want 0x80", code, interopNoSubscribe)
	}
}

func TestInterop_DollarTopics(t *testing.T) { interop(t, interopDollarTopics) }

func interopDollarTopics(t *testing.T, d *deployment) {
	col := newCollector()
	c, _ := connectPaho(t, pahoOpts(d.sub(), unique(t, "myclientid"), true).SetDefaultPublishHandler(col.handler))
	subscribe(t, c, interopWildtopics[5], 2, col)
	subscribe(t, c, interopWildtopics[2], 2, col)
	pub, _ := connectPaho(t, pahoOpts(d.pub(), unique(t, "pub"), true))
	publish(t, pub, "$"+interopTopics[1], 1, false, "")
	col.quiet(t)
}

func TestInterop_Unsubscribe(t *testing.T) { interop(t, interopUnsubscribe) }

func interopUnsubscribe(t *testing.T, d *deployment) {
	col := newCollector()
	b, _ := connectPaho(t, pahoOpts(d.sub(), unique(t, "myclientid"), true).SetDefaultPublishHandler(col.handler))
	for _, topic := range interopTopics[:3] {
		subscribe(t, b, topic, 2, col)
	}
	for _, topic := range interopTopics[:2] {
		if tok := b.Unsubscribe(topic); !tok.WaitTimeout(waitTimeout) || tok.Error() != nil {
			t.Fatalf("unsubscribe %q: %v", topic, tok.Error())
		}
	}
	a, _ := connectPaho(t, pahoOpts(d.pub(), unique(t, "myclientid2"), true))
	for _, topic := range interopTopics[:3] {
		publish(t, a, topic, 1, false, topic)
	}
	if m := col.next(t); m.Topic() != interopTopics[2] {
		t.Fatalf("got a message on %q after unsubscribing", m.Topic())
	}
	col.quiet(t)
}

// The offline-queueing scenario as the Paho suite runs it on a broker with
// a past: the same client ids, cleaned up with a clean session first, and
// the previous round's messages still in the streams. The session must get
// this round's messages and none of the last one's [MQTT-4.5.0-1] (issue 7,
// item 3: it failed through HAProxy once the cluster had any history).
func TestInterop_OfflineMessageQueueingTwiceOnOneBroker_Issue7_3(t *testing.T) {
	interop(t, interopOfflineQueueingTwice)
}

func interopOfflineQueueingTwice(t *testing.T, d *deployment) {
	id, id2 := unique(t, "myclientid"), unique(t, "myclientid2")
	for round := range 3 {
		for _, cid := range []string{id, id2} { // the suite's cleanup()
			c, _ := connectPaho(t, pahoOpts(d.pub(), cid, true))
			c.Disconnect(50)
		}
		a, _ := connectPaho(t, pahoOpts(d.sub(), id, false))
		subscribe(t, a, interopWildtopics[5], 2, newCollector())
		a.Disconnect(100)

		b, _ := connectPaho(t, pahoOpts(d.pub(), id2, true))
		for qos, topic := range interopTopics[1:4] {
			publish(t, b, topic, byte(qos), false, fmt.Sprintf("round %d qos %d", round, qos))
		}
		b.Disconnect(50)

		col := newCollector()
		c, _ := connectPaho(t, pahoOpts(d.sub(), id, false).SetDefaultPublishHandler(col.handler))
		subscribe(t, c, "fence/"+id, 1, col)
		publish(t, c, "fence/"+id, 1, false, "fence")
		got := map[string]bool{}
		for _, m := range col.until(t, "fence/"+id) {
			if want := fmt.Sprintf("round %d ", round); !strings.HasPrefix(string(m.Payload()), want) {
				t.Fatalf("round %d: got %q on %s, published before this session subscribed", round, m.Payload(), m.Topic())
			}
			got[string(m.Payload())] = true
		}
		for qos := 1; qos <= 2; qos++ {
			if want := fmt.Sprintf("round %d qos %d", round, qos); !got[want] {
				t.Fatalf("round %d: queued %q missing; got %v", round, want, got)
			}
		}
		c.Disconnect(50)
	}
}

// interopScenarios lists the scenarios above, for deployments beyond
// interop's (TestShardBus_Interop runs them on a Redis Cluster).
var interopScenarios = []struct {
	name string
	run  func(t *testing.T, d *deployment)
}{
	{"Basic", interopBasic},
	{"RetainedMessages", interopRetainedMessages},
	{"ZeroLengthClientID", interopZeroLengthClientID},
	{"WillMessage", interopWillMessage},
	{"OfflineMessageQueueing", interopOfflineMessageQueueing},
	{"OverlappingSubscriptions", interopOverlappingSubscriptions},
	{"Keepalive", interopKeepalive},
	{"RedeliveryOnReconnect", interopRedeliveryOnReconnect},
	{"SubscribeFailure", interopSubscribeFailure},
	{"DollarTopics", interopDollarTopics},
	{"Unsubscribe", interopUnsubscribe},
	{"OfflineMessageQueueingTwiceOnOneBroker_Issue7_3", interopOfflineQueueingTwice},
}
