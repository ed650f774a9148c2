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

// publishAll publishes msgs through b concurrently (so that batches form,
// as under load) and fails on any error.
func publishAll(t testing.TB, b *Redis, msgs []*Message) {
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
// subscribes to, with StreamMaxBytes 16 MiB: the stream keys hold at most
// the budget plus the allocator's rounding (jemalloc's size classes above
// 512 KiB are 25% apart), and Redis's used_memory grows by about as much.
// Before, the streams kept all 100 MiB (count cap 100,000 per shard).
// MQTT_TEST_ABUSE=long publishes 400, as in the issue.
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
		msgs = append(msgs, &Message{ID: NewID(), Topic: fmt.Sprintf("big%d/x", i%8), QoS: 1, Payload: payload, Time: time.Now()})
	}
	publishAll(t, b, msgs)

	mem, entries := streamsMemory(t, rdb)
	grown := usedMemory(t, rdb) - before
	t.Logf("%d × 512 KiB published: streams hold %d entries in %d bytes (MEMORY USAGE); used_memory +%d bytes; budget %d",
		n, entries, mem, grown, budget)
	if limit := int64(budget) * 5 / 4; mem > limit {
		t.Errorf("streams use %d bytes, want at most %d (budget %d + 25%%)", mem, limit, budget)
	}
	if limit := int64(budget) * 3 / 2; grown > limit {
		t.Errorf("used_memory grew by %d bytes, want at most %d", grown, limit)
	}
	if entries == 0 {
		t.Error("streams are empty: the newest entry of each shard must stay")
	}

	// Smaller messages after the large ones: each shard keeps as many of
	// the newest as fit in its share (1 MiB), the large ones go.
	msgs = msgs[:0]
	for i := range 300 {
		msgs = append(msgs, &Message{ID: NewID(), Topic: fmt.Sprintf("big%d/x", i%8), QoS: 1, Payload: payload[:48<<10], Time: time.Now()})
	}
	publishAll(t, b, msgs)
	ctx := context.Background()
	for sh := range streamShards {
		es := rdb.XRange(ctx, "mqtt:stream:"+strconv.Itoa(sh), "-", "+").Val()
		size := 0
		for _, e := range es {
			size += len(e.Values["e"].(string))
		}
		if size > budget/streamShards {
			t.Errorf("shard %d keeps %d entries, %d envelope bytes, over its share %d", sh, len(es), size, budget/streamShards)
		}
		if len(es) > 0 && len(es) < 15 {
			t.Errorf("shard %d keeps %d entries of 48 KiB, want the ~20 its 1 MiB share holds", sh, len(es))
		}
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
		publish(t, b, &Message{ID: NewID(), Topic: "age/x", QoS: 1, Payload: payload, Time: time.Now()})
	}
	last := rdb.XRevRangeN(ctx, key, "+", "-", 1).Val()
	if len(last) != 1 {
		t.Fatal("no stream entry")
	}
	old, _ := parseStreamID(last[0].ID)
	deadline := time.Now().Add(5 * time.Second)
	for {
		publish(t, b, &Message{ID: NewID(), Topic: "age/x", QoS: 1, Payload: []byte("tick"), Time: time.Now()})
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
	const budget = 16 << 20 // 1 MiB per shard
	srv := redistest.Start(t)
	b := newTestRedis(t, srv, "a", func(o *RedisOptions) { o.StreamMaxBytes = budget })
	s := newLiveSub()
	attach(t, b, "p", s, false)
	subscribe(t, b, "p", "gap/#", 1)
	publish(t, b, rmsg("gap/x", 1, "first"))
	s.waitFor(t, 1)
	detach(t, b, "p", s, &Session{})

	payload := make([]byte, 256<<10)
	var msgs []*Message
	for range 20 { // 5 MiB on one shard
		msgs = append(msgs, &Message{ID: NewID(), Topic: "gap/x", QoS: 1, Payload: payload, Time: time.Now()})
	}
	publishAll(t, b, msgs)
	s1 := newLiveSub()
	st := attach(t, b, "p", s1, false)
	if st == nil {
		t.Fatal("persistent session not found")
	}
	if got := b.Stats()["offline_queue_trimmed"]; got != 1 {
		t.Errorf("offline_queue_trimmed = %d, want 1", got)
	}
	if q := len(st.Queued); q == 0 || q >= 20 {
		t.Errorf("%d messages queued on resume, want the few the 1 MiB shard kept", q)
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
				msgs[i] = &Message{ID: NewID(), Topic: "cost/x", QoS: 1, Payload: payload, Time: time.Now()}
			}
			_ = rdb.ConfigResetStat(context.Background())
			publishAll(t, b, msgs)
			st := commandStats(t, rdb)
			flat, flatTrim := st["evalsha"], st["eval"]
			_ = rdb.ConfigResetStat(context.Background())
			for range singleN {
				publish(t, b, &Message{ID: NewID(), Topic: "cost/x", QoS: 1, Payload: payload, Time: time.Now()})
			}
			st = commandStats(t, rdb)
			single, singleTrim := st["evalsha"], st["eval"]
			t.Logf("%d B, %s: flat out %.2f µs/msg (%d calls, %.1f msgs/call; byte trims %d calls, %d µs); one at a time %.2f µs/msg (byte trims %d calls, %d µs)",
				size, c.name, float64(flat[1]+flatTrim[1])/float64(flatN), flat[0], float64(flatN)/float64(flat[0]), flatTrim[0], flatTrim[1],
				float64(single[1]+singleTrim[1])/float64(singleN), singleTrim[0], singleTrim[1])
			srv.Stop()
		}
	}
}

// Item 4: a replica replaying a blip of its subscription from a position
// the stream has been trimmed past counts replay_trimmed.
func TestRedis_BlipReplayTrimmedIsCounted(t *testing.T) {
	const budget = 16 << 20 // 1 MiB per shard
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
		msgs = append(msgs, &Message{ID: NewID(), Topic: "blip/x", QoS: 1, Payload: payload, Time: time.Now()})
	}
	publishAll(t, pub, msgs)
	if !b.replayGap() {
		t.Fatal("replay failed")
	}
	if got := b.Stats()["replay_trimmed"]; got != 1 {
		t.Errorf("replay_trimmed = %d, want 1", got)
	}
}
