package bridge

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/bridgemq/server/broker"
	"github.com/bridgemq/server/internal/redistest"
)

func TestSessionState_RoundTrip(t *testing.T) {
	m1, m2 := sampleMessage(), rmsg("q/1", 2, "queued")
	in := &StoredSession{
		Inflight: []Inflight{
			{PacketID: 1, Delivery: Delivery{Message: m1, QoS: 1}},
			{PacketID: 65535, Delivery: Delivery{Message: m2, QoS: 2}, Released: true},
		},
		Queued:          []Delivery{{Message: m2, QoS: 2}, {Message: m1, QoS: 1}},
		AwaitingRelease: []uint16{3, 4},
	}
	var out StoredSession
	if err := decodeSessionState(string(appendSessionState(nil, in)), &out); err != nil {
		t.Fatal(err)
	}
	if len(out.Inflight) != 2 || out.Inflight[1].PacketID != 65535 || !out.Inflight[1].Released ||
		out.Inflight[0].Message.ID != m1.ID || out.Inflight[1].QoS != 2 {
		t.Fatalf("inflight = %+v", out.Inflight)
	}
	if len(out.Queued) != 2 || out.Queued[0].Message.ID != m2.ID || string(out.Queued[1].Message.Payload) != string(m1.Payload) {
		t.Fatalf("queued = %+v", out.Queued)
	}
	if !slices.Equal(out.AwaitingRelease, in.AwaitingRelease) {
		t.Fatalf("awaiting = %v", out.AwaitingRelease)
	}
}

// The MQTT 5.0 properties of a queued or in-flight message survive the
// stored session (envelope version 2 inside it).
func TestSessionState_KeepsMessageProperties(t *testing.T) {
	m := sampleMessage5()
	in := &StoredSession{
		Inflight: []Inflight{{PacketID: 9, Delivery: Delivery{Message: m, QoS: 1}}},
		Queued:   []Delivery{{Message: m, QoS: 1}, {Message: sampleMessage(), QoS: 1}},
	}
	var out StoredSession
	if err := decodeSessionState(string(appendSessionState(nil, in)), &out); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(out.Inflight[0].Message.Properties, m.Properties) ||
		!reflect.DeepEqual(out.Queued[0].Message.Properties, m.Properties) || out.Queued[1].Message.Properties != nil {
		t.Fatalf("properties not kept: %+v / %+v / %+v", out.Inflight[0].Message.Properties, out.Queued[0].Message.Properties, out.Queued[1].Message.Properties)
	}
}

// A retained message waiting in a stored session keeps its RETAIN=1
// [MQTT-3.3.1-8]; a state without one is written as version 1, which the
// previous release reads.
func TestSessionState_RetainedQueuedKeepFlag_MQTT_3_3_1_8(t *testing.T) {
	m1, m2, m3 := sampleMessage(), rmsg("q/1", 2, "queued"), rmsg("r/1", 1, "retained")
	in := &StoredSession{
		Queued:   []Delivery{{Message: m1, QoS: 1}, {Message: m3, QoS: 1, Retain: true}, {Message: m2, QoS: 2}},
		Inflight: []Inflight{{PacketID: 1, Delivery: Delivery{Message: m1, QoS: 1}}, {PacketID: 2, Delivery: Delivery{Message: m3, QoS: 1, Retain: true}}},
	}
	enc := appendSessionState(nil, in)
	if enc[0] != sessionStateVersionV2 {
		t.Fatalf("version %d, want %d with a retained message queued", enc[0], sessionStateVersionV2)
	}
	var out StoredSession
	if err := decodeSessionState(string(enc), &out); err != nil {
		t.Fatal(err)
	}
	for i, d := range out.Queued {
		if d.Retain != in.Queued[i].Retain || d.Message.ID != in.Queued[i].Message.ID {
			t.Fatalf("queued[%d] = %+v, want %+v", i, d, in.Queued[i])
		}
	}
	for i, f := range out.Inflight {
		if f.Retain != in.Inflight[i].Retain || f.PacketID != in.Inflight[i].PacketID {
			t.Fatalf("inflight[%d] = %+v, want %+v", i, f, in.Inflight[i])
		}
	}
	plain := appendSessionState(nil, &StoredSession{Queued: []Delivery{{Message: m1, QoS: 1}}})
	if plain[0] != sessionStateVersion {
		t.Fatalf("version %d, want %d without a retained message", plain[0], sessionStateVersion)
	}
}

func TestSessionState_RejectsMalformed(t *testing.T) {
	good := string(appendSessionState(nil, &StoredSession{
		Queued:          []Delivery{{Message: sampleMessage(), QoS: 1}},
		AwaitingRelease: []uint16{3},
	}))
	// One queued message, retained: the state ends with its index, 0,
	// and an empty list of in-flight ones, 0.
	withRetained := string(appendSessionState(nil, &StoredSession{
		Queued: []Delivery{{Message: sampleMessage(), QoS: 1, Retain: true}},
	}))
	tests := []struct{ name, in string }{
		{"empty", ""},
		{"unknown version", "\x03" + good[1:]},
		{"version 2 without its retained indexes", "\x02" + good[1:]},
		{"retained index out of range", withRetained[:len(withRetained)-2] + "\x05\x00"},
		{"truncated", good[:len(good)-1]},
		{"trailing", good + "\x00"},
		{"huge count", "\x01\xff\xff\xff\xff\x0f"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s StoredSession
			if err := decodeSessionState(tt.in, &s); !errors.Is(err, ErrSessionState) {
				t.Fatalf("err = %v, want ErrSessionState", err)
			}
		})
	}
	for i := range len(good) {
		var s StoredSession
		_ = decodeSessionState(good[:i], &s) // never panics on any prefix
	}
}

