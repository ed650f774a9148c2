package bridge

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bridgemq/server/internal/redistest"
)

// Callers of the shared pipelines each get their own commands' replies and
// their own first error, however many share a pipeline, and a failing
// command fails only its caller.
func TestCmdBatcher_EachCallerGetsItsOwnReplies(t *testing.T) {
	b, stop := startBatcher(t)
	t.Cleanup(stop)

	for _, tt := range []struct {
		name    string
		callers int
	}{
		{"one caller", 1},
		{"more callers than a batch holds", 3 * batchMax},
	} {
		t.Run(tt.name, func(t *testing.T) {
			errs := make([]error, tt.callers)
			got := make([]string, tt.callers)
			var callers sync.WaitGroup
			for i := range tt.callers {
				callers.Add(1)
				go func() {
					defer callers.Done()
					key := fmt.Sprintf("batch:%s:%d", tt.name, i)
					var get *redis.StringCmd
					errs[i] = b.pipelined(context.Background(), func(ctx context.Context, p redis.Pipeliner) {
						p.Set(ctx, key, i, 0)
						get = p.Get(ctx, key)
						if i%5 == 4 {
							p.HGetAll(ctx, key) // WRONGTYPE: fails this caller alone
						}
					})
					got[i] = get.Val()
				}()
			}
			callers.Wait()
			for i := range tt.callers {
				if got[i] != fmt.Sprint(i) {
					t.Errorf("caller %d read %q, want its own %d", i, got[i], i)
				}
				wrongType := i%5 == 4
				if wrongType != (errs[i] != nil) || (wrongType && !strings.HasPrefix(errs[i].Error(), "WRONGTYPE")) {
					t.Errorf("caller %d: err %v, want WRONGTYPE only from callers with a failing command", i, errs[i])
				}
			}
		})
	}
}

// startBatcher starts shared pipelines on a Redis of the test's own; stop
// closes them as the bridge's Close does and waits for their goroutines.
func startBatcher(t *testing.T) (b *cmdBatcher, stop func()) {
	rdb := newClient(t, redistest.Start(t))
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	b = newCmdBatcher(ctx, rdb, wg.Add, wg.Done)
	return b, func() { cancel(); wg.Wait() }
}

// Once the bridge closes, no caller waits for a batch goroutine that is
// gone: it returns at once with the bridge's end.
func TestCmdBatcher_CallersNeverHangOnClose(t *testing.T) {
	b, stop := startBatcher(t)
	if err := b.pipelined(context.Background(), func(ctx context.Context, p redis.Pipeliner) { p.Ping(ctx) }); err != nil {
		t.Fatalf("ping: %v", err)
	}
	stop()
	start := time.Now()
	err := b.pipelined(context.Background(), func(ctx context.Context, p redis.Pipeliner) { p.Ping(ctx) })
	if !errors.Is(err, context.Canceled) {
		t.Errorf("after close: err %v, want context.Canceled", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("after close the call took %v", d)
	}
}

// A script runs by its hash, and by its body once Redis has lost it (a
// restart, SCRIPT FLUSH).
func TestCmdBatcher_ScriptAfterRedisLostIt(t *testing.T) {
	b, stop := startBatcher(t)
	t.Cleanup(stop)
	s := redis.NewScript(`return ARGV[1]`)
	for _, tt := range []struct {
		name        string
		load, flush bool
	}{
		{"not loaded yet", false, false},
		{"loaded", true, false},
		{"flushed", false, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if tt.flush {
				if err := b.rdb.ScriptFlush(context.Background()).Err(); err != nil {
					t.Fatal(err)
				}
			}
			if tt.load {
				if err := s.Load(context.Background(), b.rdb).Err(); err != nil {
					t.Fatal(err)
				}
			}
			cmd, err := b.script(context.Background(), s, nil, tt.name)
			if err != nil {
				t.Fatalf("script: %v", err)
			}
			if got, _ := cmd.Text(); got != tt.name {
				t.Fatalf("script returned %q, want %q", got, tt.name)
			}
		})
	}
}
