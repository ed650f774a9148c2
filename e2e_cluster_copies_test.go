package main

// Copies of messages in Redis Cluster mode: when a stream shard moves to
// another master (a failover, graceful or not, or an operator's slot
// move), each publishing replica publishes its recent window again there
// (bridge/redis_epoch.go). Receivers drop the copies of what they handled,
// and so must a persistent session that resumes later: these scenarios,
// found by a hostile test run, delivered every completed QoS 2 message of
// the window a second time to a session resumed after the move (the
// receiving replica's position stayed before the dropped copies, and a
// session's replay deduplicated only within what it read).

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bridgemq/server/internal/mqtttest"
	"github.com/bridgemq/server/packets"
)

// hostileCount tallies payloads with a prefix.
func hostileCount(ps []*packets.Publish, prefix string) map[string]int {
	got := map[string]int{}
	for _, p := range ps {
		if s := string(p.Payload); strings.HasPrefix(s, prefix) {
			got[s]++
		}
	}
	return got
}

func hostileKeys(m map[string]int) []string {
	var ks []string
	for k, n := range m {
		ks = append(ks, fmt.Sprintf("%s×%d", k, n))
	}
	sort.Strings(ks)
	return ks
}

// waitSessionStored waits for the persistent session of id to be stored
// after its connection ended (stored_at written).
func waitSessionStored(t *testing.T, ctx context.Context, cc *redis.ClusterClient, id string, after int64) {
	t.Helper()
	waitFor(t, 15*time.Second, "session "+id+" stored", func() bool {
		v, err := cc.HGet(ctx, "mqtt:session:"+id, "stored_at").Int64()
		return err == nil && v >= after
	})
}

// TestClusterCopies_QoS2SessionResumedAfterGracefulFailover_MQTT_4_3_3_2: a persistent QoS 2
// subscriber on replica B receives (and completes) ten QoS 2 messages
// published on replica A. The operator then runs a manual, graceful
// `CLUSTER FAILOVER` on the replica of the shard's master (nothing is
// lost: the replica catches up first). Replica A notices the shard's new
// master and republishes its 10 s window there; B drops the live copies.
// The subscriber then disconnects (DISCONNECT) and resumes its session on
// replica A. Expected: nothing (every message was delivered and completed
// exactly once) [MQTT-4.3.3-2]. A copy delivered again is a QoS 2
// duplicate.
func TestClusterCopies_QoS2SessionResumedAfterGracefulFailover_MQTT_4_3_3_2(t *testing.T) {
	hostileQoS2AfterFailover(t, true)
}

// TestClusterCopies_QoS2SessionResumedWithoutFailover is the control of
// the test above: the same steps without the failover deliver nothing
// twice.
func TestClusterCopies_QoS2SessionResumedWithoutFailover(t *testing.T) {
	hostileQoS2AfterFailover(t, false)
}

func hostileQoS2AfterFailover(t *testing.T, failover bool) {
	t.Parallel()
	_, cc, a, b := startShardedPair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	level := levelOnSlot(t, ctx, cc, "hq", 512)
	_, _, rc := syncedShardNodes(t, ctx, cc, 512)

	subID := unique(t, "sub")
	s := mqtttest.Dial(t, topoAddr(b))
	s.MustConnect(&packets.Connect{ClientID: subID, CleanSession: false, KeepAlive: 60})
	s.Subscribe(1, packets.Subscription{Filter: level + "/#", QoS: 2})

	p := mqtttest.Dial(t, topoAddr(a))
	p.MustConnect(&packets.Connect{ClientID: unique(t, "pub"), CleanSession: true, KeepAlive: 60})
	const n = 10
	for i := range n {
		p.Publish(uint16(i+1), 2, level+"/x", fmt.Sprintf("m%d", i), false)
	}
	first := hostileCount(append(s.PublishesUntil(fmt.Sprintf("m%d", n-1)), &packets.Publish{Payload: []byte(fmt.Sprintf("m%d", n-1))}), "m")
	if len(first) != n {
		t.Fatalf("before the failover the subscriber got %v, want m0..m%d once", hostileKeys(first), n-1)
	}

	before := a.Stats()["bridge_republished_after_redis_restart"]
	if failover {
		if err := rc.Do(ctx, "CLUSTER", "FAILOVER").Err(); err != nil {
			t.Fatalf("CLUSTER FAILOVER: %v", err)
		}
		waitPromoted(t, ctx, rc, false)
	}
	// A publish on another first level of the same shard makes A meet the
	// new master (MOVED), so that it reloads its slot map.
	other := levelOnSlot(t, ctx, cc, "hqo", 512)
	q := mqtttest.Dial(t, topoAddr(a))
	q.MustConnect(&packets.Connect{ClientID: unique(t, "q"), CleanSession: true, KeepAlive: 60})
	q.PublishQoS1(1, other+"/y", "poke")
	if failover {
		waitFor(t, 20*time.Second, "replica A to republish its window to the new master", func() bool {
			return a.Stats()["bridge_republished_after_redis_restart"] > before
		})
	}
	t.Logf("A republished %d", a.Stats()["bridge_republished_after_redis_restart"]-before)
	live := hostileCount(s.Drain(2*time.Second), "m")
	if len(live) != 0 {
		t.Errorf("while connected through the failover the subscriber got again %v [MQTT-4.3.3-2]", hostileKeys(live))
	}
	resumeGetsNothing(t, ctx, cc, s, subID, topoAddr(a), "resumed on replica A")
}

