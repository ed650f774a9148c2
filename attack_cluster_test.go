package main

// Hostile tests of Redis Cluster mode (the sharded bus, bridge/redis_shardbus.go):
// what an operator or a client can do to a six-node cluster deployment.

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bridgemq/server/internal/mqtttest"
	"github.com/bridgemq/server/internal/redistopo"
	"github.com/bridgemq/server/packets"
	"github.com/bridgemq/server/server"
)

// TestAttack13_ClusterPrefixWithOpenBraceRefusedAtStart starts a replica on
// a Redis Cluster with a -redis-prefix whose '{' is not closed ("x{", "a}{b").
// A hash tag then runs from the prefix's '{' into the key's own "{tag}", so
// a shard's stream ("x{stream:{7}", tag "stream:{7") and its bus channel
// ("x{bus:{7}", tag "bus:{7") land in different slots. What a user saw
// before: the replica started and answered /readyz, but every QoS 1 or 2
// PUBLISH whose shard's two slots sat on different masters (about two
// thirds of the topics) closed the publisher's connection with "Script
// attempted to access a non local key in a cluster node". Such a prefix
// must be refused at start, naming it.
func TestAttack13_ClusterPrefixWithOpenBraceRefusedAtStart(t *testing.T) {
	c := redistopo.StartCluster(t)
	for _, prefix := range []string{"x{", "a}{b"} {
		cfg := mqtttest.Config(t, "-redis-cluster", strings.Join(c.Addrs(), ","), "-redis-prefix", prefix)
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		srv, err := server.New(ctx, cfg, testLogger())
		cancel()
		if err == nil {
			_ = srv.Close()
			t.Errorf("-redis-prefix %q on a Redis Cluster: the replica started; want it refused (its shards' streams and channels are in different slots)", prefix)
			continue
		}
		if !strings.Contains(err.Error(), prefix) {
			t.Errorf("-redis-prefix %q refused with %q, want the error to name the prefix", prefix, err)
		}
	}
	// A balanced tag (every key in one slot, as the README describes) and
	// the default still start.
	for _, prefix := range []string{"{app}:", "mqtt:"} {
		startTopoReplica(t, "node-"+strings.Trim(prefix, "{}:"), "-redis-cluster", strings.Join(c.Addrs(), ","), "-redis-prefix", prefix)
	}
}

// TestAttack13_ZombieMasterWriteHidesAcknowledgedMessages: a shard's master
// is paused (SIGSTOP), not killed, while a QoS 1 PUBLISH "z" waits unread in
// its socket; its replica is promoted and acknowledges x1..x5; the old
// master then resumes, appends "z" with an id later than the x's (its own
// history) and sends it to replica B's subscription before it learns it was
// demoted. What a user saw before: B moved its position on the shard past
// z's id, resubscribed on the new master and read its stream from there,
// skipping x1..x5: five acknowledged messages never reached the subscriber.
// B now reads the shard's recent stream again when the shard's master
// changed, dropping what it already had by message id.
func TestAttack13_ZombieMasterWriteHidesAcknowledgedMessages(t *testing.T) {
	t.Parallel() // waits on Redis failovers and timers, little CPU
	c, cc, a, b := startShardedPair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 35*time.Second)
	defer cancel()
	level := levelOnSlot(t, ctx, cc, "zm", 512)
	master, _, rc := syncedShardNodes(t, ctx, cc, 512)
	sub := mqtttest.Dial(t, topoAddr(b))
	sub.MustConnect(&packets.Connect{ClientID: unique(t, "sub"), CleanSession: true, KeepAlive: 60})
	sub.Subscribe(1, packets.Subscription{Filter: level + "/#", QoS: 1})
	p1 := mqtttest.Dial(t, topoAddr(a))
	p1.MustConnect(&packets.Connect{ClientID: unique(t, "p1"), CleanSession: true, KeepAlive: 60})
	p2 := mqtttest.Dial(t, topoAddr(a))
	p2.MustConnect(&packets.Connect{ClientID: unique(t, "p2"), CleanSession: true, KeepAlive: 60})
	p2.PublishQoS1(1, level+"/w", "w0")
	sub.PublishesUntil("w0")
	if !c.Pause(master) {
		t.Fatalf("no cluster node at %s", master)
	}
	resumed := false
	defer func() {
		if !resumed {
			c.Resume(master)
		}
	}()
	p1.Send(&packets.Publish{QoS: 1, PacketID: 7, Topic: level + "/z", Payload: []byte("z")})
	for {
		role, err := rc.Do(ctx, "ROLE").Slice()
		if err == nil && len(role) > 0 && role[0] == "master" {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("the paused master's replica was never promoted")
		}
		time.Sleep(20 * time.Millisecond)
	}
	want := []string{"x1", "x2", "x3", "x4", "x5"}
	for i, p := range want {
		p2.Send(&packets.Publish{QoS: 1, PacketID: uint16(10 + i), Topic: level + "/x", Payload: []byte(p)})
		if ack, err := p2.Read(15 * time.Second); err != nil {
			t.Fatalf("%s: %T %v", p, ack, err)
		}
	}
	c.Resume(master)
	resumed = true
	// The old master runs what it had buffered, then learns it was
	// demoted and gives the slot up.
	time.Sleep(3 * time.Second)
	p2.PublishQoS1(20, level+"/f", "fence")
	var ps []string
	for _, p := range sub.PublishesUntil("fence") {
		ps = append(ps, string(p.Payload))
	}
	for _, w := range want {
		if !slices.Contains(ps, w) {
			t.Errorf("acknowledged %q never delivered; the subscriber got %q [MQTT-4.3.2-2]", w, ps)
		}
	}
}
