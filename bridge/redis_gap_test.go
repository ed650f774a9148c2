package bridge

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/bridgemq/server/internal/redistest"
)

// publishWithRetry publishes n QoS 1 messages on topic, retrying each until
// Redis accepts it, as a client retries an unacknowledged PUBLISH. It
// returns the ids acknowledged.
func publishWithRetry(t *testing.T, b Bridge, topic string, n int, pause time.Duration) []ID {
	t.Helper()
	var acked []ID
	for i := range n {
		m := rmsg(fmt.Sprintf("%s/%d", topic, i%7), 1, fmt.Sprint(i))
		deadline := time.Now().Add(20 * time.Second)
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			err := b.Publish(ctx, m)
			cancel()
			if err == nil {
				acked = append(acked, m.ID)
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("message %d never acknowledged: %v", i, err)
				return acked
			}
			time.Sleep(20 * time.Millisecond)
		}
		time.Sleep(pause)
	}
	return acked
}

// checkAllDelivered waits until every acked id reached sub and reports
// duplicates.
func checkAllDelivered(t *testing.T, sub *sink, acked []ID) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		seen := make(map[ID]int)
		for _, d := range sub.Deliveries() {
			seen[d.Message.ID]++
		}
		missing, dups := 0, 0
		for _, id := range acked {
			switch n := seen[id]; {
			case n == 0:
				missing++
			case n > 1:
				dups += n - 1
			}
		}
		if missing == 0 {
			t.Logf("%d acknowledged messages all delivered, %d duplicates", len(acked), dups)
			if dups > 0 {
				t.Errorf("%d duplicate deliveries of one message id", dups)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d acknowledged messages never delivered", missing, len(acked))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestRedis_GapReplayAfterPubSubConnectionKilled(t *testing.T) {
	srv := redistest.Start(t)
	a := newTestRedis(t, srv, "a")
	b := newTestRedis(t, srv, "b")
	sub := &sink{}
	attach(t, b, "c1", sub, true)
	subscribe(t, b, "c1", "gap/#", 1)
	admin := newClient(t, srv)

	var acked []ID
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		acked = publishWithRetry(t, a, "gap", 600, time.Millisecond)
	}()
	for range 4 {
		time.Sleep(150 * time.Millisecond)
		if err := admin.Do(context.Background(), "CLIENT", "KILL", "TYPE", "pubsub").Err(); err != nil {
			t.Fatalf("CLIENT KILL: %v", err)
		}
	}
	wg.Wait()
	checkAllDelivered(t, sub, acked)
	if st := b.Stats(); st["replays"] == 0 {
		t.Fatalf("no replay after the subscription was killed: %v", st)
	}
}

func TestRedis_GapReplayAfterRedisRestart(t *testing.T) {
	srv := redistest.Start(t)
	a := newTestRedis(t, srv, "a")
	b := newTestRedis(t, srv, "b")
	sub := &sink{}
	attach(t, b, "c1", sub, true)
	subscribe(t, b, "c1", "gap/#", 1)

	before := publishWithRetry(t, a, "gap", 50, 0)
	checkAllDelivered(t, sub, before)
	// The restarted server is empty (no persistence): what matters is that
	// both replicas recover by themselves and every message acknowledged
	// after the restart arrives, including those published while the
	// subscriber had not yet re-subscribed.
	srv.Restart(t)
	after := publishWithRetry(t, a, "gap", 200, time.Millisecond)
	checkAllDelivered(t, sub, append(before, after...))
	if st := b.Stats(); st["replays"] == 0 {
		t.Fatalf("no replay after restart: %v", st)
	}
}
