package bridge

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/bridgemq/server/broker"
	"github.com/bridgemq/server/internal/redistest"
)

// No key is left behind forever: a clean session's client record expires
// a few minutes after it ends, and a persistent session offline longer
// than SessionExpiry is removed by Redis itself (issue 7, item 11).
func TestRedis_KeysExpireAfterSessionsEnd_Issue7_11(t *testing.T) {
	srv := redistest.Start(t)
	a := newTestRedis(t, srv, "a", func(o *RedisOptions) { o.SessionExpiry = time.Second })
	rdb := newClient(t, srv)
	ctx := context.Background()

	for i := range 50 {
		id := fmt.Sprintf("clean-%d", i)
		s := &sink{}
		attach(t, a, id, s, true)
		detach(t, a, id, s, nil)
	}
	keys := rdb.Keys(ctx, "mqtt:client:clean-*").Val()
	if len(keys) != 50 {
		t.Fatalf("%d clean client records, want 50 while they linger", len(keys))
	}
	for _, k := range keys {
		if ttl := rdb.PTTL(ctx, k).Val(); ttl <= 0 || ttl > cleanRecordTTL {
			t.Fatalf("%s: TTL %v, want (0, %v]", k, ttl, cleanRecordTTL)
		}
	}

	s := &sink{}
	attach(t, a, "p", s, false)
	subscribe(t, a, "p", "exp/#", 1)
	persistentKeys := []string{"mqtt:client:p", "mqtt:sub:p", "mqtt:session:p"}
	for _, k := range persistentKeys {
		if ttl := rdb.PTTL(ctx, k).Val(); ttl != -1 {
			t.Fatalf("%s while connected: TTL %v, want none", k, ttl)
		}
	}
	_, s2 := resume(t, a, "p", s) // a resumed session loses its expiry
	for _, k := range persistentKeys {
		if ttl := rdb.PTTL(ctx, k).Val(); ttl != -1 {
			t.Fatalf("%s after resuming: TTL %v, want none", k, ttl)
		}
	}
	detach(t, a, "p", s2, &StoredSession{})
	deadline := time.Now().Add(5 * time.Second)
	for rdb.Exists(ctx, persistentKeys...).Val() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("persistent session keys still there 5s after a 1s session expiry")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if st := attach(t, a, "p", &sink{}, false); st != nil {
		t.Fatalf("expired session resumed: %+v", st)
	}
}

func TestMemory_SessionExpires_Issue7_11(t *testing.T) {
	m := broker.NewMemory(broker.MemoryOptions{SessionExpiry: 200 * time.Millisecond})
	t.Cleanup(func() { _ = m.Close() })
	s := &sink{}
	attach(t, m, "p", s, false)
	subscribe(t, m, "p", "exp/#", 1)
	detach(t, m, "p", s, &StoredSession{})
	if st := attach(t, m, "q", &sink{}, false); st != nil {
		t.Fatalf("unrelated id got a session")
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		// Swept: the expired session's subscription is released.
		if m.Stats()["subscription_filters"] == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("expired session never swept")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if st := attach(t, m, "p", &sink{}, false); st != nil {
		t.Fatalf("expired session resumed: %+v", st)
	}
}