// resumeGetsNothing lets a checkpoint pass while s is connected and idle,
// ends s with DISCONNECT, waits for the session to be
// stored, resumes it at addr and fails (what: where) if anything is
// delivered: every message was completed before [MQTT-4.3.3-2].
func resumeGetsNothing(t *testing.T, ctx context.Context, cc *redis.ClusterClient, s *mqtttest.Client, subID, addr, what string) {
	t.Helper()
	// Let a checkpoint pass too (every 2 s): a step of the scenario, not a
	// wait for a result. A wait on the session's stored_at saw no write
	// in 15 s of this idle, connected session, so there is no condition
	// to wait on here.
	time.Sleep(2500 * time.Millisecond)
	at := time.Now().UnixMilli()
	s.Send(&packets.Disconnect{})
	s.ExpectClosed(waitTimeout)
	waitSessionStored(t, ctx, cc, subID, at)
	s2 := mqtttest.Dial(t, addr)
	if ack := s2.MustConnect(&packets.Connect{ClientID: subID, CleanSession: false, KeepAlive: 60}); !ack.SessionPresent {
		t.Fatal("session not present")
	}
	ps := s2.Drain(3 * time.Second)
	for _, p := range ps {
		t.Logf("after resuming: %q dup=%v qos=%d", p.Payload, p.Dup, p.QoS)
	}
	if again := hostileCount(ps, ""); len(again) != 0 {
		t.Errorf("%s, the QoS 2 session got again %d completed messages: %v [MQTT-4.3.3-2]", what, len(again), hostileKeys(again))
	}
}

// hostileCollect reads until every payload of want arrived or d passed,
// completing each flow, and returns the tally of payloads with prefix.
func hostileCollect(c *mqtttest.Client, want []string, d time.Duration) map[string]int {
	got := map[string]int{}
	deadline := time.Now().Add(d)
	missing := func() bool {
		for _, w := range want {
			if got[w] == 0 {
				return true
			}
		}
		return false
	}
	for missing() && time.Now().Before(deadline) {
		p, err := c.NextPublish(time.Until(deadline))
		if err != nil {
			break
		}
		got[string(p.Payload)]++
	}
	for _, p := range c.Drain(time.Second) {
		got[string(p.Payload)]++
	}
	return got
}

