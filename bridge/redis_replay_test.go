package bridge

import (
	"context"
	"slices"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/bridgemq/server/internal/redistest"
)

// TestReplaySession_CopiesOfPassedMessages_MQTT_4_3_3_2: a session's replay
// reads the streams after its cursor. After a failover or a slot move the
// publishing replicas write their recent window again to the new master, so
// copies of messages the session had passed (delivered, kept in its state)
// lie after the cursor: the replay must not hand them out again (a QoS 2
// message twice), while a copy whose original the stream lacks (lost with
// the old master) and any message published after the cursor still come.
func TestReplaySession_CopiesOfPassedMessages_MQTT_4_3_3_2(t *testing.T) {
	srv := redistest.Start(t)
	n := newTestRedis(t, srv, "a")
	ctx := context.Background()
	const topic = "copies/x"
	shard := shardOf(topic)
	key := n.streamKey(shard)
	entries := func() []redis.XMessage {
		t.Helper()
		es, err := n.rdb.XRange(ctx, key, "-", "+").Result()
		if err != nil {
			t.Fatal(err)
		}
		return es
	}
	for _, p := range []string{"kept", "lost", "passed"} {
		publish(t, n, rmsg(topic, 2, p))
	}
	before := entries()
	if len(before) != 3 {
		t.Fatalf("%d stream entries, want 3", len(before))
	}
	var cursor [streamShards]streamID
	last, err := parseStreamID(before[2].ID)
	if err != nil {
		t.Fatal(err)
	}
	cursor[shard] = last // the session had all three
	// The new master lacks "lost" (written to the old one after the
	// replica's last read); every replica writes its window again.
	if err := n.rdb.XDel(ctx, key, before[1].ID).Err(); err != nil {
		t.Fatal(err)
	}
	for _, e := range before {
		if err := n.rdb.XAdd(ctx, &redis.XAddArgs{Stream: key, Values: map[string]any{"e": e.Values["e"]}}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	publish(t, n, rmsg(topic, 2, "new"))

	c := &redisClient{id: "s", subs: map[string]byte{"copies/#": 2}}
	ds, _, err := n.replaySession(ctx, c, cursor)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, d := range ds {
		got = append(got, string(d.Message.Payload))
	}
	if want := []string{"lost", "new"}; !slices.Equal(got, want) {
		t.Errorf("replay after the cursor returned %q, want %q: no copy of a message the session passed", got, want)
	}
}

// TestReceive_RepeatMovesThePosition: a copy of a message this replica
// already handled is dropped, but its stream id still moves the replica's
// position on the shard, from which a leaving session's cursor is taken:
// a cursor before the copy would have the session's next replay read it.
func TestReceive_RepeatMovesThePosition(t *testing.T) {
	srv := redistest.Start(t)
	n := newTestRedis(t, srv, "a")
	m := rmsg("repeat/x", 1, "p")
	shard := shardOf(m.Topic)
	n.readMu.Lock()
	defer n.readMu.Unlock()
	for i, sid := range []streamID{{ms: 1000, seq: 0}, {ms: 5000, seq: 3}} {
		n.receiveEnvelope(string(AppendEnvelope(nil, m, sid.String())))
		n.mu.Lock()
		pos := n.lastSeen[shard]
		n.mu.Unlock()
		if pos != sid {
			t.Errorf("copy %d at %v: position %v, want %v", i, sid, pos, sid)
		}
	}
	if got := n.Redis.Stats()["deduplicated"]; got != 1 {
		t.Errorf("deduplicated %d, want 1 (the second copy)", got)
	}
}

// A connection taken over by another replica while its replay runs is cut
// (supersede) below what the replay then returns into its state; when it
// leaves, the cursor stored with that state covers the replayed messages,
// so the connection that took the session over does not read them from the
// streams again and deliver a QoS 2 message twice [MQTT-4.3.3-2]. A hostile
// test found it: the same persistent id connecting on two replicas at once,
// with a backlog, got every queued message twice in 13 of 18 rounds.
func TestEndReplay_SupersededCutCoversTheReplay_MQTT_4_3_3_2(t *testing.T) {
	tests := []struct {
		name      string
		lastSeen  streamID // this replica's position on the shard
		replayEnd streamID
		want      streamID
	}{
		{"replay past the cut", streamID{ms: 5}, streamID{ms: 9}, streamID{ms: 9}},
		{"replay ended below the replica's position", streamID{ms: 12}, streamID{ms: 9}, streamID{ms: 12}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			const shard = 3
			r := &Redis{conns: make(map[string]*redisClient), detaching: make(map[string]*redisClient)}
			r.lastSeen[shard] = tt.lastSeen
			stored := [streamShards]streamID{}
			stored[shard] = streamID{ms: 2}
			floor := stored
			c := &redisClient{r: r, id: "s", subs: map[string]byte{"t/#": 2}, replaying: true, floor: &floor, cursor: &stored, hasCursor: true}
			r.conns["s"] = c
			r.supersede("s", "")
			var ends [streamShards]streamID
			ends[shard] = tt.replayEnd
			r.endReplay(c, &ends)
			c.Leave()
			if c.left == nil || c.left[shard] != tt.want {
				t.Fatalf("cursor stored at leaving %v, want %v", c.left, tt.want)
			}
		})
	}
}
