package bridge

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/bridgemq/server/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// TestRedis_CheckpointLimitsReplayAfterReplicaDies: a persistent session
// receives many messages while connected to replica a; a dies without
// storing the session. On replica b the session resumes from the last
// checkpoint, not from where it attached: nothing acknowledged is replayed,
// and what arrived after the checkpoint is.
func TestRedis_CheckpointLimitsReplayAfterReplicaDies(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	a := newTestRedis(t, srv, "a")
	sub := &sink{AlwaysIdle: true} // its client acknowledges at once
	attach(t, a, "cp", sub, false)
	subscribe(t, a, "cp", "cp/#", 1)
	const acked = 50
	for i := range acked {
		publish(t, a, rmsg(fmt.Sprintf("cp/%d", i), 1, "x"))
	}
	sub.WaitFor(t, acked)
	deadline := time.Now().Add(3 * checkpointEvery)
	for {
		if err := a.checkpoint(ctx); err != nil {
			t.Fatal(err)
		}
		h, err := newClient(t, srv).HGet(ctx, a.sessionKey("cp"), "cursor").Result()
		if err != nil {
			t.Fatal(err)
		}
		cur, err := decodeCursor(h)
		if err != nil {
			t.Fatal(err)
		}
		a.mu.Lock()
		done := cur == a.lastSeen
		a.mu.Unlock()
		if done {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stored cursor %v never reached the replica's position", cur)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Messages after the checkpoint, then replica a dies: no Detach.
	for i := range 3 {
		publish(t, a, rmsg(fmt.Sprintf("cp/late/%d", i), 1, "x"))
	}
	sub.WaitFor(t, acked+3)
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := newClient(t, srv).Del(ctx, a.aliveKey("a")).Err(); err != nil {
		t.Fatal(err)
	}
	b := newTestRedis(t, srv, "b")
	got := attach(t, b, "cp", &sink{}, false)
	if got == nil {
		t.Fatal("no stored session on the other replica")
	}
	var topics []string
	for _, d := range got.Queued {
		topics = append(topics, d.Message.Topic)
	}
	if len(topics) != 3 || topics[0] != "cp/late/0" || topics[2] != "cp/late/2" {
		t.Fatalf("resumed with %v, want only the 3 messages after the checkpoint", topics)
	}
}

// TestRedis_CheckpointWaitsForAcknowledgement: a session with messages not
// yet acknowledged keeps its stored cursor.
func TestRedis_CheckpointWaitsForAcknowledgement(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	a := newTestRedis(t, srv, "a")
	sub := &sink{} // no Idle: never known to be acknowledged
	attach(t, a, "busy", sub, false)
	subscribe(t, a, "busy", "b/#", 1)
	before, _ := newClient(t, srv).HGet(ctx, a.sessionKey("busy"), "cursor").Result()
	publish(t, a, rmsg("b/1", 1, "x"))
	sub.WaitFor(t, 1)
	if err := a.checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	after, _ := newClient(t, srv).HGet(ctx, a.sessionKey("busy"), "cursor").Result()
	if before != after {
		t.Fatalf("cursor moved from %q to %q while a delivery was unacknowledged", before, after)
	}
}

// idleSession starts replica a on a Redis of its own with the persistent
// session "cp" connected and subscribed to cp/#, its client acknowledging
// everything at once; rc reads that Redis.
func idleSession(t *testing.T) (rc *redis.Client, a *testNode, sub *sink) {
	t.Helper()
	srv := redistest.Start(t)
	a = newTestRedis(t, srv, "a")
	sub = &sink{AlwaysIdle: true}
	attach(t, a, "cp", sub, false)
	subscribe(t, a, "cp", "cp/#", 1)
	return newClient(t, srv), a, sub
}

// TestRedis_CheckpointWritesOnlyItsOwnConnectionsSession: a checkpoint
// writes the cursor of a live connection only while the session hash
// still names that connection. A session another replica has claimed
// meanwhile (a takeover this replica has not heard of yet) keeps the
// cursor its new connection stored, and a session that ended (its hash
// deleted) is not made again from a cursor alone, which a later CONNECT
// would take for a stored session [MQTT-3.2.2-2] [MQTT-3.1.2-23].
func TestRedis_CheckpointWritesOnlyItsOwnConnectionsSession(t *testing.T) {
	cases := []struct {
		name   string
		change func(ctx context.Context, rc *redis.Client, key string) error
		check  func(ctx context.Context, rc *redis.Client, key string) error
	}{
		{"claimed by another connection",
			func(ctx context.Context, rc *redis.Client, key string) error {
				return rc.HSet(ctx, key, "conn", "another", "cursor", "theirs").Err()
			},
			func(ctx context.Context, rc *redis.Client, key string) error {
				if got := rc.HGet(ctx, key, "cursor").Val(); got != "theirs" {
					return fmt.Errorf("cursor %q, want the new connection's %q", got, "theirs")
				}
				return nil
			}},
		{"ended",
			func(ctx context.Context, rc *redis.Client, key string) error {
				return rc.Del(ctx, key).Err()
			},
			func(ctx context.Context, rc *redis.Client, key string) error {
				if n := rc.Exists(ctx, key).Val(); n != 0 {
					return fmt.Errorf("session hash made again: %v", rc.HGetAll(ctx, key).Val())
				}
				return nil
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			rc, a, sub := idleSession(t)
			key := a.sessionKey("cp")
			if err := tc.change(ctx, rc, key); err != nil {
				t.Fatal(err)
			}
			// The replica's position moves past the session's cursor.
			publish(t, a, rmsg("cp/1", 1, "x"))
			sub.WaitFor(t, 1)
			if err := a.checkpoint(ctx); err != nil {
				t.Fatal(err)
			}
			if err := tc.check(ctx, rc, key); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestRedis_SaveWaitsForACheckpointInFlight: a checkpoint took a live
// session's cursor, and its write is still on its way to Redis when the
// connection leaves, having received more. Save stores the session only
// once that write has landed, so the cursor left in Redis is the one taken
// when the connection left, and the session resumes with nothing it had
// acknowledged [MQTT-4.4.0-1]. The test stands in for the checkpoint: it
// holds checkpointMu, and writes the old cursor before releasing it.
func TestRedis_SaveWaitsForACheckpointInFlight(t *testing.T) {
	ctx := context.Background()
	rc, a, sub := idleSession(t)
	a.mu.Lock()
	old := encodeCursor(ptr(a.cursorLocked(a.conns["cp"])))
	a.mu.Unlock()

	a.checkpointMu.Lock()
	publish(t, a, rmsg("cp/1", 1, "acknowledged"))
	sub.WaitFor(t, 1)
	saved := make(chan error, 1)
	go func() { saved <- a.Detach(ctx, "cp", sub, &StoredSession{}) }()
	select {
	case err := <-saved:
		a.checkpointMu.Unlock()
		t.Fatalf("Detach returned (%v) while a checkpoint's write was in flight", err)
	case <-time.After(200 * time.Millisecond):
	}
	if err := rc.HSet(ctx, a.sessionKey("cp"), "cursor", old).Err(); err != nil {
		t.Fatal(err)
	}
	a.checkpointMu.Unlock()
	if err := <-saved; err != nil {
		t.Fatal(err)
	}
	st := attach(t, a, "cp", &sink{}, false)
	if st == nil {
		t.Fatal("session not stored")
	}
	if q := queuedPayloads(st); len(q) != 0 {
		t.Fatalf("resumed with %v, acknowledged before the connection left", q)
	}
}

func ptr[T any](v T) *T { return &v }

// TestRedis_CheckpointWritesEveryChunk: more sessions than one pipeline
// of cursors holds (checkpointChunk) all have their cursor brought
// forward, the last chunk's as the first's.
func TestRedis_CheckpointWritesEveryChunk(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	rc := newClient(t, srv)
	a := newTestRedis(t, srv, "a")
	n := checkpointChunk + checkpointChunk/4
	subs := make([]*sink, n)
	for i := range n {
		id := fmt.Sprintf("cp-%d", i)
		subs[i] = &sink{AlwaysIdle: true}
		attach(t, a, id, subs[i], false)
		subscribe(t, a, id, "cp/#", 1)
	}
	before := rc.HGet(ctx, a.sessionKey("cp-0"), "cursor").Val()
	publish(t, a, rmsg("cp/1", 1, "x"))
	for _, s := range subs {
		s.WaitFor(t, 1)
	}
	if err := a.checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	a.mu.Lock()
	want := encodeCursor(&a.lastSeen)
	a.mu.Unlock()
	if want == before {
		t.Fatalf("the replica's position did not move (%s)", want)
	}
	for i := range n {
		if got := rc.HGet(ctx, a.sessionKey(fmt.Sprintf("cp-%d", i)), "cursor").Val(); got != want {
			t.Fatalf("session %d of %d: cursor %q, want the replica's position %q", i, n, got, want)
		}
	}
}
