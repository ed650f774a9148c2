package bridge

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/bridgemq/server/internal/redistest"
)

// Section 4.8.2 across replicas: with a member on each of two replicas,
// each message goes to exactly one of them, and each replica claims its
// part (the members share the load).
func TestRedis_Share_ExactlyOnceAcrossReplicas_MQTT_4_8_2(t *testing.T) {
	srv := redistest.Start(t)
	a := newTestRedis(t, srv, "a")
	b := newTestRedis(t, srv, "b")
	sa, sb := &sink{}, &sink{}
	attach(t, a, "ma", sa, true)
	attach(t, b, "mb", sb, true)
	subscribe(t, a, "ma", "$share/g/t/+", 1)
	subscribe(t, b, "mb", "$share/g/t/+", 1)
	const n = 600
	for i := range n {
		publish(t, a, rmsg("t/x", 1, fmt.Sprint(i)))
	}
	seen := make(map[ID]int)
	waitUntil(t, 10*time.Second, func() string {
		if got := len(sa.Deliveries()) + len(sb.Deliveries()); got < n {
			return fmt.Sprintf("%d of %d delivered", got, n)
		}
		return ""
	})
	fence(t, a, b)
	fence(t, b, a)
	da, db := sa.Deliveries(), sb.Deliveries()
	for _, d := range append(da, db...) {
		seen[d.Message.ID]++
	}
	if len(seen) != n || len(da)+len(db) != n {
		t.Fatalf("%d deliveries of %d distinct messages, want %d of %d: each exactly once", len(da)+len(db), len(seen), n, n)
	}
	if len(da) < n/4 || len(db) < n/4 {
		t.Fatalf("a's member got %d, b's %d: the replicas should share the load", len(da), len(db))
	}
	if ca, cb := a.Redis.Stats()["shared_claimed"], b.Redis.Stats()["shared_claimed"]; ca+cb != n {
		t.Fatalf("claims a=%d b=%d, want %d in all", ca, cb, n)
	}
}

// A replica preferred for a message that has no member to take it (its
// count in Redis is stale) does not lose it: another replica with members
// claims it after the fallback delay. Here a announces members its core
// does not have, so it never claims; b's member must still get every
// QoS 1 message.
func TestRedis_Share_FallbackTakesWhatThePreferredReplicaLeaves(t *testing.T) {
	srv := redistest.Start(t)
	a := newTestRedis(t, srv, "a")
	b := newTestRedis(t, srv, "b")
	const group = "$share/g/t"
	a.Redis.ShareMembers(group, 5)
	sb := &sink{}
	attach(t, b, "mb", sb, true)
	subscribe(t, b, "mb", group, 1)
	waitUntil(t, 10*time.Second, func() string {
		b.Redis.shares.mu.Lock()
		defer b.Redis.shares.mu.Unlock()
		if v := b.Redis.shares.remote[group]; len(v) != 1 || v[0] != (shareNode{"a", 5}) {
			return fmt.Sprintf("b sees %v, want a with 5 members", v)
		}
		return ""
	})
	const n = 120
	for i := range n {
		publish(t, a, rmsg("t", 1, fmt.Sprint(i)))
	}
	sb.WaitFor(t, n)
	fence(t, a, b)
	if got := len(sb.Deliveries()); got != n {
		t.Fatalf("b's member got %d, want each of %d once", got, n)
	}
}

// A replica that wins a message's claim and finds no member to take it
// (its last member's connection is closing) does not lose it. Here x
// announces members its core does not have, so that it is preferred for
// nearly every message and claims none; a and b both claim at the
// fallback, at the same moment. Giving the claim back (DEL) lost every
// message a won: b's fallback had already failed. The message goes to the
// group's list in Redis instead, and b's member gets every one, once.
func TestRedis_Share_ClaimWonWithoutMemberIsHandedOff_MQTT_4_8_2(t *testing.T) {
	srv := redistest.Start(t)
	x := newTestRedis(t, srv, "x")
	a := newTestRedis(t, srv, "a")
	b := newTestRedis(t, srv, "b")
	const group = "$share/g/t"
	x.Redis.ShareMembers(group, 50)
	sa, sb := &sink{}, &sink{}
	sa.Refuse() // a's member: its connection is closing
	attach(t, a, "ma", sa, true)
	attach(t, b, "mb", sb, true)
	subscribe(t, a, "ma", group, 1)
	subscribe(t, b, "mb", group, 1)
	waitShareViews(t, group, 2, a, b)
	const n = 100
	for i := range n {
		publish(t, a, rmsg("t", 1, fmt.Sprint(i)))
	}
	sb.WaitFor(t, n)
	fence(t, a, b)
	fence(t, b, a)
	seen := make(map[string]int)
	for _, d := range sb.Deliveries() {
		seen[string(d.Message.Payload)]++
	}
	if len(seen) != n || len(sb.Deliveries()) != n {
		t.Fatalf("b's member got %d deliveries of %d distinct messages, want each of %d once", len(sb.Deliveries()), len(seen), n)
	}
	if a.Redis.Stats()["shared_handed_off"] == 0 {
		t.Fatal("a won no claim: the test did not exercise the hand-off")
	}
	if left := a.Redis.rdb.LLen(context.Background(), a.Redis.shareQueueKey(group)).Val(); left != 0 {
		t.Fatalf("%d messages left in the group's list", left)
	}
}

// waitShareViews waits until each of nodes counts members of group on
// others other replicas (their refresh of sharenodes).
func waitShareViews(t *testing.T, group string, others int, nodes ...*testNode) {
	t.Helper()
	for _, n := range nodes {
		waitUntil(t, 10*time.Second, func() string {
			n.Redis.shares.mu.Lock()
			defer n.Redis.shares.mu.Unlock()
			if len(n.Redis.shares.remote[group]) != others {
				return fmt.Sprintf("%s sees %v, want %d other replicas", n.Redis.node, n.Redis.shares.remote[group], others)
			}
			return ""
		})
	}
}
