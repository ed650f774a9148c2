package bridge

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/bridgemq/server/internal/redistest"
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
