package bridge

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bridgemq/server/broker"
	"github.com/bridgemq/server/internal/redistest"
)

// waitUntil polls cond until it returns "" or d passes, then fails with
// what cond last said.
func waitUntil(t *testing.T, d time.Duration, cond func() string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		msg := cond()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", d, msg)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// sessionSub is a sink that ends like a session does when it is taken
// over or closed by its bridge: it publishes its will through the bridge's
// arbitration, then detaches.
type sessionSub struct {
	*sink
	published atomic.Int32 // wills this connection published
	ended     atomic.Bool  // its end began: later TakeOvers do nothing
	detached  atomic.Bool  // its Detach returned: the bridge is done with it
}

func newSessionSub(b Bridge, id string, will *Message) *sessionSub {
	s := &sessionSub{sink: &sink{}}
	s.OnTakeOver = func() {
		if s.ended.Swap(true) {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if will != nil {
			if ok, err := b.PublishWill(ctx, id, s, will); err != nil {
				panic(fmt.Sprintf("PublishWill(%s): %v", id, err))
			} else if ok {
				s.published.Add(1)
			}
		}
		if err := b.Detach(ctx, id, s, nil); err != nil {
			panic(fmt.Sprintf("Detach(%s): %v", id, err))
		}
		s.detached.Store(true)
	}
	return s
}

func clientRecord(t *testing.T, rdb *redis.Client, id string) map[string]string {
	t.Helper()
	h, err := rdb.HGetAll(context.Background(), "mqtt:client:"+id).Result()
	if err != nil {
		t.Fatalf("HGETALL mqtt:client:%s: %v", id, err)
	}
	return h
}

// onlineAt returns "" when the client record says id is online on node.
func onlineAt(t *testing.T, rdb *redis.Client, id, node string) string {
	h := clientRecord(t, rdb, id)
	if h["state"] != "1" || h["node"] != node || h["conn"] == "" {
		return fmt.Sprintf("mqtt:client:%s = %v, want state 1 on %s", id, h, node)
	}
	return ""
}

func willPayloads(s *sink) []string {
	var out []string
	for _, d := range s.Deliveries() {
		out = append(out, string(d.Message.Payload))
	}
	return out
}

// TestRedis_ReRegistersAfterRedisRestartEmpty: Redis restarts without
// persistence while replica a has clients with wills. a must register them
// again, so that a takeover from b still closes the first connection
// [MQTT-3.1.4-2], and a killed afterwards still has its clients' wills
// published, once [MQTT-3.1.2-8].
func TestRedis_ReRegistersAfterRedisRestartEmpty(t *testing.T) {
	srv := redistest.Start(t)
	fast := func(o *RedisOptions) { o.NodeTTL = time.Second }
	a := newTestRedis(t, srv, "a", fast)
	b := newTestRedis(t, srv, "b", fast)
	watcher := &sink{}
	attach(t, b, "watcher", watcher, true)
	subscribe(t, b, "watcher", "wills/#", 1)

	w1, w2 := rmsg("wills/c1", 1, "c1 gone"), rmsg("wills/c2", 1, "c2 gone")
	c1 := newSessionSub(a, "c1", w1)
	if _, err := a.Attach(context.Background(), "c1", "", c1, broker.CleanSession(true), w1); err != nil {
		t.Fatal(err)
	}
	c2 := newSessionSub(a, "c2", w2)
	if _, err := a.Attach(context.Background(), "c2", "", c2, broker.CleanSession(false), w2); err != nil {
		t.Fatal(err)
	}
	subscribe(t, a, "c2", "c2/inbox", 1)
	if err := a.SubscribeMany(context.Background(), "c2", []Subscription{{Filter: "c2/opts", QoS: 1, Options: SubOptions{NoLocal: true, ID: 42}}}); err != nil {
		t.Fatal(err)
	}

	srv.Restart(t) // empty: no client record, node index, will or subscription left
	rdb := newClient(t, srv)
	ctx := context.Background()
	start := time.Now()
	waitUntil(t, 5*time.Second, func() string {
		for _, id := range []string{"c1", "c2"} {
			if msg := onlineAt(t, rdb, id, "a"); msg != "" {
				return msg
			}
			if w, _ := rdb.HGet(ctx, "mqtt:session:"+id, "will").Result(); w == "" {
				return "no will in mqtt:session:" + id
			}
			if n := rdb.HExists(ctx, "mqtt:node:a", id).Val(); !n {
				return "mqtt:node:a does not list " + id
			}
		}
		if q := rdb.HGet(ctx, "mqtt:sub:c2", "c2/inbox").Val(); q != "1" {
			return fmt.Sprintf("mqtt:sub:c2 c2/inbox = %q, want 1", q)
		}
		if q := rdb.HGet(ctx, "mqtt:sub:c2", "c2/opts").Val(); q != "5:42" {
			return fmt.Sprintf("mqtt:sub:c2 c2/opts = %q, want 5:42 (options and identifier kept)", q)
		}
		if rdb.Exists(ctx, "mqtt:alive:a").Val() != 1 || !rdb.SIsMember(ctx, "mqtt:nodes", "a").Val() {
			return "node a not registered"
		}
		return ""
	})
	t.Logf("re-registered %s after the restart", time.Since(start).Round(time.Millisecond))

	// (a) The same client id on b closes c1 on a; c1's will comes once.
	if _, err := b.Attach(ctx, "c1", "", &sink{}, broker.CleanSession(true), nil); err != nil {
		t.Fatal(err)
	}
	if c1.TakenOver() == 0 {
		t.Fatal("c1 on a was not closed by a CONNECT with its client id on b [MQTT-3.1.4-2]")
	}
	watcher.WaitFor(t, 1)

	// (b) a dies with c2 attached: b publishes c2's will, once.
	_ = a.Close()
	watcher.WaitFor(t, 2)
	waitUntil(t, 5*time.Second, func() string {
		if rdb.Exists(ctx, "mqtt:node:a").Val() != 0 {
			return "dead node a's index not removed"
		}
		return ""
	})
	afterDeadNodeChecks(t, 2, b)
	if got := willPayloads(watcher); len(got) != 2 || got[0] != "c1 gone" || got[1] != "c2 gone" {
		t.Fatalf("wills delivered = %q, want c1's then c2's, once each", got)
	}
	if st := clientRecord(t, rdb, "c2")["state"]; st != "0" {
		t.Fatalf("c2 state = %q after its node died, want 0", st)
	}
}

// aclClient connects as a Redis ACL user that the test can make read-only.
func aclClient(t *testing.T, srv *redistest.Server, admin *redis.Client, user string) *redis.Client {
	t.Helper()
	if err := admin.Do(context.Background(), "ACL", "SETUSER", user, "on", ">pw", "~*", "&*", "+@all").Err(); err != nil {
		t.Fatalf("ACL SETUSER %s: %v", user, err)
	}
	c := redis.NewClient(&redis.Options{Addr: srv.Addr(), Username: user, Password: "pw", MaxRetries: -1, DialTimeout: 500 * time.Millisecond})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// TestRedis_ReapedLiveReplicaPublishesWillOnce: replica a cannot write its
// heartbeat for longer than its TTL (Redis refuses its writes), so b
// declares it dead and publishes the will of a's client, which is still
// connected. When a can write again it finds out: the connection whose will
// went out is closed without publishing it again, a connection without a
// will is registered again, and a connection that arrives later still gets
// its own will published once when a really dies.
func TestRedis_ReapedLiveReplicaPublishesWillOnce(t *testing.T) {
	srv := redistest.Start(t)
	admin := newClient(t, srv)
	ctx := context.Background()
	fast := func(o *RedisOptions) { o.NodeTTL = time.Second }
	a := newTestRedis(t, srv, "a", fast, func(o *RedisOptions) { o.Client = aclClient(t, srv, admin, "node-a") })
	b := newTestRedis(t, srv, "b", fast)
	watcher := &sink{}
	attach(t, b, "watcher", watcher, true)
	subscribe(t, b, "watcher", "wills/#", 1)

	w1 := rmsg("wills/c1", 1, "c1 gone")
	c1 := newSessionSub(a, "c1", w1)
	if _, err := a.Attach(ctx, "c1", "", c1, broker.CleanSession(true), w1); err != nil {
		t.Fatal(err)
	}
	c2 := newSessionSub(a, "c2", nil)
	if _, err := a.Attach(ctx, "c2", "", c2, broker.CleanSession(true), nil); err != nil {
		t.Fatal(err)
	}

	// Redis refuses a's writes: its liveness key lapses and b reaps it.
	if err := admin.Do(ctx, "ACL", "SETUSER", "node-a", "resetkeys", "%R~*").Err(); err != nil {
		t.Fatalf("make node-a read-only: %v", err)
	}
	start := time.Now()
	watcher.WaitFor(t, 1)
	t.Logf("b declared a dead %s after a's writes were refused", time.Since(start).Round(time.Millisecond))
	if c1.TakenOver() > 0 {
		t.Fatal("c1 closed while a could not reach Redis")
	}

	// a can write again: it notices it was reaped.
	if err := admin.Do(ctx, "ACL", "SETUSER", "node-a", "resetkeys", "~*").Err(); err != nil {
		t.Fatalf("make node-a writable: %v", err)
	}
	waitUntil(t, 5*time.Second, func() string {
		// Its end has run to completion, not only begun: the test closes
		// a next, which would fail a Detach still storing.
		if !c1.detached.Load() {
			return "c1, whose will b published, is still open on a"
		}
		return onlineAt(t, admin, "c2", "a")
	})
	if n := c1.published.Load(); n != 0 {
		t.Fatalf("a published c1's will %d times after b had published it", n)
	}
	if c2.TakenOver() > 0 {
		t.Fatal("c2, which has no will, was closed instead of registered again")
	}
	if h := clientRecord(t, admin, "c1"); h["state"] != "0" {
		t.Fatalf("c1 record = %v, want offline", h)
	}

	// A connection made now is a's again: when a dies, b publishes its
	// will once.
	w3 := rmsg("wills/c3", 1, "c3 gone")
	if _, err := a.Attach(ctx, "c3", "", &sink{}, broker.CleanSession(true), w3); err != nil {
		t.Fatal(err)
	}
	_ = a.Close()
	watcher.WaitFor(t, 2)
	waitUntil(t, 5*time.Second, func() string {
		if admin.Exists(ctx, "mqtt:node:a").Val() != 0 {
			return "dead node a's index not removed"
		}
		return ""
	})
	afterDeadNodeChecks(t, 2, b)
	if got := willPayloads(watcher); len(got) != 2 || got[0] != "c1 gone" || got[1] != "c3 gone" {
		t.Fatalf("wills delivered = %q, want c1's once, then c3's once", got)
	}
}

// TestRedis_DuplicateNodeIDRefused: a second replica with the id of a live
// one does not start; a replica restarting under its own id after a crash
// waits for the old liveness key to lapse, then starts and publishes the
// wills its previous run left behind.
func TestRedis_DuplicateNodeIDRefused(t *testing.T) {
	srv := redistest.Start(t)
	fast := func(o *RedisOptions) { o.NodeTTL = time.Second }
	first := newTestRedis(t, srv, "n1", fast)
	watcher := &sink{}
	other := newTestRedis(t, srv, "other", fast)
	attach(t, other, "watcher", watcher, true)
	subscribe(t, other, "watcher", "wills/#", 1)

	start := time.Now()
	dup, err := NewRedis(context.Background(), RedisOptions{Client: newClient(t, srv), NodeID: "n1", NodeTTL: time.Second})
	if err == nil {
		_ = dup.Close()
		t.Fatal("a second replica with node id n1 started while n1 is alive")
	}
	if !errors.Is(err, ErrNodeIDInUse) {
		t.Fatalf("NewRedis with a live node's id: %v, want ErrNodeIDInUse", err)
	}
	t.Logf("refused after %s: %v", time.Since(start).Round(time.Millisecond), err)

	// n1 "crashes" with a client attached, and restarts at once.
	if _, err := first.Attach(context.Background(), "c1", "", &sink{}, broker.CleanSession(true), rmsg("wills/c1", 1, "c1 gone")); err != nil {
		t.Fatal(err)
	}
	_ = first.Close()
	start = time.Now()
	again := newTestRedis(t, srv, "n1", fast)
	t.Logf("restart under the same id started after %s", time.Since(start).Round(time.Millisecond))
	watcher.WaitFor(t, 1)
	afterDeadNodeChecks(t, 2, other, again)
	if got := willPayloads(watcher); len(got) != 1 {
		t.Fatalf("wills = %q, want the previous run's client's, once", got)
	}
	_ = again
}

// A session belongs to its user, also across a Redis that restarted empty
// (issue 7, item 2): alice's live persistent connection on b is forgotten
// by Redis; bob's CONNECT with her client id on a can then claim it, as
// nothing in Redis names her any more. When b registers its live
// connections again it takes the id back (the claim was made only because
// Redis lost hers), ends bob's connection, and keeps alice's: her record,
// session and subscriptions, with none of bob's. Redis's loss is played by
// deleting what it held of alice and of b and giving it a new epoch, so
// that bob's claim surely comes before b notices (after a real restart it
// races b's reconnection); b's heartbeat is slow, and then asked for.
func TestRedis_OtherUsersClaimDuringRedisRestartIsTakenBack_Issue7_2(t *testing.T) {
	srv := redistest.Start(t)
	a := newTestRedis(t, srv, "a")
	b := newTestRedis(t, srv, "b", func(o *RedisOptions) { o.NodeTTL = time.Minute })
	ctx := context.Background()
	rdb := newClient(t, srv)
	alice := selfDetaching(b, "dev", true)
	if _, err := b.Attach(ctx, "dev", "alice", alice, broker.CleanSession(false), nil); err != nil {
		t.Fatal(err)
	}
	subscribe(t, b, "dev", "alice/#", 1)
	_, aliceAt := claimOf(b, "dev")

	if err := rdb.Del(ctx, "mqtt:client:dev", "mqtt:session:dev", "mqtt:sub:dev", "mqtt:alive:b", "mqtt:node:b", "mqtt:epoch").Err(); err != nil {
		t.Fatal(err)
	}
	// Bob's claim is later by the clock (claimed_ms): in the same
	// millisecond as alice's, which this test reached on a loaded machine
	// (5 in 15 runs beside two busy loops), the record's holder keeps the
	// id and alice's connection is the one ended.
	waitClockPast(aliceAt)
	bob := &sink{} // stays registered on a when ended, for the check below
	if _, err := a.Attach(ctx, "dev", "bob", bob, broker.CleanSession(false), nil); err != nil {
		t.Fatalf("bob's claim while Redis has forgotten alice: %v (the scenario needs it to succeed)", err)
	}
	subscribe(t, a, "dev", "bob/#", 1)
	if owner := clientRecord(t, rdb, "dev")["owner"]; owner != "bob" {
		t.Fatalf("record owner %q after bob's claim, want bob", owner)
	}

	b.askBeat()
	waitUntil(t, 5*time.Second, func() string {
		rec := clientRecord(t, rdb, "dev")
		if rec["owner"] != "alice" || rec["node"] != "b" || rec["state"] != "1" {
			return fmt.Sprintf("client record %v, want alice's connection on b", rec)
		}
		if bob.TakenOver() == 0 {
			return "bob's connection on a not ended"
		}
		return ""
	})
	if alice.TakenOver() > 0 {
		t.Fatal("alice's live connection was ended for bob's claim")
	}
	if owner := rdb.HGet(ctx, "mqtt:session:dev", "owner").Val(); owner != "alice" {
		t.Fatalf("session owner %q, want alice", owner)
	}
	subs := rdb.HGetAll(ctx, "mqtt:sub:dev").Val()
	if _, ok := subs["bob/#"]; ok || subs["alice/#"] != "1" {
		t.Fatalf("stored subscriptions %v, want alice's alone", subs)
	}
	// Bob's connection ends storing nothing over hers.
	_ = a.Detach(ctx, "dev", bob, &StoredSession{Subscriptions: map[string]byte{"bob/#": 1}})
	if rec := clientRecord(t, rdb, "dev"); rec["owner"] != "alice" || rec["state"] != "1" {
		t.Fatalf("record %v after bob's connection ended, want alice's, online", rec)
	}
	if subs := rdb.HGetAll(ctx, "mqtt:sub:dev").Val(); len(subs) != 1 || subs["alice/#"] != "1" {
		t.Fatalf("stored subscriptions %v after bob's connection ended, want alice's alone", subs)
	}
}

// A will kept in Redis is judged by the ACL in force when a replica
// publishes it for another replica's connection, not by the rules of when
// its connection began (issue 7, item 1): alice's wills were allowed at
// CONNECT and revoked (a SIGHUP) before a died; the survivor publishes
// neither her immediate will nor her delayed one when it comes due, and
// still publishes bob's.
func TestRedis_StoredWillJudgedByTheACLInForce_Issue7_1(t *testing.T) {
	srv := redistest.Start(t)
	var revoked atomic.Bool
	auth := func(o *RedisOptions) {
		o.NodeTTL = time.Second
		o.WillAuth = func(_, user, _ string) bool { return !revoked.Load() || user != "alice" }
	}
	a := newTestRedis(t, srv, "a", auth)
	b := newTestRedis(t, srv, "b", auth)
	ctx := context.Background()
	watcher := &sink{}
	attach(t, b, "watcher", watcher, true)
	subscribe(t, b, "watcher", "wills/#", 1)

	w1, w3 := rmsg("wills/c1", 1, "c1 gone"), rmsg("wills/c3", 1, "c3 gone")
	if _, err := a.Attach(ctx, "c1", "alice", &sink{}, broker.CleanSession(true), w1); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Attach(ctx, "c3", "bob", &sink{}, broker.CleanSession(true), w3); err != nil {
		t.Fatal(err)
	}
	w2 := rmsg("wills/c2", 1, "c2 gone")
	w2.WillDelay = time.Second
	c2 := &sink{}
	if _, err := a.Attach(ctx, "c2", "alice", c2, broker.CleanSession(false), w2); err != nil {
		t.Fatal(err)
	}
	if ok, err := a.PublishWill(ctx, "c2", c2, w2); ok || err != nil {
		t.Fatalf("PublishWill of a delayed will = %v, %v; want false, nil (scheduled)", ok, err)
	}
	detach(t, a, "c2", c2, &StoredSession{})

	revoked.Store(true)
	_ = a.Close() // dies with c1 and c3 connected
	afterDeadNodeChecks(t, 2, b)
	watcher.WaitFor(t, 1)
	time.Sleep(w2.WillDelay + 2*dueWillsEvery) // past when c2's was due
	fence(t, b, b)
	if got := willPayloads(watcher); len(got) != 1 || got[0] != "c3 gone" {
		t.Fatalf("wills delivered = %q, want bob's alone", got)
	}
	if n := b.Stats()["wills_refused"]; n != 2 {
		t.Fatalf("wills_refused = %d, want 2 (alice's immediate and delayed wills)", n)
	}
}

// After Redis lost its data, the younger of two users' connections never
// takes the id from the older one, whichever replica registers its
// connections again first (a hostile review saw the thief's replica take
// it back from the owner 75 ms after the owner's replica had): here b has
// already taken alice's id back when a, where bob's younger connection
// still is, registers again; a ends bob's connection and leaves alice's
// record alone.
func TestRedis_YoungerClaimNeverTakesTheIdBack_Issue7_2(t *testing.T) {
	srv := redistest.Start(t)
	a := newTestRedis(t, srv, "a")
	b := newTestRedis(t, srv, "b", func(o *RedisOptions) { o.NodeTTL = time.Minute })
	ctx := context.Background()
	rdb := newClient(t, srv)
	alice := &sink{}
	if _, err := b.Attach(ctx, "dev", "alice", alice, broker.CleanSession(false), nil); err != nil {
		t.Fatal(err)
	}
	aliceConn, aliceAt := claimOf(b, "dev")
	if err := rdb.Del(ctx, "mqtt:client:dev", "mqtt:session:dev", "mqtt:epoch").Err(); err != nil {
		t.Fatal(err)
	}
	waitClockPast(aliceAt) // bob's claim is later by the clock
	bob := &sink{}
	if _, err := a.Attach(ctx, "dev", "bob", bob, broker.CleanSession(false), nil); err != nil {
		t.Fatalf("bob's claim while Redis has forgotten alice: %v", err)
	}
	// b has taken the id back (as its reconcile writes it), and its request
	// to end bob's connection has not reached a yet.
	if err := rdb.HSet(ctx, "mqtt:client:dev", "conn", aliceConn, "node", "b", "owner", "alice", "state", "1", "claimed_ms", aliceAt).Err(); err != nil {
		t.Fatal(err)
	}
	a.Redis.dataLost.Store(true)
	if err := a.Redis.reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if rec := clientRecord(t, rdb, "dev"); rec["owner"] != "alice" || rec["conn"] != aliceConn {
		t.Fatalf("record %v after a registered bob's connection again, want alice's", rec)
	}
	waitUntil(t, 5*time.Second, func() string {
		if bob.TakenOver() == 0 {
			return "bob's connection on a not ended"
		}
		return ""
	})
	if alice.TakenOver() > 0 {
		t.Fatal("alice's connection was ended")
	}
}

// claimOf returns the connection id and claim time (claimed_ms) of the
// connection of clientID attached to n.
func claimOf(n *testNode, clientID string) (conn string, claimedMS int64) {
	n.Redis.mu.Lock()
	defer n.Redis.mu.Unlock()
	c := n.Redis.conns[clientID]
	return c.conn, c.claimedMS
}

// waitClockPast waits until this process's clock has passed ms (unix
// milliseconds): a claim made after it is younger by claimed_ms.
func waitClockPast(ms int64) {
	for time.Now().UnixMilli() <= ms {
		time.Sleep(time.Millisecond)
	}
}
