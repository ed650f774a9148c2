package bridge

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// streamID is a parsed Redis stream entry id "<ms>-<seq>". The zero value
// sorts before every real id.
type streamID struct{ ms, seq uint64 }

// parseStreamID parses "<ms>-<seq>".
func parseStreamID(s string) (streamID, error) {
	ms, seq, ok := strings.Cut(s, "-")
	if !ok {
		return streamID{}, fmt.Errorf("parse stream id %q: no '-'", s)
	}
	a, err := strconv.ParseUint(ms, 10, 64)
	if err != nil {
		return streamID{}, fmt.Errorf("parse stream id %q: %w", s, err)
	}
	b, err := strconv.ParseUint(seq, 10, 64)
	if err != nil {
		return streamID{}, fmt.Errorf("parse stream id %q: %w", s, err)
	}
	return streamID{a, b}, nil
}

func (id streamID) String() string {
	return strconv.FormatUint(id.ms, 10) + "-" + strconv.FormatUint(id.seq, 10)
}

func (id streamID) after(o streamID) bool {
	return id.ms > o.ms || id.ms == o.ms && id.seq > o.seq
}

// encodeCursor writes one stream id per shard, comma separated.
func encodeCursor(c *[streamShards]streamID) string {
	var b strings.Builder
	for i, id := range c {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(id.String())
	}
	return b.String()
}

// decodeCursor reads what encodeCursor wrote.
func decodeCursor(s string) ([streamShards]streamID, error) {
	var c [streamShards]streamID
	parts := strings.Split(s, ",")
	if len(parts) != streamShards {
		return c, fmt.Errorf("decode cursor: %d ids, want %d", len(parts), streamShards)
	}
	for i, p := range parts {
		id, err := parseStreamID(p)
		if err != nil {
			return c, fmt.Errorf("decode cursor: %w", err)
		}
		c[i] = id
	}
	return c, nil
}

// replayPage is how many stream entries one XRANGE reads.
const replayPage = 1000

// readStream calls fn for every entry of shard's stream after from, oldest
// first, decoded. Entries that do not decode are logged and skipped.
func (r *Redis) readStream(ctx context.Context, shard int, from streamID, fn func(m *Message, sid streamID)) error {
	key := r.streamKey(shard)
	for {
		entries, err := r.rdb.XRangeN(ctx, key, "("+from.String(), "+", replayPage).Result()
		if err != nil {
			return unavailable("xrange "+key, err)
		}
		if from, err = r.decodeEntries(key, entries, from, fn); err != nil {
			return err
		}
		if len(entries) < replayPage {
			return nil
		}
	}
}

// readStreamRange calls fn for every entry of shard's stream from from to
// to, both included, oldest first, decoded.
func (r *Redis) readStreamRange(ctx context.Context, shard int, from, to streamID, fn func(m *Message, sid streamID)) error {
	key := r.streamKey(shard)
	start := from.String()
	for {
		entries, err := r.rdb.XRangeN(ctx, key, start, to.String(), replayPage).Result()
		if err != nil {
			return unavailable("xrange "+key, err)
		}
		last, err := r.decodeEntries(key, entries, from, fn)
		if err != nil {
			return err
		}
		if len(entries) < replayPage {
			return nil
		}
		start = "(" + last.String()
	}
}

// decodeEntries hands each stream entry's message to fn, skipping (and
// counting) entries that do not decode, and returns the last id read.
func (r *Redis) decodeEntries(key string, entries []redis.XMessage, last streamID, fn func(m *Message, sid streamID)) (streamID, error) {
	for _, e := range entries {
		sid, err := parseStreamID(e.ID)
		if err != nil {
			return last, fmt.Errorf("xrange %s: %w", key, err)
		}
		last = sid
		env, _ := e.Values["e"].(string)
		m := new(Message)
		if _, err := DecodeEnvelope(env, m); err != nil {
			r.stats.decodeErrors.Add(1)
			r.log.Error("skipping stream entry that does not decode", "stream", key, "id", e.ID, "err", err)
			continue
		}
		fn(m, sid)
	}
	return last, nil
}

// readStreams is readStream over every shard, from cursor[s] on each: the
// first page of all shards in one pipelined round trip, then page by page
// for shards with more.
func (r *Redis) readStreams(ctx context.Context, cursor [streamShards]streamID, fn func(shard int, m *Message, sid streamID)) error {
	cmds, err := r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for sh := range streamShards {
			p.XRangeN(ctx, r.streamKey(sh), "("+cursor[sh].String(), "+", replayPage)
		}
		return nil
	})
	if err != nil {
		return unavailable("xrange streams", err)
	}
	for sh, c := range cmds {
		entries := c.(*redis.XMessageSliceCmd).Val()
		each := func(m *Message, sid streamID) { fn(sh, m, sid) }
		last, err := r.decodeEntries(r.streamKey(sh), entries, cursor[sh], each)
		if err != nil {
			return err
		}
		if len(entries) == replayPage {
			if err := r.readStream(ctx, sh, last, each); err != nil {
				return err
			}
		}
	}
	return nil
}

// initStreams sets the last seen id of every shard to its stream's current
// end, so that a replay after a blip starts where this replica joined.
func (r *Redis) initStreams(ctx context.Context) error {
	ends, err := r.streamEnds(ctx)
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	raise(&r.lastSeen, &ends)
	return nil
}

