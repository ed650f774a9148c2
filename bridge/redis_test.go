package bridge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bridgemq/server/broker"
	"github.com/bridgemq/server/internal/brokertest"
	"github.com/bridgemq/server/internal/redistest"
)

// sink is the shared fake connection, which records what it is given.
type sink = brokertest.Subscriber[Message]

// afterDeadNodeChecks returns once each of nodes has run n more rounds of
// its dead-node check (wills of dead replicas are published there), so that
// a test that checks a will was published once has given every survivor
// the chance to publish it again.
func afterDeadNodeChecks(t *testing.T, n int64, nodes ...*testNode) {
	t.Helper()
	start := make([]int64, len(nodes))
	for i, nd := range nodes {
		start[i] = nd.Redis.Stats()["dead_node_checks"]
	}
	waitUntil(t, 30*time.Second, func() string {
		for i, nd := range nodes {
			if got := nd.Redis.Stats()["dead_node_checks"] - start[i]; got < n {
				return fmt.Sprintf("%s ran %d dead-node checks, want %d", nd.NodeID(), got, n)
			}
		}
		return ""
	})
}

// fence returns once every message pub accepted before the call has been
// through recv's reader: a QoS 1 message published by pub afterwards (one
// publisher's batches reach Redis in order, and Redis pushes one
// subscription connection's messages in order) has reached a client of
// recv. A "$" topic, which no wildcard filter of the test matches
// [MQTT-4.7.2-1]. Tests that check that nothing more arrives use it instead of a
// sleep.
func fence(t *testing.T, pub, recv Bridge) {
	t.Helper()
	token := randomToken()
	s := &sink{}
	attach(t, recv, "fence-"+token, s, true)
	subscribe(t, recv, "fence-"+token, "$fence/"+token, 1)
	publish(t, pub, rmsg("$fence/"+token, 1, "fence"))
	s.WaitFor(t, 1)
	detach(t, recv, "fence-"+token, s, nil)
}

