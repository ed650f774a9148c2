package bridge

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bridgemq/server/internal/redistest"
)

func TestReplIDOf(t *testing.T) {
	ctx := context.Background()
	reply := func(s string) *redis.StringCmd {
		c := redis.NewStringCmd(ctx, "info", "replication")
		c.SetVal(s)
		return c
	}
	info := "# Replication\r\nrole:master\r\nconnected_slaves:0\r\nmaster_failover_state:no-failover\r\n" +
		"master_replid:8e6a3d3e0f1b2c4d5e6f708192a3b4c5d6e7f801\r\nmaster_replid2:0000000000000000000000000000000000000000\r\n"
	if got, err := replIDOf(reply(info)); err != nil || got != "8e6a3d3e0f1b2c4d5e6f708192a3b4c5d6e7f801" {
		t.Errorf("replIDOf = %q, %v", got, err)
	}
	if _, err := replIDOf(reply("# Replication\r\nrole:master\r\n")); err == nil {
		t.Error("replIDOf without master_replid: no error")
	}
	if got, err := replIDOf(nil); err != nil || got != "" {
		t.Errorf("replIDOf(nil) = %q, %v; want \"\", nil", got, err)
	}
	if got := instanceEpoch("", "r"); got != "" {
		t.Errorf("instanceEpoch without epoch = %q, want \"\" (the key must be created again)", got)
	}
	if instanceEpoch("e", "r1") == instanceEpoch("e", "r2") {
		t.Error("a new replication id does not change the instance epoch")
	}
}

// promote gives the Redis at srv a new replication id while keeping its
// data, as a failover to a replica does: REPLICAOF a port nothing listens
// on (no sync can start, so nothing is flushed), then REPLICAOF NO ONE.
func promote(t *testing.T, srv *redistest.Server) {
	t.Helper()
	ctx := context.Background()
	c := newClient(t, srv)
	before := c.Info(ctx, "replication").Val()
	if err := c.ReplicaOf(ctx, "127.0.0.1", "1").Err(); err != nil {
		t.Fatalf("replicaof: %v", err)
	}
	if err := c.ReplicaOf(ctx, "no", "one").Err(); err != nil {
		t.Fatalf("replicaof no one: %v", err)
	}
	idBefore, _ := replIDOf(redis.NewStringResult(before, nil))
	idAfter, err := replIDOf(c.Info(ctx, "replication"))
	if err != nil || idAfter == idBefore {
		t.Fatalf("replication id %q after promotion, before %q (%v): want a new one", idAfter, idBefore, err)
	}
}

// TestRedis_RepublishesAfterFailover: a promotion keeps the epoch key but
// changes the replication id; the publishing replica republishes what it
// accepted in the window, a subscriber that had it does not get it twice,
// and a second promotion republishes it again (the window keeps it).
// TestRedis_RepublishesAfterSilentPromotion covers the promotion noticed
// by the periodic check alone.
func TestRedis_RepublishesAfterFailover(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	a := newTestRedis(t, srv, "a")
	b := newTestRedis(t, srv, "b")
	sub := &sink{}
	attach(t, b, "s", sub, true)
	subscribe(t, b, "s", "fo/#", 1)
	const n = 20
	for i := range n {
		publish(t, a, rmsg("fo/"+strconv.Itoa(i), 1, "x"))
	}
	sub.WaitFor(t, n)

	streamLen := func() int64 {
		var total int64
		for sh := range streamShards {
			total += newClient(t, srv).XLen(ctx, a.streamKey(sh)).Val()
		}
		return total
	}
	for round, want := range []int64{n, 2*n + 1} {
		promote(t, srv)
		// The promotion keeps the connection: nothing tells the publisher
		// before its next epoch check (every epochRecheck, or a heartbeat's
		// request). Ask for one, as the heartbeat does, so that the message
		// published after it is counted under the new epoch.
		a.askEpochCheck()
		topic := "fo/after" + strconv.Itoa(round)
		eventually(t, func() string {
			if err := a.Publish(ctx, rmsg(topic, 1, "x")); err != nil {
				return "publish after promotion: " + err.Error()
			}
			return ""
		})
		eventually(t, func() string {
			if got := a.Stats()["republished_after_redis_restart"]; got != want {
				return fmt.Sprintf("round %d: republished %d, want %d", round, got, want)
			}
			return ""
		})
	}
	// n originals, 2 later messages, and the republished copies.
	if got, want := streamLen(), int64(n+2+n+(n+1)); got != want {
		t.Errorf("streams hold %d entries, want %d", got, want)
	}
	eventually(t, func() string {
		if got := len(sub.Deliveries()); got != n+2 {
			return fmt.Sprintf("subscriber has %d deliveries, want %d", got, n+2)
		}
		return ""
	})
	b.barrierOrFail(t)
	seen := map[string]int{}
	for _, d := range sub.Deliveries() {
		seen[d.Message.Topic]++
	}
	for topic, c := range seen {
		if c != 1 {
			t.Errorf("%s delivered %d times", topic, c)
		}
	}
}

// barrierOrFail waits until every message Redis had sent b's subscription
// connection so far has been handled (a PING through the same connection).
func (r *Redis) barrierOrFail(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := r.barrier(ctx); err != nil {
		t.Fatalf("barrier: %v", err)
	}
}

// TestRedis_MinReplicasAckedWithoutReplicaFails: with MinReplicasAcked 1 and
// no replica, a QoS 1 publish fails with ErrNotReplicated after
// ReplicaAckTimeout and is counted; QoS 0 is not held back.
func TestRedis_MinReplicasAckedWithoutReplicaFails(t *testing.T) {
	srv := redistest.Start(t)
	a := newTestRedis(t, srv, "a", func(o *RedisOptions) { o.MinReplicasAcked = 1 })
	ctx := context.Background()
	start := time.Now()
	err := a.Publish(ctx, rmsg("w/1", 1, "x"))
	if !errors.Is(err, ErrNotReplicated) {
		t.Fatalf("QoS 1 publish without a replica: %v, want ErrNotReplicated", err)
	}
	if took := time.Since(start); took < ReplicaAckTimeout {
		t.Errorf("failed after %s, before the WAIT timeout %s", took, ReplicaAckTimeout)
	}
	if got := a.Stats()["publish_not_replicated"]; got != 1 {
		t.Errorf("publish_not_replicated = %d, want 1", got)
	}
	if err := a.Publish(ctx, rmsg("w/0", 0, "x")); err != nil {
		t.Errorf("QoS 0 publish: %v", err)
	}
}

// TestRedis_RepublishesAfterSilentPromotion: a promotion that keeps the
// connection and fails nothing is still noticed, by the check every
// epochRecheck, with no heartbeat: what was accepted before it is
// published again, and the one published right after it may be too
// (tagged with the epoch read before it), never lost.
func TestRedis_RepublishesAfterSilentPromotion(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	a := newTestRedis(t, srv, "a")
	const n = 5
	for i := range n {
		publish(t, a, rmsg("sp/"+strconv.Itoa(i), 1, "x"))
	}
	promote(t, srv)
	eventually(t, func() string {
		if err := a.Publish(ctx, rmsg("sp/after", 1, "x")); err != nil {
			return "publish after promotion: " + err.Error()
		}
		if got := a.Stats()["republished_after_redis_restart"]; got < n {
			return fmt.Sprintf("republished %d, want at least %d", got, n)
		}
		return ""
	})
}