// TestClusterCopies_QoS2SessionResumedAfterSlotMove_MQTT_4_3_3_2: the operator moves the slot of a shard's
// stream by hand (CLUSTER SETSLOT IMPORTING/MIGRATING, MIGRATE of the
// slot's keys, a 2 s pause with the keys on the target while the slot is
// still MIGRATING, then SETSLOT NODE on every master) while a QoS 2
// publisher on replica A publishes between the steps to a persistent QoS 2
// subscriber on replica B. Expected: every acknowledged message exactly
// once, live; and nothing again when the subscriber disconnects and
// resumes its session on replica A.
func TestClusterCopies_QoS2SessionResumedAfterSlotMove_MQTT_4_3_3_2(t *testing.T) {
	t.Parallel()
	_, cc, a, b := startShardedPair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const slot = 512
	level := levelOnSlot(t, ctx, cc, "rs", slot)
	masterOf := clusterMasterOf(t, ctx, cc)
	src := masterOf[slot]
	var dst string
	masters := map[string]bool{}
	for _, m := range masterOf {
		masters[m] = true
		if m != src && dst == "" {
			dst = m
		}
	}
	node := func(addr string) *redis.Client {
		c := redis.NewClient(&redis.Options{Addr: addr})
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	srcC, dstC := node(src), node(dst)
	srcID, _ := srcC.ClusterMyID(ctx).Result()
	dstID, _ := dstC.ClusterMyID(ctx).Result()

	subID := unique(t, "sub")
	s := mqtttest.Dial(t, topoAddr(b))
	s.MustConnect(&packets.Connect{ClientID: subID, CleanSession: false, KeepAlive: 60})
	s.Subscribe(1, packets.Subscription{Filter: level + "/#", QoS: 2})
	// A clean wildcard subscriber on B (every shard) at QoS 1, reading as
	// the messages come.
	wsub := mqtttest.Dial(t, topoAddr(b))
	wsub.MustConnect(&packets.Connect{ClientID: unique(t, "wild"), CleanSession: true, KeepAlive: 60})
	wsub.Subscribe(1, packets.Subscription{Filter: "+/x", QoS: 1})
	p := mqtttest.Dial(t, topoAddr(a))
	p.MustConnect(&packets.Connect{ClientID: unique(t, "pub"), CleanSession: true, KeepAlive: 60})
	var want []string
	id := uint16(0)
	batch := func(tag string) {
		for i := range 20 {
			id++
			pl := fmt.Sprintf("%s%d", tag, i)
			p.Publish(id, 2, level+"/x", pl, false)
			want = append(want, pl)
		}
	}
	must := func(c *redis.Client, args ...any) {
		t.Helper()
		if err := c.Do(ctx, args...).Err(); err != nil {
			t.Fatalf("%s %v: %v", c.Options().Addr, args, err)
		}
	}
	before := a.Stats()["bridge_republished_after_redis_restart"]
	batch("a")
	must(dstC, "CLUSTER", "SETSLOT", slot, "IMPORTING", srcID)
	must(srcC, "CLUSTER", "SETSLOT", slot, "MIGRATING", dstID)
	batch("b")
	keys, err := srcC.ClusterGetKeysInSlot(ctx, slot, 1000).Result()
	if err != nil || len(keys) == 0 {
		t.Fatalf("keys in slot %d: %v %v", slot, keys, err)
	}
	host, port, _ := strings.Cut(dst, ":")
	margs := []any{"MIGRATE", host, port, "", 0, 5000, "KEYS"}
	for _, k := range keys {
		margs = append(margs, k)
	}
	must(srcC, margs...)
	batch("c")
	time.Sleep(2 * time.Second)
	batch("d")
	must(dstC, "CLUSTER", "SETSLOT", slot, "NODE", dstID)
	must(srcC, "CLUSTER", "SETSLOT", slot, "NODE", dstID)
	for m := range masters {
		if m != src && m != dst {
			must(node(m), "CLUSTER", "SETSLOT", slot, "NODE", dstID)
		}
	}
	batch("e")
	got := hostileCollect(s, want, 20*time.Second)
	var lost, dups []string
	for _, w := range want {
		switch {
		case got[w] == 0:
			lost = append(lost, w)
		case got[w] > 1:
			dups = append(dups, fmt.Sprintf("%s×%d", w, got[w]))
		}
	}
	if len(lost) > 0 || len(dups) > 0 {
		t.Errorf("live, of %d acknowledged QoS 2 messages: lost %v, duplicated %v", len(want), lost, dups)
	}
	wgot := hostileCollect(wsub, want, 10*time.Second)
	var wlost []string
	for _, w := range want {
		if wgot[w] == 0 {
			wlost = append(wlost, w)
		}
	}
	if len(wlost) > 0 {
		t.Errorf("live wildcard +/x subscriber (QoS 1) on B lost %d of %d: %v", len(wlost), len(want), wlost)
	}
	if owner := clusterMasterOf(t, ctx, cc)[slot]; owner != dst {
		t.Fatalf("slot %d on %s after the move, want %s", slot, owner, dst)
	}
	waitFor(t, 20*time.Second, "replica A to see the shard's new master", func() bool {
		return a.Stats()["bridge_republished_after_redis_restart"] > before
	})
	t.Logf("A republished %d", a.Stats()["bridge_republished_after_redis_restart"]-before)
	if late := hostileCount(s.Drain(2*time.Second), ""); len(late) != 0 {
		t.Errorf("after the move the live subscriber got again %v", hostileKeys(late))
	}
	resumeGetsNothing(t, ctx, cc, s, subID, topoAddr(a), "resumed on replica A after the reshard")
}

// TestClusterCopies_SessionsAwayDuringMasterKill_MQTT_4_3_3_2: persistent QoS 1 and
// QoS 2 subscribers (exact and wildcard filters) on replica B; a
// publisher on replica A sends QoS 1 and QoS 2 messages all along; the
// subscribers disconnect, the shard's master is SIGKILLed (its replica in
// sync), and once the replica is promoted they resume on replica A.
// Expected: every acknowledged message, QoS 2 exactly once.
func TestClusterCopies_SessionsAwayDuringMasterKill_MQTT_4_3_3_2(t *testing.T) {
	t.Parallel()
	c, cc, a, b := startShardedPair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	level := levelOnSlot(t, ctx, cc, "pk", 512)
	master, _, rc := syncedShardNodes(t, ctx, cc, 512)
	masterOf := clusterMasterOf(t, ctx, cc)
	// Session keys off the failing master: the session's own last write
	// is replicated asynchronously (documented).
	pickID := func(kind string) string {
		for {
			id := unique(t, kind)
			ok := true
			for _, k := range []string{"mqtt:session:", "mqtt:sub:", "mqtt:client:"} {
				ok = ok && masterOf[slotOf(t, ctx, cc, k+id)] != master
			}
			if ok {
				return id
			}
		}
	}
	type subr struct {
		id, filter string
		qos        byte
		c          *mqtttest.Client
		got        map[string]int
	}
	subs := []*subr{
		{id: pickID("q2exact"), filter: level + "/x", qos: 2},
		{id: pickID("q2wild"), filter: level + "/#", qos: 2},
		{id: pickID("q1wild"), filter: "+/x", qos: 1},
	}
	for _, s := range subs {
		s.got = map[string]int{}
		s.c = mqtttest.Dial(t, topoAddr(b))
		s.c.MustConnect(&packets.Connect{ClientID: s.id, CleanSession: false, KeepAlive: 60})
		s.c.Subscribe(1, packets.Subscription{Filter: s.filter, QoS: s.qos})
	}
	p := mqtttest.Dial(t, topoAddr(a))
	p.MustConnect(&packets.Connect{ClientID: unique(t, "pub"), CleanSession: true, KeepAlive: 60})
	var want []string
	id := uint16(0)
	pub := func(tag string, k int) {
		for i := range k {
			id++
			pl := fmt.Sprintf("%s%d", tag, i)
			p.Publish(id, byte(1+i%2), level+"/x", pl, false)
			want = append(want, pl)
		}
	}
	pub("a", 20)
	for _, s := range subs {
		for k, v := range hostileCollect(s.c, want, 10*time.Second) {
			s.got[k] += v
		}
	}
	pub("b", 20) // in flight to the subscribers as they leave
	at := time.Now().UnixMilli()
	for _, s := range subs {
		s.c.Send(&packets.Disconnect{})
		for _, pk := range func() []packets.Packet { _, ps := s.c.ExpectClosed(waitTimeout); return ps }() {
			if pp, ok := pk.(*packets.Publish); ok {
				_ = pp // read but not acknowledged: owed again
			}
		}
	}
	for _, s := range subs {
		waitSessionStored(t, ctx, cc, s.id, at)
	}
	pub("c", 20)
	if !c.Kill(master) {
		t.Fatalf("no node %s", master)
	}
	waitPromoted(t, ctx, rc, false)
	for i := 0; ; i++ {
		if probeConnectPublish(topoAddr(a), fmt.Sprintf("%s-%d", unique(t, "probe"), i), "probe/x", time.Second) == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("A never came back")
		}
		time.Sleep(50 * time.Millisecond)
	}
	pub("d", 20)
	time.Sleep(4 * time.Second) // A's heartbeat finds the new master and republishes
	pub("e", 20)
	for _, s := range subs {
		s.c = mqtttest.Dial(t, topoAddr(a))
		if ack := s.c.MustConnect(&packets.Connect{ClientID: s.id, CleanSession: false, KeepAlive: 60}); !ack.SessionPresent {
			t.Errorf("%s: session not present", s.id)
		}
		for k, v := range hostileCollect(s.c, want, 10*time.Second) {
			s.got[k] += v
		}
	}
	t.Logf("A republished %d", a.Stats()["bridge_republished_after_redis_restart"])
	for _, s := range subs {
		var lost, dups []string
		for i, w := range want {
			q := byte(1 + i%20%2)
			switch {
			case s.got[w] == 0:
				lost = append(lost, w)
			case s.got[w] > 1 && min(q, s.qos) == 2:
				dups = append(dups, fmt.Sprintf("%s×%d", w, s.got[w]))
			}
		}
		if len(lost) > 0 || len(dups) > 0 {
			t.Errorf("%s (%s, QoS %d): of %d acknowledged: lost %v; QoS 2 duplicates %v", s.id, s.filter, s.qos, len(want), lost, dups)
		}
	}
}

