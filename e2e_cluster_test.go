package main

// Conformance checks through HAProxy in front of three replicas: the proxy
// deals connections round robin, so consecutive clients land on different
// replicas, and each test checks in Redis (mqtt:client:<id> node) that the
// clients it means to spread really were on different replicas.

import (
	"context"
	"fmt"
	"testing"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/redis/go-redis/v9"

	"github.com/bridgemq/server/internal/mqtttest"
	"github.com/bridgemq/server/packets"
)

// nodeOf returns the replica that Redis says clientID is connected to.
func (d *deployment) nodeOf(t testing.TB, clientID string) string {
	t.Helper()
	if d.redis == nil {
		t.Fatalf("deployment %s: no Redis to read mqtt:client:%s from", d.name, clientID)
	}
	rdb := redis.NewClient(&redis.Options{Addr: d.redis.Addr()})
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	rec, err := rdb.HGetAll(ctx, "mqtt:client:"+clientID).Result()
	if err != nil {
		t.Fatalf("read mqtt:client:%s: %v", clientID, err)
	}
	if rec["state"] != "1" || rec["node"] == "" {
		t.Fatalf("mqtt:client:%s = %v, want state 1 and a node", clientID, rec)
	}
	return rec["node"]
}

// proxy is the load balancer in front of the replicas, where every client
// of the tests through HAProxy connects.
func (d *deployment) proxy(t testing.TB) endpoint {
	t.Helper()
	if d.front == nil {
		t.Fatalf("deployment %s: no load balancer in front of its replicas", d.name)
	}
	return d.front
}

// paho connects a Paho client through the proxy and returns it with the
// replica it landed on.
func (d *deployment) paho(t testing.TB, clientID string, clean bool) (mqtt.Client, string) {
	t.Helper()
	cl, _ := connectPaho(t, pahoOpts(d.proxy(t), clientID, clean))
	return cl, d.nodeOf(t, clientID)
}

// raw connects a raw client through the proxy with p and returns it, its
// CONNACK and the replica it landed on.
func (d *deployment) raw(t testing.TB, p *packets.Connect) (*mqtttest.Client, *packets.Connack, string) {
	t.Helper()
	rc := mqtttest.Dial(t, d.proxy(t).Addr())
	ack := rc.MustConnect(p)
	return rc, ack, d.nodeOf(t, p.ClientID)
}

// mustDiffer fails unless every node is distinct: the test is about clients
// on different replicas.
func mustDiffer(t testing.TB, nodes ...string) {
	t.Helper()
	seen := map[string]bool{}
	for _, n := range nodes {
		if seen[n] {
			t.Fatalf("clients landed on replicas %v: want all different (HAProxy round robin)", nodes)
		}
		seen[n] = true
	}
}

func TestCluster_ThroughHAProxyThreeReplicas_QoS2ExactlyOnce_MQTT_4_3_3_2(t *testing.T) {
	c := startBehindHAProxy(t, 3)
	topic := unique(t, "qos2")
	col := newCollector()
	sub, subNode := c.paho(t, unique(t, "sub"), true)
	if code := subscribe(t, sub, topic, 2, col); code != 2 {
		t.Fatalf("SUBACK %d, want 2", code)
	}
	pub, pubNode := c.paho(t, unique(t, "pub"), true)
	mustDiffer(t, subNode, pubNode)
	publish(t, pub, topic, 2, false, "once")
	m := col.next(t)
	if string(m.Payload()) != "once" || m.Qos() != 2 {
		t.Fatalf("got %q at QoS %d, want \"once\" at QoS 2", m.Payload(), m.Qos())
	}
	col.quiet(t)
}

func TestCluster_ThroughHAProxyThreeReplicas_RetainedReadOnEveryReplica_MQTT_3_3_1_6(t *testing.T) {
	c := startBehindHAProxy(t, 3)
	topic := unique(t, "retained")
	pub, pubNode := c.paho(t, unique(t, "pub"), true)
	publish(t, pub, topic+"/a", 1, true, "kept")
	pub.Disconnect(50)

	// Three later clients, one per replica, each get the retained message
	// when they subscribe, through an exact and a wildcard filter.
	nodes := []string{pubNode}
	for i, filter := range []string{topic + "/a", topic + "/#", topic + "/+"} {
		col := newCollector()
		sub, node := c.paho(t, unique(t, fmt.Sprintf("sub%d", i)), true)
		nodes = append(nodes, node)
		subscribe(t, sub, filter, 1, col)
		m := col.next(t)
		if string(m.Payload()) != "kept" || !m.Retained() || m.Topic() != topic+"/a" {
			t.Fatalf("subscriber on %s (%s) got %q on %q retained=%v, want the retained \"kept\" [MQTT-3.3.1-6]",
				node, filter, m.Payload(), m.Topic(), m.Retained())
		}
		col.quiet(t)
	}
	mustDiffer(t, nodes[1:]...)
}

