package bridge

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bridgemq/server/broker"
	"github.com/bridgemq/server/internal/redistest"
)

// streamsMemory sums MEMORY USAGE (every node counted: SAMPLES 0) of the
// stream keys, and returns their entries.
func streamsMemory(t testing.TB, rdb *redis.Client) (bytes, entries int64) {
	t.Helper()
	ctx := context.Background()
	for sh := range streamShards {
		key := "mqtt:stream:" + strconv.Itoa(sh)
		n, err := rdb.MemoryUsage(ctx, key, 0).Result()
		if err != nil && err != redis.Nil {
			t.Fatalf("MEMORY USAGE %s: %v", key, err)
		}
		bytes += n
		entries += rdb.XLen(ctx, key).Val()
	}
	return bytes, entries
}

// usedMemory reads INFO memory used_memory.
func usedMemory(t testing.TB, rdb *redis.Client) int64 {
	t.Helper()
	info, err := rdb.Info(context.Background(), "memory").Result()
	if err != nil {
		t.Fatalf("INFO memory: %v", err)
	}
	for _, line := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "used_memory:"); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	t.Fatal("INFO memory: no used_memory")
	return 0
}

// waitStreamsWithin waits until the streams' MEMORY USAGE is at most limit
// (the trimmer works after the appends), and returns it.
func waitStreamsWithin(t testing.TB, rdb *redis.Client, limit int64) (bytes, entries int64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		bytes, entries = streamsMemory(t, rdb)
		if bytes <= limit || time.Now().After(deadline) {
			return bytes, entries
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// publishAll publishes msgs through b concurrently (so that batches form,
// as under load) and fails on any error.
func publishAll(t testing.TB, b *testNode, msgs []*Message) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, len(msgs))
	for _, m := range msgs {
		wg.Add(1)
		b.PublishAsync(context.Background(), m, func(err error) {
			if err != nil {
				errs <- err
			}
			wg.Done()
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("publish: %v", err)
	}
}

// Issue "Bounded under abuse" item 4: the streams are bounded by bytes, not
// only by count. 200 QoS 1 messages of 512 KiB (100 MiB) to topics nobody
// subscribes to, with StreamMaxBytes 16 MiB: once the trimmer has run, the
// stream keys hold at most the budget plus a quarter (what the publisher
// appends between two measurements), and Redis's used_memory has grown by
// about as much. Before, the streams kept all 100 MiB (count cap 100,000
// per shard). MQTT_TEST_ABUSE=long publishes 400, as in the issue.
func TestRedis_StreamsBoundedByBytes(t *testing.T) {
	const budget = 16 << 20
	n := 200
	if os.Getenv("MQTT_TEST_ABUSE") == "long" {
		n = 400
	}
	srv := redistest.Start(t)
	b := newTestRedis(t, srv, "a", func(o *RedisOptions) { o.StreamMaxBytes = budget })
	rdb := newClient(t, srv)
	before := usedMemory(t, rdb)

	payload := make([]byte, 512<<10)
	var msgs []*Message
	for i := range n {
		msgs = append(msgs, &Message{ID: broker.NewID(), Topic: fmt.Sprintf("big%d/x", i%8), QoS: 1, Payload: payload, Time: time.Now()})
	}
	publishAll(t, b, msgs)

	limit := int64(budget) * 5 / 4
	mem, entries := waitStreamsWithin(t, rdb, limit)
	grown := usedMemory(t, rdb) - before
	t.Logf("%d × 512 KiB published: streams hold %d entries in %d bytes (MEMORY USAGE); used_memory +%d bytes; budget %d",
		n, entries, mem, grown, budget)
	if mem > limit {
		t.Errorf("streams use %d bytes, want at most %d (budget %d + 25%%)", mem, limit, budget)
	}
	if limit := int64(budget) * 3 / 2; grown > limit {
		t.Errorf("used_memory grew by %d bytes, want at most %d", grown, limit)
	}
	if entries == 0 {
		t.Error("streams are empty: the newest entry of each shard must stay")
	}

	// One busy shard may use the whole budget, not a sixteenth of it: 600
	// messages of 48 KiB (28 MiB) to one topic keep the newest that fit,
	// the oldest go first, across shards.
	msgs = msgs[:0]
	for range 600 {
		msgs = append(msgs, &Message{ID: broker.NewID(), Topic: "busy/x", QoS: 1, Payload: payload[:48<<10], Time: time.Now()})
	}
	publishAll(t, b, msgs)
	mem, _ = waitStreamsWithin(t, rdb, limit)
	kept := rdb.XLen(context.Background(), "mqtt:stream:"+strconv.Itoa(shardOf("busy/x"))).Val()
	t.Logf("then 600 × 48 KiB to one topic: streams %d bytes; its shard keeps %d entries", mem, kept)
	if mem > limit {
		t.Errorf("streams use %d bytes, want at most %d", mem, limit)
	}
	// Each 48 KiB entry takes 56 KiB (jemalloc); the other shards keep
	// their newest 512 KiB entry: ~210 fit. The trimmer's estimate may cut
	// more than needed, never below half the budget here.
	if kept < 100 || mem < budget/2 {
		t.Errorf("the busy shard keeps %d entries of 48 KiB and the streams %d bytes, want ≥ 100 and ≥ half the budget", kept, mem)
	}
}

// Item 4: entries older than MessageExpiry are trimmed (XTRIM MINID ~), not
// only skipped when read.
func TestRedis_StreamsTrimmedByAge(t *testing.T) {
	srv := redistest.Start(t)
	b := newTestRedis(t, srv, "a", func(o *RedisOptions) { o.MessageExpiry = 300 * time.Millisecond })
	rdb := newClient(t, srv)
	ctx := context.Background()
	key := "mqtt:stream:" + strconv.Itoa(shardOf("age/x"))
	// 8 KiB entries: one per stream node (stream-node-max-bytes 4096), so
	// MINID ~ trims them one by one.
	payload := make([]byte, 8<<10)
	for range 5 {
		publish(t, b, &Message{ID: broker.NewID(), Topic: "age/x", QoS: 1, Payload: payload, Time: time.Now()})
	}
	last := rdb.XRevRangeN(ctx, key, "+", "-", 1).Val()
	if len(last) != 1 {
		t.Fatal("no stream entry")
	}
	old, _ := parseStreamID(last[0].ID)
	deadline := time.Now().Add(5 * time.Second)
	for {
		publish(t, b, &Message{ID: broker.NewID(), Topic: "age/x", QoS: 1, Payload: []byte("tick"), Time: time.Now()})
		first := rdb.XRangeN(ctx, key, "-", "+", 1).Val()
		if id, _ := parseStreamID(first[0].ID); id.after(old) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("entries older than the 300ms expiry still in the stream after 5s (first %s)", first[0].ID)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Item 4: what trimming removed is lost to an offline session, and
// counted: a session whose cursor lies before entries trimmed away counts
// offline_queue_trimmed on resume and gets what the stream still holds.
func TestRedis_OfflineSessionTrimmedIsCounted(t *testing.T) {
	const budget = 2 << 20
	srv := redistest.Start(t)
	b := newTestRedis(t, srv, "a", func(o *RedisOptions) { o.StreamMaxBytes = budget })
	s := &sink{}
	attach(t, b, "p", s, false)
	subscribe(t, b, "p", "gap/#", 1)
	publish(t, b, rmsg("gap/x", 1, "first"))
	s.WaitFor(t, 1)
	detach(t, b, "p", s, &StoredSession{})

	payload := make([]byte, 256<<10)
	var msgs []*Message
	for range 20 { // 5 MiB on one shard
		msgs = append(msgs, &Message{ID: broker.NewID(), Topic: "gap/x", QoS: 1, Payload: payload, Time: time.Now()})
	}
	publishAll(t, b, msgs)
	waitStreamsWithin(t, newClient(t, srv), budget*5/4)
	s1 := &sink{}
	st := attach(t, b, "p", s1, false)
	if st == nil {
		t.Fatal("persistent session not found")
	}
	if got := b.Stats()["offline_queue_trimmed"]; got != 1 {
		t.Errorf("offline_queue_trimmed = %d, want 1", got)
	}
	if q := len(st.Queued); q == 0 || q >= 20 {
		t.Errorf("%d messages queued on resume, want the few the 2 MiB budget kept", q)
	}

	// Nothing trimmed past the new cursor: no new count.
	resume(t, b, "p", s1)
	if got := b.Stats()["offline_queue_trimmed"]; got != 1 {
		t.Errorf("offline_queue_trimmed = %d after a resume with nothing trimmed, want still 1", got)
	}
}

// commandStats reads INFO commandstats: calls and usec per command.
func commandStats(t testing.TB, rdb *redis.Client) map[string][2]int64 {
	t.Helper()
	info, err := rdb.Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatalf("INFO commandstats: %v", err)
	}
	out := make(map[string][2]int64)
	for _, line := range strings.Split(info, "\r\n") {
		name, rest, ok := strings.Cut(strings.TrimPrefix(line, "cmdstat_"), ":")
		if !ok || !strings.HasPrefix(line, "cmdstat_") {
			continue
		}
		var calls, usec int64
		for _, kv := range strings.Split(rest, ",") {
			k, v, _ := strings.Cut(kv, "=")
			n, _ := strconv.ParseInt(v, 10, 64)
			switch k {
			case "calls":
				calls = n
			case "usec":
				usec = n
			}
		}
		out[name] = [2]int64{calls, usec}
	}
	return out
}

// trimmerCost sums the calls and µs of what the byte trimmer sends: MEMORY
// USAGE, the ends script (EVAL) and XTRIM.
func trimmerCost(st map[string][2]int64) [2]int64 {
	var c [2]int64
	for _, k := range []string{"memory|usage", "eval", "xtrim"} {
		c[0] += st[k][0]
		c[1] += st[k][1]
	}
	return c
}

// Redis CPU per published QoS 1 message (INFO commandstats, evalsha usec
// over messages) with the stream trims off, by age only, and by age and
// bytes, flat out (batches of up to 256) and one message at a time.
// A measurement, not a check: MQTT_TEST_MEASURE=1 runs it.
func TestRedis_PublishScriptCost(t *testing.T) {
	if os.Getenv("MQTT_TEST_MEASURE") == "" {
		t.Skip("a measurement: MQTT_TEST_MEASURE=1 runs it")
	}
	for _, size := range []int{64, 512 << 10} {
		for _, c := range []struct {
			name           string
			expiry         time.Duration
			budget         int64
			flatN, singleN int
		}{
			{"no trims (the commands of the previous script)", 0, 0, 0, 0},
			{"age trim", time.Hour, 0, 0, 0},
			{"age and byte trims", time.Hour, 256 << 20, 0, 0},
		} {
			flatN, singleN := 50000, 2000
			if size > 1024 {
				flatN, singleN = 400, 200
			}
			srv := redistest.Start(t)
			b := newTestRedis(t, srv, "m", func(o *RedisOptions) { o.MessageExpiry = c.expiry; o.StreamMaxBytes = c.budget })
			rdb := newClient(t, srv)
			payload := make([]byte, size)
			msgs := make([]*Message, flatN)
			for i := range msgs {
				msgs[i] = &Message{ID: broker.NewID(), Topic: "cost/x", QoS: 1, Payload: payload, Time: time.Now()}
			}
			_ = rdb.ConfigResetStat(context.Background())
			publishAll(t, b, msgs)
			st := commandStats(t, rdb)
			flat, flatTrim := st["evalsha"], trimmerCost(st)
			_ = rdb.ConfigResetStat(context.Background())
			for range singleN {
				publish(t, b, &Message{ID: broker.NewID(), Topic: "cost/x", QoS: 1, Payload: payload, Time: time.Now()})
			}
			st = commandStats(t, rdb)
			single, singleTrim := st["evalsha"], trimmerCost(st)
			t.Logf("%d B, %s: flat out %.2f µs/msg (%d calls, %.1f msgs/call; trimmer %d commands, %d µs); one at a time %.2f µs/msg (trimmer %d commands, %d µs)",
				size, c.name, float64(flat[1]+flatTrim[1])/float64(flatN), flat[0], float64(flatN)/float64(flat[0]), flatTrim[0], flatTrim[1],
				float64(single[1]+singleTrim[1])/float64(singleN), singleTrim[0], singleTrim[1])
			srv.Stop()
		}
	}
}

// Item 4: a replica replaying a blip of its subscription from a position
// the stream has been trimmed past counts replay_trimmed.
func TestRedis_BlipReplayTrimmedIsCounted(t *testing.T) {
	const budget = 2 << 20
	srv := redistest.Start(t)
	pub := newTestRedis(t, srv, "pub", func(o *RedisOptions) { o.StreamMaxBytes = budget })
	publish(t, pub, rmsg("blip/x", 1, "first"))
	b := newTestRedis(t, srv, "b") // its position: the end of every stream, "first" included
	if !b.replayGap() || b.Stats()["replay_trimmed"] != 0 {
		t.Fatalf("replay with nothing trimmed: replay_trimmed = %d, want 0", b.Stats()["replay_trimmed"])
	}
	payload := make([]byte, 256<<10)
	var msgs []*Message
	for range 20 { // 5 MiB on one shard
		msgs = append(msgs, &Message{ID: broker.NewID(), Topic: "blip/x", QoS: 1, Payload: payload, Time: time.Now()})
	}
	publishAll(t, pub, msgs)
	waitStreamsWithin(t, newClient(t, srv), budget*5/4)
	if !b.replayGap() {
		t.Fatal("replay failed")
	}
	if got := b.Stats()["replay_trimmed"]; got != 1 {
		t.Errorf("replay_trimmed = %d, want 1", got)
	}
}
