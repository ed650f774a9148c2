package main

// Hostile tests of Redis Cluster mode (the sharded bus, bridge/redis_shardbus.go):
// what an operator or a client can do to a six-node cluster deployment.

import (
	"context"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

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
	waitPromoted(t, ctx, rc, false)
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
	// demoted and gives the slot up: its ROLE turns to slave.
	oc := redis.NewClient(&redis.Options{Addr: master, MaxRetries: -1})
	defer oc.Close()
	waitFor(t, 15*time.Second, "the old master "+master+" to give the slot up", func() bool {
		role, err := oc.Do(ctx, "ROLE").Slice()
		return err == nil && len(role) > 0 && role[0] == "slave"
	})
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

// TestAttack13_PausedMasterStallsEveryShardsPublishes pauses (SIGSTOP) the
// master of one shard, sends one QoS 1 PUBLISH on that shard, then 100 ms
// later one, from another connection, on a topic whose shard is on
// another, healthy master. What a user saw before: the healthy topic's
// PUBACK did not come for 10 s, then the connection was closed, because
// one publisher goroutine per replica sent one batch at a time and waited
// for it, with a 10 s deadline, on the paused master. Each stream shard
// now has its own publisher in Redis Cluster mode.
func TestAttack13_PausedMasterStallsEveryShardsPublishes(t *testing.T) {
	c, cc, a, _ := startShardedPair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	level, other, master := levelsOnTwoMasters(t, ctx, cc, "pm", "ok")
	p1 := mqtttest.Dial(t, topoAddr(a))
	p1.MustConnect(&packets.Connect{ClientID: unique(t, "p1"), CleanSession: true, KeepAlive: 60})
	p2 := mqtttest.Dial(t, topoAddr(a))
	p2.MustConnect(&packets.Connect{ClientID: unique(t, "p2"), CleanSession: true, KeepAlive: 60})
	p2.PublishQoS1(1, other+"/x", "warm")
	c.Signal(master, syscall.SIGSTOP)
	defer c.Signal(master, syscall.SIGCONT)
	received := a.Stats()["publish_received"]
	p1.Send(&packets.Publish{QoS: 1, PacketID: 7, Topic: level + "/z", Payload: []byte("z")})
	// Replica a has read p1's PUBLISH; it hands it on at once to the
	// shard's publisher, which sends it to the paused master, where it
	// stays.
	waitFor(t, waitTimeout, "replica a to read p1's PUBLISH", func() bool {
		return a.Stats()["publish_received"] > received
	})
	s := time.Now()
	p2.Send(&packets.Publish{QoS: 1, PacketID: 10, Topic: other + "/x", Payload: []byte("h")})
	ack, err := p2.Read(15 * time.Second)
	if _, ok := ack.(*packets.Puback); !ok || time.Since(s) > time.Second {
		t.Errorf("QoS 1 PUBLISH on %q (healthy master) answered %T, %v after %v; want a PUBACK within 1s while %s (another shard's master) is paused",
			other+"/x", ack, err, time.Since(s).Round(time.Millisecond), master)
	}
}

// TestAttack13_PausedMasterKeepsOneConnectionsAckOrder: one connection
// sends a QoS 1 PUBLISH on a shard whose master is paused (SIGSTOP), then
// one on a shard of a healthy master. The second is accepted by Redis at
// once (its shard has its own publisher), but its PUBACK must not overtake
// the first's: PUBACKs go in the order the PUBLISH packets arrived
// [MQTT-4.6.0-2]. Once the master resumes, both come, in that order.
func TestAttack13_PausedMasterKeepsOneConnectionsAckOrder(t *testing.T) {
	t.Parallel() // waits on a paused master, little CPU
	c, cc, a, _ := startShardedPair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	level, other, master := levelsOnTwoMasters(t, ctx, cc, "po", "pk")
	p := mqtttest.Dial(t, topoAddr(a))
	p.MustConnect(&packets.Connect{ClientID: unique(t, "p"), CleanSession: true, KeepAlive: 60})
	p.PublishQoS1(1, other+"/x", "warm")
	p.PublishQoS1(2, level+"/x", "warm")
	c.Signal(master, syscall.SIGSTOP)
	resumed := false
	defer func() {
		if !resumed {
			c.Signal(master, syscall.SIGCONT)
		}
	}()
	p.Send(&packets.Publish{QoS: 1, PacketID: 7, Topic: level + "/z", Payload: []byte("z")})
	p.Send(&packets.Publish{QoS: 1, PacketID: 8, Topic: other + "/x", Payload: []byte("h")})
	if ack, err := p.Read(time.Second); err == nil {
		t.Fatalf("got %T %+v while the first PUBLISH's master is paused; want nothing yet", ack, ack)
	}
	// Shorter than the cluster's node timeout: no failover, the paused
	// master answers the waiting batch once it runs again.
	c.Signal(master, syscall.SIGCONT)
	resumed = true
	for _, want := range []uint16{7, 8} {
		ack, err := p.Read(15 * time.Second)
		if pa, ok := ack.(*packets.Puback); !ok || pa.PacketID != want {
			t.Fatalf("after resuming: got %T %+v, %v; want the PUBACK of %d (PUBACKs in PUBLISH order)", ack, ack, err, want)
		}
	}
}