func TestCluster_ThroughHAProxyThreeReplicas_WillOnAbruptClose_MQTT_3_1_2_8(t *testing.T) {
	c := startBehindHAProxy(t, 3)
	willTopic := unique(t, "will")
	col := newCollector()
	watcher, watchNode := c.paho(t, unique(t, "watch"), true)
	subscribe(t, watcher, willTopic, 1, col)
	doomed, _, doomedNode := c.raw(t, &packets.Connect{ClientID: unique(t, "doomed"), CleanSession: true, KeepAlive: 60,
		Will: &packets.Will{Topic: willTopic, Payload: []byte("gone"), QoS: 1}})
	mustDiffer(t, watchNode, doomedNode)
	_ = doomed.Conn.Close() // no DISCONNECT: the will must be published
	m := col.next(t)
	if string(m.Payload()) != "gone" {
		t.Fatalf("will payload %q, want \"gone\"", m.Payload())
	}
	col.quiet(t)
}

func TestCluster_ThroughHAProxyThreeReplicas_TakeoverAcrossReplicas_MQTT_3_1_4_2(t *testing.T) {
	c := startBehindHAProxy(t, 3)
	id := unique(t, "dev")
	first, _, firstNode := c.raw(t, &packets.Connect{ClientID: id, CleanSession: true, KeepAlive: 60})
	second, _, secondNode := c.raw(t, &packets.Connect{ClientID: id, CleanSession: true, KeepAlive: 60})
	mustDiffer(t, firstNode, secondNode)
	first.ExpectClosed(waitTimeout)

	// The new connection is the live one: it can subscribe and receive.
	topic := unique(t, "after")
	if codes := second.Subscribe(1, packets.Subscription{Filter: topic, QoS: 1}); codes[0] != 1 {
		t.Fatalf("SUBACK %v, want [1]", codes)
	}
	pub, _, _ := c.raw(t, &packets.Connect{ClientID: unique(t, "pub"), CleanSession: true, KeepAlive: 60})
	pub.PublishQoS1(1, topic, "to the new one")
	if got := second.PublishesUntil("to the new one"); len(got) != 0 {
		t.Fatalf("unexpected messages before the fence: %s", describePublishes(got))
	}
}

func TestCluster_ThroughHAProxyThreeReplicas_SessionResumedOnAnotherReplica_MQTT_4_4_0_1(t *testing.T) {
	c := startBehindHAProxy(t, 3)
	id := unique(t, "persistent")
	topic := unique(t, "queued")
	sub, ack, firstNode := c.raw(t, &packets.Connect{ClientID: id, CleanSession: false, KeepAlive: 60})
	if ack.SessionPresent {
		t.Fatal("first CONNACK has session present 1, want 0 [MQTT-3.2.2-3]")
	}
	if codes := sub.Subscribe(1, packets.Subscription{Filter: topic + "/#", QoS: 1}); codes[0] != 1 {
		t.Fatalf("SUBACK %v, want [1]", codes)
	}
	sub.Send(&packets.Disconnect{})
	sub.ExpectClosed(waitTimeout)

	pub, _, _ := c.raw(t, &packets.Connect{ClientID: unique(t, "pub"), CleanSession: true, KeepAlive: 60})
	for i := range 3 {
		pub.PublishQoS1(uint16(i+1), fmt.Sprintf("%s/%d", topic, i), fmt.Sprintf("m%d", i))
	}

	back, ack, backNode := c.raw(t, &packets.Connect{ClientID: id, CleanSession: false, KeepAlive: 60})
	mustDiffer(t, firstNode, backNode)
	if !ack.SessionPresent {
		t.Fatal("CONNACK on another replica has session present 0, want 1 [MQTT-3.2.2-2]")
	}
	pub.PublishQoS1(9, topic+"/fence", "fence")
	got := back.PublishesUntil("fence")
	var payloads []string
	for _, p := range got {
		payloads = append(payloads, string(p.Payload))
	}
	if fmt.Sprint(payloads) != "[m0 m1 m2]" {
		t.Fatalf("resumed session delivered %v, want [m0 m1 m2] in order [MQTT-3.1.2-5] [MQTT-4.6.0-6]", payloads)
	}
}

func describePublishes(ps []*packets.Publish) string {
	out := make([]packets.Packet, len(ps))
	for i, p := range ps {
		out[i] = p
	}
	return mqtttest.Describe(out)
}
