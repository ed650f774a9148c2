package redistopo

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// roundTrip SETs and GETs keys spread over many hash slots, then PUBLISHes
// through pub and checks the message arrives on a subscription made through
// sub. It is the least a replica needs from a topology.
func roundTrip(t *testing.T, pub, sub redis.UniversalClient) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	for i := 0; i < 20; i++ {
		key, val := fmt.Sprintf("mqtt:retain:sensors/%d", i), fmt.Sprintf("v%d", i)
		if err := pub.Set(ctx, key, val, 0).Err(); err != nil {
			t.Fatalf("SET %s: %v", key, err)
		}
		got, err := sub.Get(ctx, key).Result()
		if err != nil || got != val {
			t.Fatalf("GET %s = %q, %v; want %q", key, got, err, val)
		}
	}

	ps := sub.PSubscribe(ctx, "mqtt:msg:sensors/*")
	defer ps.Close()
	if _, err := ps.Receive(ctx); err != nil { // the subscription confirmation
		t.Fatalf("PSUBSCRIBE: %v", err)
	}
	// Redis Cluster forwards PUBLISH over the bus, asynchronously: publish
	// until the subscriber sees one, within a bound.
	got := make(chan *redis.Message, 1)
	go func() {
		msg, err := ps.ReceiveMessage(ctx)
		if err == nil {
			got <- msg
		}
	}()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if err := pub.Publish(ctx, "mqtt:msg:sensors/1/temp", "21.5").Err(); err != nil {
			t.Fatalf("PUBLISH: %v", err)
		}
		select {
		case msg := <-got:
			if msg.Channel != "mqtt:msg:sensors/1/temp" || msg.Payload != "21.5" || msg.Pattern != "mqtt:msg:sensors/*" {
				t.Fatalf("received %+v, want channel mqtt:msg:sensors/1/temp pattern mqtt:msg:sensors/* payload 21.5", msg)
			}
			return
		case <-tick.C:
		case <-ctx.Done():
			t.Fatalf("no message through the subscription: %v", ctx.Err())
		}
	}
}

func TestStartSentinel_FailoverClientSetGetPublishSubscribe(t *testing.T) {
	s := StartSentinel(t)
	if s.MasterName() != "mymaster" {
		t.Fatalf("MasterName() = %q, want mymaster", s.MasterName())
	}
	c := redis.NewFailoverClient(&redis.FailoverOptions{
		MasterName:    s.MasterName(),
		SentinelAddrs: s.SentinelAddrs(),
	})
	defer c.Close()
	roundTrip(t, c, c)

	// The client really resolved the master through the sentinel.
	direct := redis.NewClient(&redis.Options{Addr: s.MasterAddr()})
	defer direct.Close()
	if got, err := direct.Get(context.Background(), "mqtt:retain:sensors/0").Result(); err != nil || got != "v0" {
		t.Fatalf("GET on the master directly = %q, %v; want v0", got, err)
	}
}

func TestStartSentinel_StopEndsBothProcesses(t *testing.T) {
	s := StartSentinel(t)
	s.Stop()
	if s.master.alive() || s.sentinel.alive() {
		t.Fatal("a process is still running after Stop")
	}
	s.Stop()
}

func TestStartCluster_ClusterClientSetGetPublishSubscribe(t *testing.T) {
	start := time.Now()
	c := StartCluster(t)
	t.Logf("cluster up in %s", time.Since(start))
	if n := len(c.Addrs()); n != 6 {
		t.Fatalf("Addrs() has %d nodes, want 6", n)
	}
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs()})
	defer cc.Close()
	roundTrip(t, cc, cc)

	// A replica subscribed on one node must get a PUBLISH sent to another:
	// classic pub/sub is forwarded to every node of the cluster.
	first := redis.NewClient(&redis.Options{Addr: c.Addrs()[0]})
	defer first.Close()
	last := redis.NewClient(&redis.Options{Addr: c.Addrs()[len(c.Addrs())-1]})
	defer last.Close()
	shards, err := cc.ClusterShards(context.Background()).Result()
	if err != nil {
		t.Fatalf("CLUSTER SHARDS: %v", err)
	}
	if len(shards) != 3 {
		t.Fatalf("CLUSTER SHARDS has %d shards, want 3 (one per master)", len(shards))
	}
	for _, s := range shards {
		if len(s.Nodes) != 2 {
			t.Fatalf("shard %v has %d nodes, want a master and a replica", s.Slots, len(s.Nodes))
		}
	}
	roundTripPubSubOnly(t, first, last)

	c.Stop()
	for i, p := range c.nodes {
		if p.alive() {
			t.Fatalf("node %d still running after Stop", i)
		}
	}
}

// roundTripPubSubOnly checks pub/sub between two plain clients on different
// nodes (keys would be MOVED between them).
func roundTripPubSubOnly(t *testing.T, pub, sub *redis.Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ps := sub.Subscribe(ctx, "mqtt:msg:a/b")
	defer ps.Close()
	if _, err := ps.Receive(ctx); err != nil {
		t.Fatalf("SUBSCRIBE: %v", err)
	}
	if err := pub.Publish(ctx, "mqtt:msg:a/b", "x").Err(); err != nil {
		t.Fatalf("PUBLISH: %v", err)
	}
	msg, err := ps.ReceiveMessage(ctx)
	if err != nil || msg.Payload != "x" {
		t.Fatalf("message on another node = %+v, %v; want payload x", msg, err)
	}
}
