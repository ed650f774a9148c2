package bridge

import (
	"context"
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
	seen := make(map[ID]struct{}) // a Redis failover republishes messages the streams may still hold
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
		out.Add(Delivery{Message: m, QoS: qos})
	})
	if err != nil {
		return nil, ends, err
	}
	return out.Deliveries(), ends, nil
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
	}
	c.pending = nil
	c.replaying = false
	return after
}
