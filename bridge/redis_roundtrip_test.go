package bridge

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bridgemq/server/internal/redistest"
)

// roundTrips counts the commands and pipelines a client sends: each is one
// round trip to Redis.
type roundTrips struct{ n atomic.Int64 }

func (h *roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmd)
	}
}
func (h *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmds)
	}
}

// take returns the round trips since the last call.
func (h *roundTrips) take() int64 { return h.n.Swap(0) }

// TestRedis_RoundTripsPerConnectAndPublish measures what the bridge costs
// Redis for the operations every client does, and keeps it from growing:
// connect and disconnect, clean and persistent, subscribe, and publishing
// (pipelined across publishers). The figures are logged.
func TestRedis_RoundTripsPerConnectAndPublish(t *testing.T) {
	srv := redistest.Start(t)
	hook := &roundTrips{}
	client := redis.NewClient(&redis.Options{Addr: srv.Addr(), MaxRetries: -1, DialTimeout: 500 * time.Millisecond})
	client.AddHook(hook)
	t.Cleanup(func() { _ = client.Close() })
	b, rb, err := NewRedisBroker(context.Background(), RedisOptions{Client: client, NodeID: "rt", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	r := &testNode{Broker: b, Redis: rb}
	t.Cleanup(func() { _ = r.Close() })
	ctx := context.Background()
	// NewRedisBroker returns once its start-up round trips (liveness,
	// index load, the previous run's reap) are done: nothing of them is
	// left to wait for; drop their count.
	hook.take()

	type step struct {
		name string
		max  int64
		run  func()
	}
	sub := &sink{}
	steps := []step{
		{"connect, clean session", 4, func() { attach(t, r, "c1", sub, true) }},
		{"subscribe", 2, func() { subscribe(t, r, "c1", "rt/+/x", 1) }},
		{"disconnect, clean session", 4, func() { _ = r.Detach(ctx, "c1", sub, nil) }},
		{"connect, new persistent session", 4, func() { attach(t, r, "p1", sub, false) }},
		{"disconnect, persistent session", 4, func() {
			subscribe(t, r, "p1", "rt/#", 1)
			hook.take()
			_ = r.Detach(ctx, "p1", sub, &StoredSession{})
		}},
		{"connect, resumed persistent session", 5, func() { attach(t, r, "p1", sub, false) }},
	}
	for _, s := range steps {
		hook.take()
		s.run()
		got := hook.take()
		t.Logf("redis round trips: %-38s %d", s.name, got)
		if got > s.max {
			t.Errorf("%s took %d round trips, want at most %d", s.name, got, s.max)
		}
	}

	// Publishing: 64 concurrent publishers share pipelines.
	const publishers, each = 64, 50
	hook.take()
	var wg sync.WaitGroup
	for p := range publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				if err := r.Publish(ctx, rmsg("rt/"+string(rune('a'+p%26))+"/x", 1, "m")); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	got := hook.take()
	per := float64(got) / float64(publishers*each)
	t.Logf("redis round trips: %-38s %.3f (%d for %d messages)", "per QoS 1 publish, 64 publishers", per, got, publishers*each)
	if per > 0.5 {
		t.Errorf("%.2f round trips per message: publishing is not pipelined", per)
	}
}