// streamEnds reads the id of the last entry of every shard's stream (the
// zero id for an empty one) in one pipelined round trip.
func (r *Redis) streamEnds(ctx context.Context) ([streamShards]streamID, error) {
	var ends [streamShards]streamID
	cmds, err := r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for s := range streamShards {
			p.XRevRangeN(ctx, r.streamKey(s), "+", "-", 1)
		}
		return nil
	})
	if err != nil {
		return ends, unavailable("read stream ends", err)
	}
	for s, c := range cmds {
		entries := c.(*redis.XMessageSliceCmd).Val()
		if len(entries) == 0 {
			continue
		}
		id, err := parseStreamID(entries[0].ID)
		if err != nil {
			return ends, fmt.Errorf("read stream ends: %w", err)
		}
		ends[s] = id
	}
	return ends, nil
}

// raise moves every shard of c forward to o where o is later.
func raise(c, o *[streamShards]streamID) {
	for s := range c {
		if o[s].after(c[s]) {
			c[s] = o[s]
		}
	}
}

// recentIDs remembers recent message ids, to drop the extra copies Redis
// sends when several of a replica's channels and patterns match one topic,
// and the copies publishers write again after a failover or a slot move:
// those come up to the republish window (ringAge) after the message was
// published. It keeps at least min ids, and more while the oldest kept was
// published less than keepFor before the newest, up to max: a fixed count
// forgot ids in less than the window above min/ringAge messages a second
// (6,500 for 65,536), and a connected QoS 2 subscriber got the copies.
type recentIDs struct {
	set  map[ID]struct{}
	ring []recentID // circular, oldest at next once full
	next int
	max  int
}

type recentID struct {
	id ID
	at int64 // publish time, Unix ms
}

// keepFor is how long after its publication recentIDs keeps an id when it
// may: the republish window, and a second for the clocks of the replicas.
const keepFor = ringAge + time.Second

func newRecentIDs(min, max int) recentIDs {
	return recentIDs{set: make(map[ID]struct{}, min), ring: make([]recentID, 0, min), max: max}
}

// seen reports whether the id of m was added before, and adds it.
func (s *recentIDs) seen(m *Message) bool {
	if _, ok := s.set[m.ID]; ok {
		return true
	}
	e := recentID{m.ID, m.Time.UnixMilli()}
	switch {
	case len(s.ring) < cap(s.ring):
		s.ring = append(s.ring, e)
	case len(s.ring) < s.max && e.at > 0 && s.ring[s.next].at > 0 && e.at-s.ring[s.next].at < keepFor.Milliseconds():
		// Full, the oldest still within the window: grow, oldest first.
		grown := make([]recentID, 0, min(2*len(s.ring), s.max))
		grown = append(grown, s.ring[s.next:]...)
		grown = append(grown, s.ring[:s.next]...)
		s.ring, s.next = append(grown, e), 0
	default:
		delete(s.set, s.ring[s.next].id)
		s.ring[s.next] = e
		s.next = (s.next + 1) % len(s.ring)
	}
	s.set[m.ID] = struct{}{}
	return false
}

// firstIDScript returns the id of a stream's first entry, or "" when it is
// empty or missing. A script, so that the entry's envelope stays in Redis.
var firstIDScript = redis.NewScript(`
local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
if first[1] then return first[1][1] end
return ''
`)

// countTrimmed finds the shards whose stream has been trimmed (by count,
// age or bytes) past cursor: the first entry left is newer than the
// cursor, so the entry at the cursor is gone, and with it every message
// published between the cursor and the first entry left. An offline
// session resuming from cursor (clientID), or this replica replaying a
// blip of its subscription (clientID ""), has lost those of them that
// matched; the replay cannot tell which did, or whether any was published
// at all (when none was, the count is a false alarm). Each such shard is
// logged and counted in offline_queue_trimmed or replay_trimmed. A zero
// cursor position (a session that began on an empty stream) is not
// checked. Errors are logged: the check only reports.
func (r *Redis) countTrimmed(ctx context.Context, clientID string, cursor [streamShards]streamID) {
	cmds, err := r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for sh := range streamShards {
			if cursor[sh] != (streamID{}) {
				firstIDScript.Eval(ctx, p, []string{r.streamKey(sh)})
			}
		}
		return nil
	})
	if err != nil {
		r.log.Warn("cannot tell whether the streams were trimmed past a session's cursor", "client", clientID, "err", err)
		return
	}
	i := 0
	for sh := range streamShards {
		if cursor[sh] == (streamID{}) {
			continue
		}
		s, _ := cmds[i].(*redis.Cmd).Text()
		i++
		if s == "" {
			continue
		}
		first, err := parseStreamID(s)
		if err != nil || !first.after(cursor[sh]) {
			continue
		}
		if clientID == "" {
			r.stats.replayTrimmed.Add(1)
			r.log.Warn("replay after a redis blip: the stream was trimmed past this replica's last id, messages in between are lost to its clients (-redis-stream-max-bytes, -message-expiry or the count cap)",
				"stream", r.streamKey(sh), "last", cursor[sh].String(), "first", s)
			continue
		}
		r.stats.queueTrimmed.Add(1)
		r.log.Warn("offline session's cursor is older than its stream's first entry: messages after it were trimmed (-redis-stream-max-bytes, -message-expiry or the count cap)",
			"client", clientID, "stream", r.streamKey(sh), "cursor", cursor[sh].String(), "first", s)
	}
}
