package bridge

import (
	"context"
	"slices"
	"time"

	"github.com/bridgemq/server/topics"
)

// replaySession reads every shard's stream after cursor and returns the
// messages matching c's subscriptions, at the QoS to send, with the last
// stream id read per shard. QoS 0 messages are not kept for an offline
// session. Shards trimmed past cursor are counted (countTrimmed).
func (r *Redis) replaySession(ctx context.Context, c *redisClient, cursor [streamShards]streamID) ([]Delivery, [streamShards]streamID, error) {
	r.countTrimmed(ctx, c.id, cursor)
	out := r.queue.NewWindow() // bounded as it is read: a long queue is not held whole
	ends := cursor
	cutoff := r.queue.Cutoff(time.Now())
	seen := make(map[ID]struct{})     // a Redis failover republishes messages the streams may still hold
	var lookFrom [streamShards]uint64 // per shard, the earliest publish time (ms) of a message read that is older than the cursor; 0: none
	err := r.readStreams(ctx, cursor, func(s int, m *Message, sid streamID) {
		ends[s] = sid
		granted, ok := highestGrant(c.subs, m.Topic)
		if !ok {
			return
		}
		qos := min(granted, m.QoS)
		if qos == 0 {
			return
		}
		if r.queue.IsExpired(m, cutoff) {
			return
		}
		if _, dup := seen[m.ID]; dup {
			r.stats.deduplicated.Add(1)
			return
		}
		seen[m.ID] = struct{}{}
		if t := m.Time.UnixMilli(); t > 0 && uint64(t) <= cursor[s].ms && (lookFrom[s] == 0 || uint64(t) < lookFrom[s]) {
			lookFrom[s] = uint64(t)
		}
		out.Add(Delivery{Message: m, QoS: qos})
	})
	if err != nil {
		return nil, ends, err
	}
	ds := out.Deliveries()
	passed, err := r.passedCopies(ctx, cursor, lookFrom)
	if err != nil {
		return nil, ends, err
	}
	if len(passed) > 0 {
		n := len(ds)
		ds = slices.DeleteFunc(ds, func(d Delivery) bool {
			_, ok := passed[d.Message.ID]
			return ok
		})
		r.stats.deduplicated.Add(int64(n - len(ds)))
	}
	return ds, ends, nil
}

// copyLookback bounds how far before a session's cursor passedCopies reads:
// the publishers' republish window (ringAge), and a second for the clocks
// of the publishing replica and of Redis.
const copyLookback = ringAge + time.Second

// passedCopies returns the ids of the messages a replay must not hand out
// again: a message read after the cursor that was published before it may
// be a copy, published again to a new master after a failover or a slot
// move (redis_epoch.go), of one the session had already passed (it was
// delivered, is in the session's state, or was not the session's). Its
// original, if the stream still holds it, lies at or before the cursor, and
// at or after its publish time: for each shard with such a message
// (lookFrom[s], the earliest publish time, in ms), the entries from there
// to the cursor are read, within copyLookback of the cursor. A copy whose
// original the new master lacks (lost with the old one) is not found and
// is delivered. Without this, a QoS 2 session resuming after a failover got
// the messages it had completed again [MQTT-4.3.3-2].
func (r *Redis) passedCopies(ctx context.Context, cursor [streamShards]streamID, lookFrom [streamShards]uint64) (map[ID]struct{}, error) {
	var passed map[ID]struct{}
	for s, from := range lookFrom {
		if from == 0 {
			continue
		}
		if floor := cursor[s].ms - min(cursor[s].ms, uint64(copyLookback.Milliseconds())); from < floor {
			from = floor
		}
		err := r.readStreamRange(ctx, s, streamID{ms: from}, cursor[s], func(m *Message, _ streamID) {
			if passed == nil {
				passed = make(map[ID]struct{})
			}
			passed[m.ID] = struct{}{}
		})
		if err != nil {
			return nil, err
		}
	}
	return passed, nil
}

// highestGrant returns the highest QoS among subs' filters matching topic.
// subs is only written by Subscribe, which waits for Attach to return.
// Shared Subscriptions are left out: their messages went to a connected
// member, and are not replayed to a session.
func highestGrant(subs map[string]byte, topic string) (byte, bool) {
	var best byte
	found := false
	for f, q := range subs {
		if !topics.IsShared(f) && topics.Match(f, topic) {
			found = true
			best = max(best, q)
		}
	}
	return best, found
}

// endReplay switches c to live delivery: held-back messages the replay did
// not return are handed back to go after it, and live copies of replayed
// messages are skipped from now on. ends is nil when nothing was replayed.
func (r *Redis) endReplay(c *redisClient, ends *[streamShards]streamID) []Delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	var after []Delivery
	for _, p := range c.pending {
		if ends == nil || p.sid.after(ends[p.shard]) {
			after = append(after, p.d)
		}
	}
	if ends != nil {
		skip := *ends
		c.skip = &skip
		if c.superseded {
			// Taken over by another replica while it replayed: supersede
			// cut the cursor then, below what the replay has returned
			// since. Those messages are in this connection's state now,
			// which its Detach stores with the cut: the cut must cover
			// them, or the connection that took the session over reads
			// them again from the streams and delivers them twice
			// [MQTT-4.3.3-2]. (Live messages held back before the cut were
			// gated below it; after it, the gate held back nothing more.)
			raise(c.cut, c.skip)
		}
	}
	c.pending = nil
	c.replaying = false
	return after
}