func TestStreamIDAndCursor(t *testing.T) {
	ids := []string{"0-0", "1-0", "1-1", "2-0", "1700000000000-5"}
	for i := 1; i < len(ids); i++ {
		a, _ := parseStreamID(ids[i-1])
		b, err := parseStreamID(ids[i])
		if err != nil || !b.after(a) || a.after(b) {
			t.Fatalf("%s should sort after %s (err %v)", ids[i], ids[i-1], err)
		}
		if b.String() != ids[i] {
			t.Fatalf("String() = %s, want %s", b.String(), ids[i])
		}
	}
	for _, bad := range []string{"", "1", "a-1", "1-b", "-1"} {
		if _, err := parseStreamID(bad); err == nil {
			t.Fatalf("parseStreamID(%q) accepted", bad)
		}
	}
	var c [streamShards]streamID
	c[3] = streamID{17, 2}
	got, err := decodeCursor(encodeCursor(&c))
	if err != nil || got != c {
		t.Fatalf("cursor round trip = %v, %v", got, err)
	}
	if _, err := decodeCursor("1-1,2-2"); err == nil {
		t.Fatal("short cursor accepted")
	}
}

func TestShardOf_DependsOnFirstLevelOnly(t *testing.T) {
	if shardOf("a/b/c") != shardOf("a/x") || shardOf("a") != shardOf("a/") {
		t.Fatal("topics with the same first level map to different shards")
	}
	seen := make(map[int]bool)
	for i := range 200 {
		s := shardOf(fmt.Sprintf("dev%d/x", i))
		if s < 0 || s >= streamShards {
			t.Fatalf("shard %d out of range", s)
		}
		seen[s] = true
	}
	if len(seen) < streamShards/2 {
		t.Fatalf("200 first levels used only %d shards", len(seen))
	}
}

// TestRecentIDs_KeepsTheRepublishWindow: the ids published less than
// keepFor before the newest are remembered (the ring grows past its minimum
// for them, by doubling, up to its maximum); no more than the minimum is
// kept when publications are sparse, or carry no time.
func TestRecentIDs_KeepsTheRepublishWindow(t *testing.T) {
	start := time.UnixMilli(1_000_000)
	tests := []struct {
		name     string
		n        int
		every    time.Duration // between publications; 0: no publish time
		min, max int
		keep     int // the newest ids that must be remembered
		most     int // ids remembered at most
	}{
		{"sparse: the minimum", 10, keepFor, 4, 64, 4, 4},
		{"dense: the window", 40, keepFor / 20, 4, 64, 20, 32},
		{"dense past the maximum: the maximum", 200, time.Millisecond, 4, 64, 64, 64},
		{"no publish time: the minimum", 10, 0, 4, 64, 4, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRecentIDs(tt.min, tt.max)
			var ms []*Message
			for i := range tt.n {
				m := &Message{ID: ID{byte(i), byte(i >> 8)}}
				if tt.every > 0 {
					m.Time = start.Add(time.Duration(i) * tt.every)
				}
				ms = append(ms, m)
				if r.seen(m) {
					t.Fatalf("id %d reported seen before it was added", i)
				}
			}
			if len(r.set) > tt.most || len(r.set) != len(r.ring) {
				t.Fatalf("remembers %d ids (ring %d), want at most %d", len(r.set), len(r.ring), tt.most)
			}
			for i, m := range ms[tt.n-tt.keep:] {
				if !r.seen(m) {
					t.Fatalf("id %d of the newest %d forgotten", i, tt.keep)
				}
			}
			if first := ms[tt.n-len(r.set)-1]; r.seen(first) {
				t.Fatal("an id older than every remembered one reported seen")
			}
		})
	}
}

func TestSubscriptionEvent_EMQXShape(t *testing.T) {
	got := subscriptionEvent("subscribe", "c1", "a/+", 1)
	want := `{"type":"subscribe","topic":"a/+","clientid":"c1","qos":1}`
	if got != want {
		t.Fatalf("event = %s, want %s", got, want)
	}
}

// BenchmarkRedisPublish measures Publish from many goroutines through the
// batching publisher into a real redis-server, with one replica receiving
// every message through a pattern subscription.
func BenchmarkRedisPublish(b *testing.B) {
	for _, qos := range []byte{0, 1} {
		b.Run(fmt.Sprintf("qos%d", qos), func(b *testing.B) {
			srv := redistest.Start(b)
			r := newTestRedis(b, srv, "a", func(o *RedisOptions) { o.StreamCap = 10_000 })
			sub := &sink{}
			if _, err := r.Attach(context.Background(), "c", "", sub, broker.CleanSession(true), nil); err != nil {
				b.Fatal(err)
			}
			if err := r.Subscribe(context.Background(), "c", "bench/#", 1); err != nil {
				b.Fatal(err)
			}
			m := &Message{Topic: "bench/x", QoS: qos, Payload: make([]byte, 64), Time: time.Now()}
			b.SetParallelism(32)
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := r.Publish(context.Background(), m); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msg/s")
		})
	}
}