// TestClusterCopies_LiveQoS2AfterBusyFailover_MQTT_4_3_3_2: replica B
// remembers the message ids it saw (recentIDs) to drop the copies that
// replica A republishes after a shard's master changed; it remembered the
// last 65,536, fewer than the republish window holds at this rate. A live QoS 2
// subscriber on B completes ten QoS 2 messages; then 80,000 QoS 0 messages
// on another first level reach B (a few seconds of a busy deployment:
// 8,000 messages a second across the cluster); the operator runs a
// graceful CLUSTER FAILOVER of the ten messages' shard, and A republishes
// its 10 s window there. Expected: the connected subscriber gets nothing
// again [MQTT-4.3.3-2].
func TestClusterCopies_LiveQoS2AfterBusyFailover_MQTT_4_3_3_2(t *testing.T) {
	hostileBusyFailover(t, 4)
}

func hostileBusyFailover(t *testing.T, conns int) {
	t.Parallel()
	_, cc, a, b := startShardedPair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	level := levelOnSlot(t, ctx, cc, "lb", 512)
	noise := levelOnSlot(t, ctx, cc, "nz", 11776)
	_, _, rc := syncedShardNodes(t, ctx, cc, 512)

	s := mqtttest.Dial(t, topoAddr(b))
	s.MustConnect(&packets.Connect{ClientID: unique(t, "sub"), CleanSession: true, KeepAlive: 60})
	s.Subscribe(1, packets.Subscription{Filter: level + "/#", QoS: 2})
	// Something on B routes the noise's shard; it reads and discards.
	ns := mqtttest.Dial(t, topoAddr(b))
	ns.MustConnect(&packets.Connect{ClientID: unique(t, "nsub"), CleanSession: true, KeepAlive: 600})
	ns.Subscribe(1, packets.Subscription{Filter: noise + "/#", QoS: 0})
	go func() { _, _ = io.Copy(io.Discard, ns.Conn) }()

	p := mqtttest.Dial(t, topoAddr(a))
	p.MustConnect(&packets.Connect{ClientID: unique(t, "pub"), CleanSession: true, KeepAlive: 60})
	const n = 10
	for i := range n {
		p.Publish(uint16(i+1), 2, level+"/x", fmt.Sprintf("m%d", i), false)
	}
	first := hostileCollect(s, []string{"m9"}, 10*time.Second)
	if len(first) != n {
		t.Fatalf("before: %v", hostileKeys(first))
	}
	published := time.Now()

	recv0 := b.Stats()["bridge_received"]
	const per = 20000
	var wg sync.WaitGroup
	for k := range conns {
		nc := mqtttest.Dial(t, topoAddr(a))
		nc.MustConnect(&packets.Connect{ClientID: unique(t, "noise"), CleanSession: true, KeepAlive: 600})
		var buf []byte
		for i := range per {
			buf, _ = packets.Append(buf, &packets.Publish{Topic: fmt.Sprintf("%s/%d", noise, k), Payload: []byte(strconv.Itoa(i))})
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = nc.Conn.SetWriteDeadline(time.Now().Add(30 * time.Second))
			_, _ = nc.Conn.Write(buf)
		}()
	}
	wg.Wait()
	for deadline := time.Now().Add(8 * time.Second); b.Stats()["bridge_received"]-recv0 < int64(conns*per*7/8) && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("B received %d messages in %v after the ten", b.Stats()["bridge_received"]-recv0, time.Since(published).Round(time.Millisecond))

	before := a.Stats()["bridge_republished_after_redis_restart"]
	if err := rc.Do(ctx, "CLUSTER", "FAILOVER").Err(); err != nil {
		t.Fatalf("CLUSTER FAILOVER: %v", err)
	}
	waitPromoted(t, ctx, rc, false)
	q := mqtttest.Dial(t, topoAddr(a))
	q.MustConnect(&packets.Connect{ClientID: unique(t, "q"), CleanSession: true, KeepAlive: 60})
	q.PublishQoS1(1, levelOnSlot(t, ctx, cc, "lbo", 512)+"/y", "poke")
	waitFor(t, 20*time.Second, "replica A to republish its window", func() bool {
		return a.Stats()["bridge_republished_after_redis_restart"] > before
	})
	t.Logf("A republished %d, %v after the ten were published", a.Stats()["bridge_republished_after_redis_restart"]-before, time.Since(published).Round(time.Millisecond))
	if again := hostileCount(s.Drain(3*time.Second), "m"); len(again) != 0 {
		t.Errorf("the connected QoS 2 subscriber got again %d of the %d messages it had completed: %v [MQTT-4.3.3-2]", len(again), n, hostileKeys(again))
	}
}