func newClient(t testing.TB, srv *redistest.Server) *redis.Client {
	t.Helper()
	// RESP2, as the server's own client (server.Config.RedisClient).
	c := redis.NewClient(&redis.Options{Addr: srv.Addr(), MaxRetries: -1, DialTimeout: 500 * time.Millisecond, Protocol: 2})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// testNode is a replica as the tests drive it: the local broker core, with
// the Redis bridge as its Store and Cluster, for the tests that look inside.
type testNode struct {
	*broker.Broker
	*Redis
}

// The methods both halves have are the core's.

func (n *testNode) Close() error                    { return n.Broker.Close() }
func (n *testNode) Stats() map[string]int64         { return n.Broker.Stats() }
func (n *testNode) Ready(ctx context.Context) error { return n.Broker.Ready(ctx) }
func (n *testNode) PublishAsync(ctx context.Context, m *Message, done func(error)) {
	n.Broker.PublishAsync(ctx, m, done)
}
func (n *testNode) PublishWill(ctx context.Context, id string, sub Subscriber, will *Message) (bool, error) {
	return n.Broker.PublishWill(ctx, id, sub, will)
}

func newTestRedis(t testing.TB, srv *redistest.Server, node string, tweak ...func(*RedisOptions)) *testNode {
	t.Helper()
	o := RedisOptions{
		Client: newClient(t, srv),
		NodeID: node,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	for _, f := range tweak {
		f(&o)
	}
	return startTestNode(t, o)
}

// startTestNode starts a replica with o, closed when the test ends.
func startTestNode(t testing.TB, o RedisOptions) *testNode {
	t.Helper()
	b, r, err := NewRedisBroker(context.Background(), o)
	if err != nil {
		t.Fatalf("NewRedis(%s): %v", o.NodeID, err)
	}
	n := &testNode{Broker: b, Redis: r}
	t.Cleanup(func() { _ = n.Close() })
	return n
}

func rmsg(topic string, qos byte, payload string) *Message {
	return &Message{ID: broker.NewID(), Topic: topic, QoS: qos, Payload: []byte(payload), ClientID: "pub", Time: time.Now()}
}

func attach(t *testing.T, b Bridge, id string, sub Subscriber, clean bool) *StoredSession {
	t.Helper()
	s, err := b.Attach(context.Background(), id, "", sub, broker.CleanSession(clean), nil)
	if err != nil {
		t.Fatalf("Attach(%s): %v", id, err)
	}
	return s
}

func subscribe(t *testing.T, b Bridge, id, filter string, qos byte) {
	t.Helper()
	if err := b.Subscribe(context.Background(), id, filter, qos); err != nil {
		t.Fatalf("Subscribe(%s, %s): %v", id, filter, err)
	}
}

func publish(t *testing.T, b Bridge, m *Message) {
	t.Helper()
	if err := b.Publish(context.Background(), m); err != nil {
		t.Fatalf("Publish(%s): %v", m.Topic, err)
	}
}

func TestRedis_CrossReplicaDeliveryOncePerClientAtHighestQoS_MQTT_3_3_5_1(t *testing.T) {
	srv := redistest.Start(t)
	a := newTestRedis(t, srv, "a")
	b := newTestRedis(t, srv, "b")
	sub := &sink{}
	attach(t, b, "c1", sub, true)
	// Overlapping subscriptions: an exact channel and two patterns.
	subscribe(t, b, "c1", "home/kitchen/temp", 0)
	subscribe(t, b, "c1", "home/+/temp", 2)
	subscribe(t, b, "c1", "home/#", 1)

	tests := []struct {
		topic   string
		qos     byte
		wantQoS byte
	}{
		{"home/kitchen/temp", 2, 2},
		{"home/kitchen/temp", 1, 1},
		{"home/hall/humidity", 2, 1},
		{"home", 1, 1}, // 'home/#' matches its parent level
	}
	for i, tt := range tests {
		m := rmsg(tt.topic, tt.qos, fmt.Sprint(i))
		publish(t, a, m)
		d := sub.WaitFor(t, i+1)
		if d[i].Message.ID != m.ID || d[i].QoS != tt.wantQoS {
			t.Fatalf("delivery %d = %s at QoS %d, want %s at QoS %d", i, d[i].Message.Topic, d[i].QoS, tt.topic, tt.wantQoS)
		}
	}
	fence(t, a, b)
	if n := len(sub.Deliveries()); n != len(tests) {
		t.Fatalf("got %d deliveries, want %d (duplicates not dropped)", n, len(tests))
	}
}

func TestRedis_ReMatchesRedisOverDelivery(t *testing.T) {
	srv := redistest.Start(t)
	a := newTestRedis(t, srv, "a")
	sub := &sink{}
	attach(t, a, "c1", sub, true)
	subscribe(t, a, "c1", "a/+/c", 1) // Redis glob a/*/c also matches a/x/y/c
	publish(t, a, rmsg("a/x/y/c", 1, "no"))
	publish(t, a, rmsg("a/x/c", 1, "yes"))
	sub.WaitFor(t, 1)
	fence(t, a, a)
	if d := sub.Deliveries(); len(d) != 1 || d[0].Message.Topic != "a/x/c" {
		t.Fatalf("deliveries %v, want only a/x/c", d)
	}
}

func TestRedis_WildcardDoesNotMatchDollarTopics_MQTT_4_7_2_1(t *testing.T) {
	srv := redistest.Start(t)
	a := newTestRedis(t, srv, "a")
	sub := &sink{}
	attach(t, a, "c1", sub, true)
	subscribe(t, a, "c1", "#", 1)
	subscribe(t, a, "c1", "+/info", 1)
	publish(t, a, rmsg("$SYS/info", 1, "no"))
	publish(t, a, rmsg("x/info", 1, "yes"))
	sub.WaitFor(t, 1)
	fence(t, a, a)
	if d := sub.Deliveries(); len(d) != 1 || d[0].Message.Topic != "x/info" {
		t.Fatalf("deliveries %d, want only x/info", len(d))
	}
}

func TestRedis_UnsubscribeStopsDelivery(t *testing.T) {
	srv := redistest.Start(t)
	a := newTestRedis(t, srv, "a")
	sub := &sink{}
	attach(t, a, "c1", sub, true)
	subscribe(t, a, "c1", "t/#", 1)
	publish(t, a, rmsg("t/1", 1, "x"))
	sub.WaitFor(t, 1)
	if err := a.Unsubscribe(context.Background(), "c1", "t/#"); err != nil {
		t.Fatal(err)
	}
	publish(t, a, rmsg("t/2", 1, "x"))
	fence(t, a, a)
	if n := len(sub.Deliveries()); n != 1 {
		t.Fatalf("got %d deliveries after unsubscribe, want 1", n)
	}
	if a.Stats()["subscription_filters"] != 0 {
		t.Fatal("filter still in the trie")
	}
}

func TestRedis_SubscribeRequiresAttach(t *testing.T) {
	srv := redistest.Start(t)
	a := newTestRedis(t, srv, "a")
	if err := a.Subscribe(context.Background(), "nobody", "x", 0); err == nil {
		t.Fatal("Subscribe of an unattached client succeeded")
	}
	attach(t, a, "c1", &sink{}, true)
	if err := a.Subscribe(context.Background(), "c1", "a/#/b", 0); err == nil {
		t.Fatal("Subscribe accepted an invalid filter [MQTT-4.7.1-2]")
	}
}

func TestRedis_PublishWhileRedisDownReturnsErrUnavailable(t *testing.T) {
	srv := redistest.Start(t)
	a := newTestRedis(t, srv, "a")
	srv.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, qos := range []byte{0, 1} {
		err := a.Publish(ctx, rmsg("t", qos, "x"))
		if !errors.Is(err, ErrUnavailable) {
			t.Fatalf("QoS %d publish with Redis down: err = %v, want ErrUnavailable", qos, err)
		}
	}
	if got := a.Stats()["qos0_dropped"]; got != 1 {
		t.Fatalf("qos0_dropped = %d, want 1", got)
	}
	if err := a.Ready(ctx); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Ready with Redis down = %v, want ErrUnavailable", err)
	}
}

// TestRedis_EMQXRecordsAndEvents: tooling written for EMQX's Redis backend
// reads the client record and the mqtt_channel events.
func TestRedis_EMQXRecordsAndEvents(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	tool := newClient(t, srv)
	events := tool.Subscribe(ctx, "mqtt_channel")
	defer events.Close()
	if _, err := events.Receive(ctx); err != nil { // the subscription confirmation
		t.Fatal(err)
	}
	a := newTestRedis(t, srv, "node-a")
	sub := &sink{}
	attach(t, a, "dev1", sub, false)
	subscribe(t, a, "dev1", "sensors/+/temp", 1)
	if err := a.Unsubscribe(ctx, "dev1", "sensors/+/temp"); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`{"type":"subscribe","topic":"sensors/+/temp","clientid":"dev1","qos":1}`,
		`{"type":"unsubscribe","topic":"sensors/+/temp","clientid":"dev1","qos":0}`,
	} {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		m, err := events.ReceiveMessage(rctx)
		cancel()
		if err != nil {
			t.Fatalf("waiting for %s: %v", want, err)
		}
		if m.Payload != want {
			t.Fatalf("mqtt_channel event %s, want %s", m.Payload, want)
		}
	}
	rec, err := tool.HGetAll(ctx, "mqtt:client:dev1").Result()
	if err != nil {
		t.Fatal(err)
	}
	if rec["state"] != "1" || rec["node"] != "node-a" || rec["online_at"] == "" {
		t.Fatalf("mqtt:client:dev1 = %v, want state 1 on node-a with online_at", rec)
	}
	if _, err := tool.HGet(ctx, "mqtt:node:node-a", "dev1").Result(); err != nil {
		t.Fatalf("mqtt:node:node-a has no dev1: %v", err)
	}
	detach(t, a, "dev1", sub, &StoredSession{})
	rec, _ = tool.HGetAll(ctx, "mqtt:client:dev1").Result()
	if rec["state"] != "0" || rec["offline_at"] == "" {
		t.Fatalf("after disconnect mqtt:client:dev1 = %v, want state 0 with offline_at", rec)
	}
}
