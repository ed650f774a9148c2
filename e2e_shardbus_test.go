package main

// The sharded bus of Redis Cluster mode (bridge/redis_shardbus.go): messages
// travel on sharded pub/sub, the load spreads over the masters, and nothing
// acknowledged is lost when a shard's slot moves or its master fails.

import (
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/redis/go-redis/v9"

	"github.com/bridgemq/server/bridge"
	"github.com/bridgemq/server/internal/loadgen"
	"github.com/bridgemq/server/internal/mqtttest"
	"github.com/bridgemq/server/internal/redistopo"
	"github.com/bridgemq/server/packets"
)

// startShardedPair starts a six-node Redis Cluster, replicas node-a and
// node-b on it, and a cluster client for the test's own checks.
func startShardedPair(t *testing.T, extra ...string) (*redistopo.Cluster, *redis.ClusterClient, *testServer, *testServer) {
	t.Helper()
	c := redistopo.StartCluster(t)
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs()})
	t.Cleanup(func() { _ = cc.Close() })
	flags := append([]string{"-redis-cluster", strings.Join(c.Addrs(), ",")}, extra...)
	a, b := startTopoPair(t, flags...)
	return c, cc, a, b
}

// masterInfo runs fn on every master with its INFO section parsed.
func masterInfo(t *testing.T, ctx context.Context, cc *redis.ClusterClient, section string) map[string]map[string]string {
	t.Helper()
	var mu sync.Mutex
	out := map[string]map[string]string{}
	err := cc.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
		s, err := m.Info(ctx, section).Result()
		if err != nil {
			return fmt.Errorf("INFO %s on %s: %w", section, m.Options().Addr, err)
		}
		kv := map[string]string{}
		for _, line := range strings.Split(s, "\r\n") {
			if k, v, ok := strings.Cut(line, ":"); ok {
				kv[k] = v
			}
		}
		mu.Lock()
		out[m.Options().Addr] = kv
		mu.Unlock()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// commandCalls returns, per master, the calls of each command from INFO
// commandstats ("cmdstat_get:calls=12,usec=...").
func commandCalls(t *testing.T, ctx context.Context, cc *redis.ClusterClient) map[string]map[string]int64 {
	t.Helper()
	out := map[string]map[string]int64{}
	for addr, kv := range masterInfo(t, ctx, cc, "commandstats") {
		calls := map[string]int64{}
		for k, v := range kv {
			name, ok := strings.CutPrefix(k, "cmdstat_")
			if !ok {
				continue
			}
			field, _, _ := strings.Cut(v, ",")
			n, err := strconv.ParseInt(strings.TrimPrefix(field, "calls="), 10, 64)
			if err != nil {
				t.Fatalf("INFO commandstats on %s: %s:%s: %v", addr, k, v, err)
			}
			calls[name] = n
		}
		out[addr] = calls
	}
	return out
}

// TestShardBus_LoadSpreadOverMasters publishes QoS 1 messages evenly over
// 100 first-level topics through replica A to a subscriber of '#' on
// replica B. Every message arrives; they travel on sharded pub/sub only (no
// PUBLISH per message, no pattern subscription on any master, B subscribed
// to every shard's channel, each on the master of its slot); and each
// master's share of all the commands Redis ran meanwhile is within ±20% of
// a third.
func TestShardBus_LoadSpreadOverMasters(t *testing.T) {
	t.Parallel() // its own cluster; counts, bounds nothing by time
	_, cc, a, b := startShardedPair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	tally := loadgen.NewTally()
	sub := loadgen.NewSubscriber(unique(t, "sub"), "#", tally, topoAddr(b))
	subDone := sub.Start(t, ctx, 0, nil)

	const topics, perTopic = 100, 30
	var pubs []*loadgen.Publisher
	for i := range topics {
		pubs = append(pubs, loadgen.NewPublisher(fmt.Sprintf("pub%d", i), fmt.Sprintf("site-%d/temp", i), dialer(topoAddr(a))))
	}
	before := commandCalls(t, ctx, cc)
	// 10 a second each, 1,000 a second in all: a burst of 3,000 would
	// overflow the subscriber's queue (-max-queued-messages).
	for _, err := range loadgen.RunPublishers(ctx, pubs, perTopic, 10, time.Now().Add(time.Minute)) {
		if err != nil {
			t.Fatalf("publisher: %v", err)
		}
	}
	sum := loadgen.AwaitDelivery(pubs, tally, 15*time.Second, 0)
	after := commandCalls(t, ctx, cc)
	// While B's subscriber is connected: which shard channels are
	// subscribed, and where.
	var mu sync.Mutex
	channels := map[string]string{}
	err := cc.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
		if n, err := m.PubSubNumPat(ctx).Result(); err != nil || n != 0 {
			return fmt.Errorf("PUBSUB NUMPAT on %s = %d, %v; want 0: no pattern subscriptions in Cluster mode", m.Options().Addr, n, err)
		}
		chs, err := m.PubSubShardChannels(ctx, "mqtt:bus:*").Result()
		if err != nil {
			return fmt.Errorf("PUBSUB SHARDCHANNELS on %s: %w", m.Options().Addr, err)
		}
		mu.Lock()
		defer mu.Unlock()
		for _, ch := range chs {
			channels[ch] = m.Options().Addr
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	<-subDone
	// Gone with the subscriber, B's shard subscriptions end.
	for deadline := time.Now().Add(waitTimeout); ; {
		left := 0
		_ = cc.ForEachMaster(context.Background(), func(ctx context.Context, m *redis.Client) error {
			chs, _ := m.PubSubShardChannels(ctx, "mqtt:bus:*").Result()
			mu.Lock()
			left += len(chs)
			mu.Unlock()
			return nil
		})
		if left == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("%d shard channels still subscribed %v after the only subscriber left", left, waitTimeout)
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if sum.Lost != 0 || sum.Acked != topics*perTopic {
		t.Fatalf("%s; want %d acknowledged and none lost (first lost %v)", sum, topics*perTopic, sum.FirstLost)
	}

	var total int64
	delta := map[string]int64{}
	for addr, calls := range after {
		for name, n := range calls {
			d := n - before[addr][name]
			delta[addr] += d
			total += d
		}
		if d := calls["publish"] - before[addr]["publish"]; d > topics {
			t.Errorf("master %s ran %d PUBLISH for %d messages: messages must travel on SPUBLISH", addr, d, topics*perTopic)
		}
	}
	if len(delta) != 3 {
		t.Fatalf("commandstats from %d masters, want 3", len(delta))
	}
	for addr, d := range delta {
		share := float64(d) / float64(total)
		t.Logf("master %s: %d of %d calls (%.1f%%)", addr, d, total, 100*share)
		if share < 0.8/3 || share > 1.2/3 {
			t.Errorf("master %s ran %.1f%% of the calls, want within ±20%% of a third (26.7%%–40%%)", addr, 100*share)
		}
	}

	masterOf := clusterMasterOf(t, context.Background(), cc)
	if len(channels) != 16 {
		t.Errorf("shard channels subscribed: %d %v, want all 16 (B subscribes '#')", len(channels), channels)
	}
	for ch, addr := range channels {
		if owner := masterOf[slotOf(t, context.Background(), cc, ch)]; owner != addr {
			t.Errorf("channel %s subscribed on %s, but its slot is on %s", ch, addr, owner)
		}
	}
}

// bigQueue lifts the subscriber's queue bound for the fault tests: the
// publishers catch up after an outage (their rate is kept on average) and
// the subscriber's replica reads the shard's stream at once after it
// resubscribes, so a few thousand messages reach the session together, more
// than -max-queued-messages (1,000) keeps by default. The bound is
// documented and counted (dropped_qos12_queue_full); these tests check the
// bus, not the bound.
var bigQueue = []string{"-max-queued-messages", "100000", "-max-queued-bytes", "0"}

// levelOnSlot returns a first topic level whose shard's stream is in
// slot, trying prefix0, prefix1, ...
func levelOnSlot(t *testing.T, ctx context.Context, cc *redis.ClusterClient, prefix string, slot int64) string {
	t.Helper()
	for i := range 1000 {
		l := prefix + strconv.Itoa(i)
		if slotOf(t, ctx, cc, bridge.ClusterStreamKey("mqtt:", l)) == slot {
			return l
		}
	}
	t.Fatalf("no level %s<n> on slot %d", prefix, slot)
	return ""
}

// TestShardBus_ReshardDuringQoS1Load moves the slot of a shard's stream and
// channel to another master with `redis-cli --cluster reshard` while
// publishers on replica A send QoS 1 messages on that shard to a persistent
// subscriber on replica B, and a QoS 2 publisher sends to a QoS 2
// subscriber. Every acknowledged message arrives [MQTT-4.3.2-2]; no QoS 2
// message arrives twice [MQTT-4.3.3-2]; B's subscription follows the slot to
// its new master.
func TestShardBus_ReshardDuringQoS1Load(t *testing.T) {
	t.Parallel() // waits on Redis failovers and timers, little CPU
	_, cc, a, b := startShardedPair(t, bigQueue...)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	// The shard whose slot is the lowest of its master's: redis-cli moves a
	// master's slots lowest first, so moving that many takes it along.
	masterOf := clusterMasterOf(t, ctx, cc)
	src := masterOf[512]
	low := int64(512)
	for s := int64(0); s < 512; s++ {
		if masterOf[s] != src {
			t.Fatalf("slots 0–512 not on one master (%s has 512, %s has %d)", src, masterOf[s], s)
		}
	}
	level := levelOnSlot(t, ctx, cc, "mv", low)
	var dst string
	for _, m := range masterOf {
		if m != src {
			dst = m
			break
		}
	}
	ids := map[string]string{}
	for _, addr := range []string{src, dst} {
		id, err := redis.NewClient(&redis.Options{Addr: addr}).ClusterMyID(ctx).Result()
		if err != nil {
			t.Fatalf("CLUSTER MYID on %s: %v", addr, err)
		}
		ids[addr] = id
	}

	tally := loadgen.NewTally()
	sub := loadgen.NewSubscriber(unique(t, "sub"), level+"/#", tally, topoAddr(b))
	subDone := sub.Start(t, ctx, 0, nil)
	q2 := startQoS2Pair(t, topoAddr(a), topoAddr(b), level+"/q2")

	reshard := func() {
		out, err := exec.CommandContext(ctx, "redis-cli", "--cluster", "reshard", src,
			"--cluster-from", ids[src], "--cluster-to", ids[dst], "--cluster-slots", strconv.FormatInt(low+1, 10),
			"--cluster-yes").CombinedOutput()
		if err != nil {
			t.Errorf("redis-cli --cluster reshard: %v\n%s", err, out)
		}
	}
	q2.start(ctx)
	_, sum := publishThroughFault(t, ctx, tally, 3, level, dialer(topoAddr(a)), 200, 6*time.Second, 2*time.Second, reshard)
	q2sent, q2got, q2dups := q2.stop(t)
	cancel()
	<-subDone

	if owner := clusterMasterOf(t, context.Background(), cc)[low]; owner != dst {
		t.Fatalf("after the reshard slot %d is on %s, want %s: the test moved nothing", low, owner, dst)
	}
	t.Logf("reshard: %s; qos2 sent=%d received=%d duplicates=%d", sum, q2sent, q2got, q2dups)
	if sum.Lost != 0 {
		t.Errorf("%d acknowledged QoS 1 messages never delivered, first: %v", sum.Lost, sum.FirstLost)
	}
	if sum.Acked == 0 || sum.Sent != sum.Acked {
		t.Errorf("sent %d distinct messages, acknowledged %d", sum.Sent, sum.Acked)
	}
	if q2dups != 0 {
		t.Errorf("%d QoS 2 messages delivered twice [MQTT-4.3.3-2]", q2dups)
	}
	if q2sent == 0 || q2got != q2sent {
		t.Errorf("QoS 2: %d acknowledged, %d of them delivered", q2sent, q2got)
	}
}

// TestShardBus_MasterFailoverDuringQoS1Load kills (SIGKILL) the master of a
// shard while publishers on replica A send QoS 1 messages on it to a
// persistent subscriber on replica B. Every acknowledged message arrives
// [MQTT-4.3.2-2], and A takes a CONNECT and acknowledges a QoS 1 PUBLISH on
// the shard within 2 s of Redis promoting the master's replica.
func TestShardBus_MasterFailoverDuringQoS1Load(t *testing.T) {
	t.Parallel() // waits on Redis failovers and timers, little CPU
	c, cc, a, b := startShardedPair(t, bigQueue...)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	level := levelOnSlot(t, ctx, cc, "fl", 512)
	master, _, rc := syncedShardNodes(t, ctx, cc, 512)

	tally := loadgen.NewTally()
	// level/+ takes the publishers' level/p<i>, not the probes' level/probe/x.
	sub := loadgen.NewSubscriber(unique(t, "sub"), level+"/+", tally, topoAddr(b))
	subDone := sub.Start(t, ctx, 0, nil)

	var promoted, back time.Time
	kill := func() {
		if !c.Kill(master) {
			t.Errorf("no cluster node at %s", master)
			return
		}
		for ctx.Err() == nil && promoted.IsZero() {
			role, err := rc.Do(ctx, "ROLE").Slice()
			if err == nil && len(role) > 0 && role[0] == "master" {
				promoted = time.Now()
			}
			time.Sleep(10 * time.Millisecond)
		}
		for i := 0; ctx.Err() == nil; i++ {
			if probeConnectPublish(topoAddr(a), fmt.Sprintf("%s-%d", unique(t, "probe"), i), level+"/probe/x", time.Second) == nil {
				back = time.Now()
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	_, sum := publishThroughFault(t, ctx, tally, 3, level, dialer(topoAddr(a)), 200, 12*time.Second, 2*time.Second, kill)
	cancel()
	<-subDone
	if promoted.IsZero() || back.IsZero() {
		t.Fatalf("promoted at %v, service back at %v: one never happened", promoted, back)
	}
	t.Logf("failover: %s; CONNECT+QoS 1 PUBLISH back %v after the promotion", sum, back.Sub(promoted).Round(time.Millisecond))
	if sum.Lost != 0 {
		t.Errorf("%d acknowledged messages never delivered, first: %v", sum.Lost, sum.FirstLost)
	}
	if sum.Acked == 0 || sum.Sent != sum.Acked {
		t.Errorf("sent %d distinct messages, acknowledged %d", sum.Sent, sum.Acked)
	}
	if d := back.Sub(promoted); d > 2*time.Second {
		t.Errorf("service back %v after the promotion, want within 2s", d)
	}
}

// qos2Pair is a paho QoS 2 publisher and a persistent QoS 2 subscriber that
// count what was acknowledged and what arrived.
type qos2Pair struct {
	pub, sub mqtt.Client
	topic    string
	stopc    chan struct{}
	done     chan struct{}

	mu    sync.Mutex
	acked map[string]bool
	got   map[string]int
}

func startQoS2Pair(t *testing.T, pubAddr, subAddr, topic string) *qos2Pair {
	t.Helper()
	q := &qos2Pair{topic: topic, stopc: make(chan struct{}), done: make(chan struct{}), acked: map[string]bool{}, got: map[string]int{}}
	subOpts := pahoOptsAt(subAddr, unique(t, "q2sub"), false).SetAutoReconnect(true)
	q.sub, _ = connectPaho(t, subOpts)
	tok := q.sub.Subscribe(topic, 2, func(_ mqtt.Client, m mqtt.Message) {
		q.mu.Lock()
		q.got[string(m.Payload())]++
		q.mu.Unlock()
	})
	if !tok.WaitTimeout(waitTimeout) || tok.Error() != nil {
		t.Fatalf("subscribe %s: %v", topic, tok.Error())
	}
	q.pub, _ = connectPaho(t, pahoOptsAt(pubAddr, unique(t, "q2pub"), false).SetAutoReconnect(true))
	return q
}

// start publishes q2-0, q2-1, ... one at a time until stop.
func (q *qos2Pair) start(ctx context.Context) {
	go func() {
		defer close(q.done)
		for i := 0; ; i++ {
			select {
			case <-q.stopc:
				return
			case <-ctx.Done():
				return
			default:
			}
			p := "q2-" + strconv.Itoa(i)
			tok := q.pub.Publish(q.topic, 2, false, p)
			if tok.WaitTimeout(10*time.Second) && tok.Error() == nil {
				q.mu.Lock()
				q.acked[p] = true
				q.mu.Unlock()
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
}

// stop ends the publisher, waits for every acknowledged message to arrive
// (or 15 s), and returns how many were acknowledged, how many of those
// arrived, and how many messages arrived more than once.
func (q *qos2Pair) stop(t *testing.T) (acked, got, dups int) {
	close(q.stopc)
	<-q.done
	deadline := time.Now().Add(15 * time.Second)
	for {
		q.mu.Lock()
		acked, got, dups = len(q.acked), 0, 0
		for p := range q.acked {
			if q.got[p] > 0 {
				got++
			}
		}
		for _, n := range q.got {
			if n > 1 {
				dups++
			}
		}
		q.mu.Unlock()
		if got == acked || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(quietWindow) // late duplicates
	q.mu.Lock()
	defer q.mu.Unlock()
	dups = 0
	for _, n := range q.got {
		if n > 1 {
			dups++
		}
	}
	return acked, got, dups
}

// BenchmarkShardBus_RedisCPUPerMessage measures what one QoS 1 message
// costs the Redis Cluster's masters (INFO cpu, user + sys, summed over the
// three masters) with 0, 1 and 2 replicas subscribed to '#' (every shard):
// the figures of the capacity model in bench/README.md. Publishers on
// replica A spread the messages evenly over 100 first-level topics. Run
// with a fixed count, since each run starts a cluster:
//
//	go test -run '^$' -bench ShardBus -benchtime 20000x .
func BenchmarkShardBus_RedisCPUPerMessage(b *testing.B) {
	for _, subs := range []int{0, 1, 2} {
		b.Run(fmt.Sprintf("subscribed_replicas=%d", subs), func(b *testing.B) {
			benchShardBusCPU(b, subs)
		})
	}
}

func benchShardBusCPU(b *testing.B, subs int) {
	c := redistopo.StartCluster(b)
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs()})
	b.Cleanup(func() { _ = cc.Close() })
	flags := append([]string{"-redis-cluster", strings.Join(c.Addrs(), ",")}, bigQueue...)
	a, rb := startTopoPair(b, flags...)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	tally := loadgen.NewTally()
	var done []<-chan struct{}
	for i, srv := range []*testServer{rb, a}[:subs] {
		s := loadgen.NewSubscriber(fmt.Sprintf("bench-sub-%d-%d", i, time.Now().UnixNano()), "#", tally, topoAddr(srv))
		done = append(done, s.Start(b, ctx, 0, nil))
	}
	const topics = 100
	per := max(1, b.N/topics)
	var pubs []*loadgen.Publisher
	for i := range topics {
		pubs = append(pubs, loadgen.NewPublisher(fmt.Sprintf("pub%d", i), fmt.Sprintf("cap-%d/x", i), dialer(topoAddr(a))))
	}
	cpu := func() map[string]float64 {
		out := map[string]float64{}
		var mu sync.Mutex
		err := cc.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
			s, err := m.Info(ctx, "cpu").Result()
			if err != nil {
				return err
			}
			var sum float64
			for _, line := range strings.Split(s, "\r\n") {
				k, v, _ := strings.Cut(line, ":")
				if k == "used_cpu_sys" || k == "used_cpu_user" {
					f, _ := strconv.ParseFloat(v, 64)
					sum += f
				}
			}
			mu.Lock()
			out[m.Options().Addr] = sum
			mu.Unlock()
			return nil
		})
		if err != nil {
			b.Fatalf("INFO cpu: %v", err)
		}
		return out
	}
	before := cpu()
	b.ResetTimer()
	for _, err := range loadgen.RunPublishers(ctx, pubs, per, 0, time.Now().Add(10*time.Minute)) {
		if err != nil {
			b.Fatalf("publisher: %v", err)
		}
	}
	if subs > 0 {
		if sum := loadgen.AwaitDelivery(pubs, tally, time.Minute, 0); sum.Lost != 0 {
			b.Fatalf("%s", sum)
		}
	}
	b.StopTimer()
	after := cpu()
	cancel()
	for _, d := range done {
		<-d
	}
	msgs := float64(per * topics)
	var total, most float64
	for addr, v := range after {
		d := v - before[addr]
		total += d
		most = max(most, d)
	}
	b.ReportMetric(total/msgs*1e6, "redis_us/msg")
	b.ReportMetric(most/msgs*1e6, "busiest_master_us/msg")
	b.ReportMetric(msgs/b.Elapsed().Seconds(), "msg/s")
}

// clusterDeployment is two in-process replicas (pub on the first, sub on
// the second) on the Redis Cluster c, under their own key prefix, so that
// several deployments share one cluster without seeing each other.
func clusterDeployment(t *testing.T, c *redistopo.Cluster, args ...string) *deployment {
	t.Helper()
	prefix := strings.NewReplacer("/", "-", " ", "-").Replace(unique(t, "p")) + ":"
	flags := append([]string{"-redis-cluster", strings.Join(c.Addrs(), ","), "-redis-prefix", prefix}, args...)
	a := startTopoReplica(t, "node-a", flags...)
	b := startTopoReplica(t, "node-b", flags...)
	return &deployment{name: "redis-cluster-2-replicas", servers: []*testServer{a, b}}
}

// TestShardBus_Interop runs the Eclipse Paho 3.1.1 interoperability
// scenarios (e2e_interop_test.go) on two replicas over a six-node Redis
// Cluster, publishers on one and subscribers on the other: everything
// that works on one Redis works on the sharded bus.
func TestShardBus_Interop(t *testing.T) {
	t.Parallel() // its own cluster; counts, bounds nothing by time
	c := redistopo.StartCluster(t)
	for _, sc := range interopScenarios {
		t.Run(sc.name, func(t *testing.T) {
			sc.run(t, clusterDeployment(t, c, "-acl-file", "testdata/e2e_interop.acl"))
		})
	}
}

// TestShardBus_DeadReplicaWillPublishedOnce SIGKILLs a replica process on
// the Redis Cluster while a client with a will is connected to it: a
// survivor publishes the will exactly once [MQTT-3.1.2-8], on the sharded
// bus, to a subscriber on the survivor.
func TestShardBus_DeadReplicaWillPublishedOnce(t *testing.T) {
	t.Parallel() // waits on Redis failovers and timers, little CPU
	c := redistopo.StartCluster(t)
	flags := []string{"-redis-cluster", strings.Join(c.Addrs(), ",")}
	a := mqtttest.StartProcess(t, "", "da", flags...)
	b := mqtttest.StartProcess(t, "", "db", flags...)
	w := mqtttest.Dial(t, b.Addr())
	w.MustConnect(&packets.Connect{ClientID: unique(t, "watcher"), CleanSession: true, KeepAlive: 60})
	w.Subscribe(1, packets.Subscription{Filter: "will/#", QoS: 1})
	v := mqtttest.Dial(t, a.Addr())
	v.MustConnect(&packets.Connect{ClientID: unique(t, "victim"), CleanSession: true, KeepAlive: 60,
		Will: &packets.Will{Topic: "will/victim", Payload: []byte("died"), QoS: 1}})
	a.Kill(t)
	wills := 0
	// The reaper comes once the liveness key expires (-node-ttl 2s); a
	// second copy would come within another TTL.
	for {
		p, err := w.Read(6 * time.Second)
		if err != nil {
			break
		}
		if pub, ok := p.(*packets.Publish); ok {
			wills++
			w.Send(&packets.Puback{PacketID: pub.PacketID})
		}
	}
	if wills != 1 {
		t.Errorf("the dead replica's client's will was published %d times, want exactly 1 [MQTT-3.1.2-8]", wills)
	}
}

// TestShardBus_SharedSubscriptionAcrossReplicas: members of one group on
// both replicas of the Redis Cluster share 1,000 QoS 1 messages, each
// exactly once, neither more than 1.5 times its fair share [MQTT-4.8.2].
func TestShardBus_SharedSubscriptionAcrossReplicas(t *testing.T) {
	t.Parallel() // its own cluster; counts, bounds nothing by time
	_, _, a, b := startShardedPair(t)
	const n = 1000
	var mu sync.Mutex
	got := map[string]int{}
	per := map[string]int{}
	for _, srv := range []*testServer{a, b} {
		name := srv.Addr()
		c, _ := connectPaho(t, pahoOptsAt(srv.Addr(), unique(t, "member"), true))
		tok := c.Subscribe("$share/g/jobs/#", 1, func(_ mqtt.Client, m mqtt.Message) {
			mu.Lock()
			got[string(m.Payload())]++
			per[name]++
			mu.Unlock()
		})
		if !tok.WaitTimeout(waitTimeout) || tok.Error() != nil {
			t.Fatalf("subscribe: %v", tok.Error())
		}
	}
	// Each replica spreads the messages over the members it knows of, its
	// own and those the other wrote to Redis: until it has read the other's,
	// it is the preferred replica of every message.
	waitFor(t, waitTimeout, "each replica to know of the other's member", func() bool {
		return a.Stats()["bridge_shared_remote_members"] == 1 && b.Stats()["bridge_shared_remote_members"] == 1
	})
	pub, _ := connectPaho(t, pahoOptsAt(a.Addr(), unique(t, "pub"), true))
	for i := range n {
		if tok := pub.Publish(fmt.Sprintf("jobs/%d", i%10), 1, false, strconv.Itoa(i)); !tok.WaitTimeout(waitTimeout) || tok.Error() != nil {
			t.Fatalf("publish %d: %v", i, tok.Error())
		}
	}
	deadline := time.Now().Add(waitTimeout)
	for {
		mu.Lock()
		done := len(got) == n
		mu.Unlock()
		if done || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(quietWindow)
	mu.Lock()
	defer mu.Unlock()
	dups := 0
	for _, k := range got {
		if k > 1 {
			dups++
		}
	}
	// A replica that is not preferred for a message claims it after 50 ms
	// (shareFallback), so that none is lost while the preferred one lags:
	// under -race on a loaded machine it does, and the fallback's wins are
	// its own share plus the other's. The spread is judged on the rest.
	late := map[string]int64{a.Addr(): a.Stats()["bridge_shared_claimed_late"], b.Addr(): b.Stats()["bridge_shared_claimed_late"]}
	t.Logf("shared: %d distinct of %d, %d delivered twice, per member %v, claimed late %v", len(got), n, dups, per, late)
	if len(got) != n || dups != 0 {
		t.Errorf("%d of %d messages delivered, %d more than once: want each exactly once", len(got), n, dups)
	}
	for m, k := range per {
		if k-int(late[m]) > n/2*3/2 {
			t.Errorf("member on %s got %d of %d, %d of them claimed late: more than 1.5 times its fair share", m, k, n, late[m])
		}
	}
}

// TestShardBus_LaggingReplicaPromoted_OfflineSessionGetsEverything: the
// Redis replica of a shard's master is paused (SIGSTOP) while replica A
// acknowledges QoS 1 messages on that shard for an offline persistent
// session of replica B; the master is then SIGKILLed and the lagging
// replica takes over (CLUSTER FAILOVER TAKEOVER), without the messages.
// Every acknowledged message must still reach the session when it returns
// [MQTT-4.3.2-2]: A publishes its recent messages of that shard again when
// it sees that the shard has a new master.
func TestShardBus_LaggingReplicaPromoted_OfflineSessionGetsEverything(t *testing.T) {
	t.Parallel() // waits on Redis failovers and timers, little CPU
	c, cc, a, b := startShardedPair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	level := levelOnSlot(t, ctx, cc, "lag", 512)
	master, replica, rc := syncedShardNodes(t, ctx, cc, 512)

	// The session's own keys stay off the master that fails: what this
	// test checks is the messages, not the loss of the session's last
	// write, which Redis replicates asynchronously too.
	masterOf := clusterMasterOf(t, ctx, cc)
	subID := ""
	for subID == "" {
		id := unique(t, "offline")
		subID = id
		for _, k := range []string{"mqtt:session:", "mqtt:sub:", "mqtt:client:"} {
			if masterOf[slotOf(t, ctx, cc, k+id)] == master {
				subID = ""
			}
		}
	}
	s := mqtttest.Dial(t, topoAddr(b))
	s.MustConnect(&packets.Connect{ClientID: subID, CleanSession: false, KeepAlive: 60})
	s.Subscribe(1, packets.Subscription{Filter: level + "/#", QoS: 1})
	s.Send(&packets.Disconnect{})
	s.ExpectClosed(waitTimeout)
	// B stores the session after the connection closed.
	for cc.HGet(ctx, "mqtt:session:"+subID, "stored_at").Val() == "" {
		if ctx.Err() != nil {
			t.Fatal("the session was never stored")
		}
		time.Sleep(10 * time.Millisecond)
	}

	if !c.Pause(replica) {
		t.Fatalf("no cluster node at %s", replica)
	}
	paused := true
	defer func() {
		if paused {
			c.Resume(replica)
		}
	}()
	// What the master already wrote to the paused replica's socket would
	// still reach it once resumed: the master drops its replica link, and
	// the paused replica cannot dial it again.
	mc := redis.NewClient(&redis.Options{Addr: master})
	if err := mc.Do(ctx, "CLIENT", "KILL", "TYPE", "replica").Err(); err != nil {
		t.Fatalf("CLIENT KILL TYPE replica on %s: %v", master, err)
	}
	_ = mc.Close()
	const n = 50
	p := mqtttest.Dial(t, topoAddr(a))
	p.MustConnect(&packets.Connect{ClientID: unique(t, "pub"), CleanSession: true, KeepAlive: 60})
	for i := range n {
		p.PublishQoS1(uint16(i+1), level+"/x", fmt.Sprintf("m%d", i)) // waits for the PUBACK
	}
	if !c.Kill(master) {
		t.Fatalf("no cluster node at %s", master)
	}
	c.Resume(replica)
	paused = false
	waitPromoted(t, ctx, rc, true) // the lagging replica, without votes
	if n, err := rc.XLen(ctx, bridge.ClusterStreamKey("mqtt:", level)).Result(); err != nil || n >= 50 {
		t.Fatalf("the promoted replica's stream holds %d entries (%v): it did not lag, the test proves nothing", n, err)
	}
	// Service back on the shard: A has its new master.
	for i := 0; ; i++ {
		if probeConnectPublish(topoAddr(a), fmt.Sprintf("%s-%d", unique(t, "probe"), i), level+"/probe", time.Second) == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("A never acknowledged a publish on the shard after the takeover")
		}
		time.Sleep(50 * time.Millisecond)
	}

	before, _ := cc.HGetAll(ctx, "mqtt:session:"+subID).Result()
	s = mqtttest.Dial(t, topoAddr(b))
	if ack := s.MustConnect(&packets.Connect{ClientID: subID, CleanSession: false, KeepAlive: 60}); !ack.SessionPresent {
		t.Fatal("the offline session was not found")
	}
	got := map[string]bool{}
	for deadline := time.Now().Add(10 * time.Second); len(got) < n && time.Now().Before(deadline); {
		pk, err := s.Read(time.Until(deadline))
		if err != nil {
			break
		}
		if pub, ok := pk.(*packets.Publish); ok {
			if pub.QoS > 0 {
				s.Send(&packets.Puback{PacketID: pub.PacketID})
			}
			if strings.HasSuffix(pub.Topic, "/x") {
				got[string(pub.Payload)] = true
			}
		}
	}
	if len(got) != n {
		var missing []string
		for i := range n {
			if !got[fmt.Sprintf("m%d", i)] {
				missing = append(missing, fmt.Sprintf("m%d", i))
			}
		}
		t.Errorf("the session got %d of the %d acknowledged messages; missing %v [MQTT-4.3.2-2]", len(got), n, missing)
		entries, err := rc.XRange(context.Background(), bridge.ClusterStreamKey("mqtt:", level), "-", "+").Result()
		var ids []string
		for _, e := range entries {
			ids = append(ids, e.ID)
		}
		t.Logf("the shard's stream on %s: %d entries (%v) %v; session before: cursor %s stored_at %s; B: %v", replica, len(entries), err, ids, before["cursor"], before["stored_at"], b.Stats())
	}
	t.Logf("A republished %d messages", a.Stats()["bridge_republished_after_redis_restart"])
}

// TestShardBus_Interop5 runs the Eclipse Paho MQTT 5.0 interoperability
// scenarios (e2e_interop5_test.go) on two replicas over a six-node Redis
// Cluster, publishers on one and subscribers on the other.
func TestShardBus_Interop5(t *testing.T) {
	t.Parallel() // its own cluster; counts, bounds nothing by time
	c := redistopo.StartCluster(t)
	for _, sc := range interop5Scenarios {
		t.Run(sc.name, func(t *testing.T) {
			args := append([]string{"-acl-file", "testdata/e2e_interop.acl"}, sc.flags...)
			sc.run(t, clusterDeployment(t, c, args...))
		})
	}
}

// BenchmarkShardBus_OneMasterAtItsLimit holds one master of the Redis
// Cluster at its limit, to check the capacity model (bench/README.md): two
// Redis bridges (no MQTT, so that the load generator costs little) publish
// QoS 1 messages with 4,096 in flight on first-level topics whose shards
// are all on that master, nobody subscribed. It reports the messages a
// second, the master's CPU use (1 = one full core) and its CPU per message.
//
//	go test -run '^$' -bench OneMasterAtItsLimit -benchtime 400000x .
func BenchmarkShardBus_OneMasterAtItsLimit(b *testing.B) {
	c := redistopo.StartCluster(b)
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs()})
	b.Cleanup(func() { _ = cc.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	// Two bridges: one bridge's publisher goroutine alone cannot keep a
	// master busy.
	var bridges []*bridge.Redis
	for i := range 2 {
		r, err := bridge.NewRedis(ctx, bridge.RedisOptions{Client: cc, NodeID: fmt.Sprintf("bench-%d", i), Logger: testLogger()})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = r.Close() })
		bridges = append(bridges, r)
	}

	masterOf := clusterMasterOf(&testing.T{}, ctx, cc)
	target := masterOf[512]
	var levels []string
	for i := 0; len(levels) < 20 && i < 10000; i++ {
		l := "sat" + strconv.Itoa(i)
		n, err := cc.ClusterKeySlot(ctx, bridge.ClusterStreamKey("mqtt:", l)).Result()
		if err != nil {
			b.Fatal(err)
		}
		if masterOf[n] == target {
			levels = append(levels, l)
		}
	}
	mc := redis.NewClient(&redis.Options{Addr: target})
	b.Cleanup(func() { _ = mc.Close() })
	cpu := func() float64 {
		s, err := mc.Info(ctx, "cpu").Result()
		if err != nil {
			b.Fatal(err)
		}
		var sum float64
		for _, line := range strings.Split(s, "\r\n") {
			k, v, _ := strings.Cut(line, ":")
			if k == "used_cpu_sys" || k == "used_cpu_user" {
				f, _ := strconv.ParseFloat(v, 64)
				sum += f
			}
		}
		return sum
	}
	payload := make([]byte, 64)
	window := make(chan struct{}, 4096)
	var wg sync.WaitGroup
	var failed atomic.Int64
	before := cpu()
	b.ResetTimer()
	for i := range b.N {
		window <- struct{}{}
		wg.Add(1)
		bridges[i%2].PublishAsync(ctx, &bridge.Message{Topic: levels[i%len(levels)] + "/x", QoS: 1, Payload: payload}, func(err error) {
			if err != nil {
				failed.Add(1)
			}
			<-window
			wg.Done()
		})
	}
	wg.Wait()
	b.StopTimer()
	used := cpu() - before
	if n := failed.Load(); n > 0 {
		b.Fatalf("%d publishes failed", n)
	}
	secs := b.Elapsed().Seconds()
	b.ReportMetric(float64(b.N)/secs, "msg/s")
	b.ReportMetric(used/secs, "master_cores")
	b.ReportMetric(used/float64(b.N)*1e6, "master_us/msg")
}
