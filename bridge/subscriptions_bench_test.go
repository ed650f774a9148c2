package bridge

import (
	"context"
	"crypto/rand"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/bridgemq/server/broker"
	"github.com/bridgemq/server/internal/redistest"
)

// manyFilters returns n filters: exact ones, and one in ten a wildcard with
// its own literal prefix.
func manyFilters(n int) []Subscription {
	out := make([]Subscription, n)
	for i := range out {
		f := fmt.Sprintf("dev/%d/state", i)
		if i%10 == 0 {
			f = fmt.Sprintf("site/%d/+/temp", i)
		}
		out[i] = Subscription{Filter: f, QoS: 1}
	}
	return out
}

// BenchmarkSubscriptions_100k adds 100,000 filters for one client and
// removes them (Detach of a clean session), per operation: "Bounded under
// abuse" item 1. Before the fix, 20,000 exact filters took 57 s to release
// on a replica; the whole add and remove of 100,000 now takes well under a
// second on both bridges.
func BenchmarkSubscriptions_100k(b *testing.B) {
	subs := manyFilters(100_000)
	ctx := context.Background()
	run := func(b *testing.B, br Bridge) {
		sub := &sink{}
		for b.Loop() {
			if _, err := br.Attach(ctx, "heavy", "", sub, broker.CleanSession(true), nil); err != nil {
				b.Fatal(err)
			}
			if err := br.SubscribeMany(ctx, "heavy", subs); err != nil {
				b.Fatal(err)
			}
			if err := br.Detach(ctx, "heavy", sub, nil); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("memory", func(b *testing.B) {
		m := broker.NewMemory(broker.MemoryOptions{})
		defer m.Close()
		run(b, m)
		if n := m.Stats()["subscription_filters"]; n != 0 {
			b.Fatalf("%d filters left", n)
		}
	})
	b.Run("redis", func(b *testing.B) {
		srv := redistest.Start(b)
		r := newTestRedis(b, srv, "a")
		run(b, r)
		r.psMu.Lock()
		defer r.psMu.Unlock()
		if n, p, c := r.Broker.Stats()["subscription_filters"], len(r.patterns.Patterns()), len(r.patterns.Channels()); n+int64(p+c) != 0 {
			b.Fatalf("left %d filters, %d patterns, %d channels", n, p, c)
		}
	})
}

// TestRedis_ChunkedRoutingMatchesTrie_MQTT_3_3_5_1: two clients route and
// release thousands of overlapping filters concurrently, chunk by chunk;
// afterwards the Redis subscriptions are exactly what the pattern set
// holds, the pattern set holds exactly the trie's filters, and a message
// matching several of a client's filters reaches it once, at the highest
// QoS granted [MQTT-3.3.5-1].
func TestRedis_ChunkedRoutingMatchesTrie_MQTT_3_3_5_1(t *testing.T) {
	srv := redistest.Start(t)
	r := newTestRedis(t, srv, "a")
	pub := newTestRedis(t, srv, "b")
	ctx := context.Background()
	all := manyFilters(6000)
	a, b := &sink{}, &sink{}
	for id, s := range map[string]*sink{"A": a, "B": b} {
		if _, err := r.Attach(ctx, id, "", s, broker.CleanSession(true), nil); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := r.SubscribeMany(ctx, "A", all[:4000]); err != nil {
			t.Error(err)
		}
	})
	wg.Go(func() {
		if err := r.SubscribeMany(ctx, "B", all[2000:]); err != nil {
			t.Error(err)
		}
	})
	wg.Wait()
	wg.Go(func() {
		if err := r.Detach(ctx, "A", a, nil); err != nil {
			t.Error(err)
		}
	})
	wg.Go(func() {
		extra := []Subscription{{Filter: "dev/4001/state", QoS: 2}, {Filter: "dev/+/state", QoS: 0}, {Filter: "dev/#", QoS: 1}}
		if err := r.SubscribeMany(ctx, "B", extra); err != nil {
			t.Error(err)
		}
	})
	wg.Wait()

	r.psMu.Lock()
	channels, patterns, filters := r.patterns.Channels(), r.patterns.Patterns(), r.patterns.Filters()
	r.psMu.Unlock()
	trie := r.Broker.Stats()["subscription_filters"]
	if want := 4000 + 2; filters != want || trie != int64(want) {
		t.Fatalf("pattern set %d filters, trie %d, want %d", filters, trie, want)
	}
	gotCh, err := r.rdb.PubSubChannels(ctx, r.msgPrefix+"*").Result()
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(gotCh)
	if !slices.Equal(gotCh, channels) {
		t.Fatalf("Redis holds %d channels, pattern set %d", len(gotCh), len(channels))
	}
	numPat, err := r.rdb.PubSubNumPat(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	if int(numPat) != len(patterns) {
		t.Fatalf("Redis holds %d patterns, pattern set %d: %v", numPat, len(patterns), patterns)
	}
	// dev/4001/state matches three of B's filters: once, at QoS 2.
	for _, topic := range []string{"dev/4001/state", "dev/10/state"} {
		if err := pub.Publish(ctx, &Message{ID: newTestID(), Topic: topic, QoS: 2}); err != nil {
			t.Fatal(err)
		}
	}
	b.WaitFor(t, 2)
	fence(t, pub, r) // any repeat would have arrived before the fence
	got := b.Deliveries()
	if len(got) != 2 || got[0].Message.Topic != "dev/4001/state" || got[0].QoS != 2 || got[1].QoS != 1 {
		t.Fatalf("B got %d deliveries: %+v", len(got), got)
	}
	if n := len(a.Deliveries()); n != 0 {
		t.Fatalf("A, detached, got %d deliveries", n)
	}
}

func newTestID() ID {
	var id ID
	_, _ = rand.Read(id[:])
	return id
}
