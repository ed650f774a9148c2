package bridge

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/bridgemq/server/broker"
	"github.com/bridgemq/server/internal/redistest"
)

// A delayed will waits in Redis, not in its replica: when the replica
// dies during the delay, or dies with the connection still open, a
// survivor publishes the will once, when it is due [MQTT-3.1.3-9].
func TestRedis_DelayedWillOfDeadReplicaPublishedBySurvivor_MQTT_3_1_3_9(t *testing.T) {
	const delay = time.Second
	for _, how := range []string{"connection lost, then replica died", "replica died with the connection open"} {
		t.Run(how, func(t *testing.T) {
			srv := redistest.Start(t)
			ctx := context.Background()
			fast := func(o *RedisOptions) { o.NodeTTL = time.Second }
			a := newTestRedis(t, srv, "a", fast)
			b := newTestRedis(t, srv, "b", fast)
			watcher := &sink{}
			attach(t, b, "watcher", watcher, true)
			subscribe(t, b, "watcher", "wills/#", 1)

			will := rmsg("wills/c1", 1, "c1 gone")
			will.WillDelay = delay
			c1 := &sink{}
			if _, err := a.Attach(ctx, "c1", "", c1, broker.CleanSession(false), will); err != nil {
				t.Fatal(err)
			}
			lost := time.Now()
			if how == "connection lost, then replica died" {
				if ok, err := a.PublishWill(ctx, "c1", c1, will); ok || err != nil {
					t.Fatalf("PublishWill of a delayed will = %v, %v; want false, nil (scheduled)", ok, err)
				}
				detach(t, a, "c1", c1, &StoredSession{})
			}
			_ = a.Close() // no Detach for an open connection: its replica is gone
			watcher.WaitFor(t, 1)
			if waited := time.Since(lost); waited < delay {
				t.Errorf("will published %v after its connection was lost, before its %v delay", waited, delay)
			}
			afterDeadNodeChecks(t, 2, b)
			fence(t, b, b)
			if got := willPayloads(watcher); len(got) != 1 || got[0] != "c1 gone" {
				t.Fatalf("wills delivered = %q, want c1's once", got)
			}
		})
	}
}

// A new connection with the client id, on any replica, cancels a delayed
// will that is not yet due [MQTT-3.1.3-9].
func TestRedis_DelayedWillCancelledByNewConnection_MQTT_3_1_3_9(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	a := newTestRedis(t, srv, "a")
	b := newTestRedis(t, srv, "b")
	watcher := &sink{}
	attach(t, b, "watcher", watcher, true)
	subscribe(t, b, "watcher", "wills/#", 1)

	will := rmsg("wills/c1", 1, "c1 gone")
	will.WillDelay = time.Second
	c1 := &sink{}
	if _, err := a.Attach(ctx, "c1", "", c1, broker.CleanSession(false), will); err != nil {
		t.Fatal(err)
	}
	if ok, err := a.PublishWill(ctx, "c1", c1, will); ok || err != nil {
		t.Fatalf("PublishWill of a delayed will = %v, %v; want false, nil (scheduled)", ok, err)
	}
	detach(t, a, "c1", c1, &StoredSession{})
	attach(t, b, "c1", &sink{}, false)
	if n := b.Stats()["wills_cancelled"]; n != 1 {
		t.Fatalf("wills_cancelled = %d, want 1", n)
	}
	time.Sleep(will.WillDelay + 2*dueWillsEvery) // past when it would have been due
	fence(t, a, b)
	if got := willPayloads(watcher); len(got) != 0 {
		t.Fatalf("wills delivered = %q, want none", got)
	}
}

// Due wills are taken batch after batch until none is due, not one batch
// per tick: many connections lost at once have their wills when due.
func TestRedis_DueWillsAllTakenInOneRound(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	a := newTestRedis(t, srv, "a")
	const n = 3*dueWillsBatch + 7
	for i := range n {
		will := rmsg(fmt.Sprintf("wills/many/%d", i), 1, "gone")
		if err := a.delayWill(ctx, fmt.Sprintf("many-%d", i), will, time.Millisecond); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(5 * time.Millisecond) // the scenario: every one of them is due
	if err := a.publishDueWills(ctx); err != nil {
		t.Fatal(err)
	}
	if left := newClient(t, srv).ZCard(ctx, a.delayedWillsKey()).Val(); left != 0 {
		t.Fatalf("%d of %d due wills left after one round", left, n)
	}
}
