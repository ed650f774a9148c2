package main

// Redis failover: a Sentinel promotes a replica that had fallen behind its
// master, so the promoted Redis lacks messages the old master had accepted
// and the broker had acknowledged. Every acknowledged message must still
// reach its subscribers, live and offline (issue 7.13).

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bridgemq/server/bridge"
	"github.com/bridgemq/server/broker"
	"github.com/bridgemq/server/internal/loadgen"
	"github.com/bridgemq/server/internal/mqtttest"
	"github.com/bridgemq/server/internal/redistopo"
	"github.com/bridgemq/server/packets"
)

// bridgeStats returns a replica's bridge counters.
func bridgeStats(t testing.TB, ts *testServer) map[string]int64 {
	t.Helper()
	out := make(map[string]int64)
	for k, v := range ts.Stats() {
		if name, ok := strings.CutPrefix(k, "bridge_"); ok {
			out[name] = v
		}
	}
	return out
}

// waitClientOffline waits until the EMQX client record of id says offline
// (state 0): its session has been stored.
func waitClientOffline(t testing.TB, rdb redis.UniversalClient, id string) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		state, err := rdb.HGet(ctx, "mqtt:client:"+id, "state").Result()
		cancel()
		if err == nil && state == "0" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("client %s not offline in Redis after %s: state %q, %v", id, waitTimeout, state, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// streamKeys returns the payload keys of every message in the QoS ≥ 1
// streams of the Redis at addr.
func streamKeys(t testing.TB, addr string) map[string]bool {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	keys := make(map[string]bool)
	for sh := range 16 {
		entries, err := c.XRange(ctx, fmt.Sprintf("mqtt:stream:%d", sh), "-", "+").Result()
		if err != nil {
			t.Fatalf("xrange shard %d on %s: %v", sh, addr, err)
		}
		for _, e := range entries {
			var m broker.Message
			env, _ := e.Values["e"].(string)
			if _, err := bridge.DecodeEnvelope(env, &m); err != nil {
				t.Fatalf("stream entry %s does not decode: %v", e.ID, err)
			}
			keys[loadgen.PayloadKey(m.Payload)] = true
		}
	}
	return keys
}

// TestSentinelFailover_LaggingReplica_NoAcknowledgedLoss_Issue7_13: QoS 1
// publishers with 8 KiB payloads send through replica A while the only
// Redis replica is paused (SIGSTOP) for 3 s, so it lags; then the master is
// killed (SIGKILL) and the replica resumed, and the sentinel promotes it.
// The promoted Redis lacks what the master accepted while the replica was
// paused. Every message the broker acknowledged must reach a live
// subscriber on replica B and an offline persistent session that
// reconnects (on A) after the failover [MQTT-4.3.2-2] [MQTT-3.1.2-5].
func TestSentinelFailover_LaggingReplica_NoAcknowledgedLoss_Issue7_13(t *testing.T) {
	const (
		publishers = 2
		rate       = 150 // per publisher and second: 2.4 MB/s with 8 KiB payloads
		padding    = 8 << 10
		lag        = 3 * time.Second
	)
	rt := redistopo.StartReplicated(t)
	flags := []string{"-redis-sentinel-master", rt.MasterName(),
		"-redis-sentinel-addrs", strings.Join(rt.SentinelAddrs(), ","),
		// The offline session is to get every acknowledged message: its
		// queue is bounded neither by count nor by bytes (8 KiB × ~1,300
		// is past the default 8 MiB, which keeps the newest).
		"-max-queued-messages", "100000", "-max-queued-bytes", "0"}
	a := startTopoReplica(t, "node-a", flags...)
	b := startTopoReplica(t, "node-b", flags...)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// The offline persistent session: subscribed on B, then gone.
	offTally := loadgen.NewTally()
	off := loadgen.NewSubscriber(unique(t, "offline"), "lag/#", offTally, b.Addr())
	offCtx, offCancel := context.WithCancel(ctx)
	offDone := off.Start(t, offCtx, 0, nil)
	offCancel()
	<-offDone
	master := redis.NewClient(&redis.Options{Addr: rt.MasterAddr()})
	waitClientOffline(t, master, off.ID())
	_ = master.Close()

	liveTally := loadgen.NewTally()
	live := loadgen.NewSubscriber(unique(t, "live"), "lag/#", liveTally, b.Addr())
	liveDone := live.Start(t, ctx, 0, nil)

	var pubs []*loadgen.Publisher
	for i := range publishers {
		p := loadgen.NewPublisher(fmt.Sprintf("pub%d", i), fmt.Sprintf("lag/p%d", i), dialer(a.Addr()))
		p.Padding = padding
		pubs = append(pubs, p)
	}
	faultErr := make(chan error, 1)
	go func() {
		faultErr <- func() error {
			time.Sleep(time.Second) // the scenario: a second of normal traffic first
			if err := rt.PauseReplica(); err != nil {
				return err
			}
			time.Sleep(lag) // the scenario: the replica falls behind for 3 s
			rt.KillMaster()
			if err := rt.ResumeReplica(); err != nil {
				return err
			}
			return rt.WaitPromoted()
		}()
	}()
	start := time.Now()
	errs := loadgen.RunPublishers(ctx, pubs, 1<<30, rate, start.Add(time.Second+lag+500*time.Millisecond))
	if err := <-faultErr; err != nil {
		t.Fatalf("failover: %v", err)
	}
	for _, err := range errs {
		if err != nil {
			t.Errorf("publisher: %v", err)
		}
	}

	liveSum := loadgen.AwaitDelivery(pubs, liveTally, 10*time.Second, quietWindow)
	inStreams := streamKeys(t, rt.ReplicaAddr())
	missing := 0
	for _, p := range pubs {
		for _, k := range p.AckedKeys() {
			if !inStreams[k] {
				missing++
			}
		}
	}

	// The offline session comes back, on A, after the failover.
	offDone, err := off.Resume(ctx, a.Addr())
	if err != nil {
		t.Fatalf("offline session reconnect: %v", err)
	}
	offSum := loadgen.AwaitDelivery(pubs, offTally, 10*time.Second, quietWindow)
	cancel()
	<-liveDone
	<-offDone

	t.Logf("failover-lagging-replica: live %s", liveSum)
	t.Logf("failover-lagging-replica: offline %s session_resumed=%v", offSum, off.Report().NoSessionResume == 0)
	t.Logf("failover-lagging-replica: acknowledged but missing from the promoted redis's streams: %d; republished by A: %d",
		missing, bridgeStats(t, a)["republished_after_redis_restart"])
	if liveSum.Acked == 0 || liveSum.Sent != liveSum.Acked {
		t.Errorf("sent %d distinct messages, acknowledged %d", liveSum.Sent, liveSum.Acked)
	}
	if liveSum.Lost != 0 {
		t.Errorf("live subscriber on B: %d acknowledged messages never delivered, first: %v", liveSum.Lost, liveSum.FirstLost)
	}
	if offSum.Lost != 0 {
		t.Errorf("offline persistent session: %d acknowledged messages never delivered, first: %v", offSum.Lost, offSum.FirstLost)
	}
	if missing != 0 {
		t.Errorf("%d acknowledged messages missing from the promoted Redis's streams", missing)
	}
	if off.Report().NoSessionResume != 0 {
		t.Errorf("the offline session was not found on reconnect")
	}
}

// TestMinReplicasAcked_ReplicaStopped_NoPuback: with
// -redis-min-replicas-acked 1, a QoS 1 PUBLISH is acknowledged while the
// only Redis replica follows, and not while it is paused: the connection
// closes without PUBACK and the failure is counted. Once the replica is
// back, the client's re-send is acknowledged.
func TestMinReplicasAcked_ReplicaStopped_NoPuback(t *testing.T) {
	rt := redistopo.StartReplicated(t)
	a := startTopoReplica(t, "node-a", "-redis-url", "redis://"+rt.MasterAddr(), "-redis-min-replicas-acked", "1")
	topic := unique(t, "acked")

	c := mqtttest.Dial(t, a.Addr())
	c.MustConnect(&packets.Connect{ClientID: unique(t, "pub"), CleanSession: true, KeepAlive: 30})
	c.PublishQoS1(1, topic, "replicated") // waits for the PUBACK

	if err := rt.PauseReplica(); err != nil {
		t.Fatal(err)
	}
	resumed := false
	defer func() {
		if !resumed {
			_ = rt.ResumeReplica()
		}
	}()
	c.Send(&packets.Publish{QoS: 1, PacketID: 2, Topic: topic, Payload: []byte("not replicated")})
	if _, got := c.ExpectClosed(10 * time.Second); len(got) != 0 {
		t.Fatalf("got %s while the replica was paused; want the connection closed without PUBACK", mqtttest.Describe(got))
	}
	if n := bridgeStats(t, a)["publish_not_replicated"]; n < 1 {
		t.Errorf("publish_not_replicated = %d, want ≥ 1", n)
	}

	if err := rt.ResumeReplica(); err != nil {
		t.Fatal(err)
	}
	resumed = true
	c = mqtttest.Dial(t, a.Addr())
	c.MustConnect(&packets.Connect{ClientID: unique(t, "pub"), CleanSession: true, KeepAlive: 30})
	c.Send(&packets.Publish{QoS: 1, PacketID: 2, Dup: true, Topic: topic, Payload: []byte("not replicated")})
	deadline := time.Now().Add(10 * time.Second)
	for {
		pk, err := c.Read(time.Until(deadline))
		if err != nil {
			t.Fatalf("no PUBACK for the re-send after the replica resumed: %v", err)
		}
		if ack, ok := pk.(*packets.Puback); ok && ack.PacketID == 2 {
			break
		}
	}
}
