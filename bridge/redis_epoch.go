package bridge

import (
	"context"
	"errors"
	"time"

	"github.com/redis/go-redis/v9"
)

// A Redis that restarts without persistence comes back empty: the messages
// it had accepted but not yet pushed to every subscriber are gone with its
// streams. Each replica therefore keeps the QoS ≥ 1 messages Redis accepted
// in the last ringAge, tagged with the epoch of the instance that accepted
// them: a random value stored at <prefix>epoch, read in the same pipeline as
// every publish batch. When the epoch changes (or the key is gone), the
// messages of the old epoch are published again; receivers drop the copies
// they already delivered by message id.
const (
	ringAge   = 10 * time.Second
	ringBytes = 16 << 20
)

func (r *Redis) epochKey() string { return r.prefix + "epoch" }

// ringEntry is one accepted message, ready to be published again.
type ringEntry struct {
	env, channel string
	shard        int
	epoch        string
	at           time.Time
}

// pubRing is the recently accepted messages, oldest first, bounded by age
// and size. It is used by the publisher goroutine only.
type pubRing struct {
	entries []ringEntry
	bytes   int
}

func (p *pubRing) add(e ringEntry) {
	p.entries = append(p.entries, e)
	p.bytes += len(e.env)
	cut := 0
	for cut < len(p.entries) && (p.bytes > ringBytes || e.at.Sub(p.entries[cut].at) > ringAge) {
		p.bytes -= len(p.entries[cut].env)
		cut++
	}
	if cut > 0 {
		clear(p.entries[:cut])
		p.entries = p.entries[cut:]
	}
}

// takeEpoch removes and returns the entries accepted under epoch.
func (p *pubRing) takeEpoch(epoch string) []ringEntry {
	var out []ringEntry
	kept := p.entries[:0]
	for _, e := range p.entries {
		if e.epoch == epoch {
			out = append(out, e)
			p.bytes -= len(e.env)
		} else {
			kept = append(kept, e)
		}
	}
	clear(p.entries[len(kept):])
	p.entries = kept
	return out
}

// initEpoch creates the epoch key if it is missing and reads it.
func (r *Redis) initEpoch(ctx context.Context) (string, error) {
	var get *redis.StringCmd
	_, err := r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.SetNX(ctx, r.epochKey(), randomToken(), 0)
		get = p.Get(ctx, r.epochKey())
		return nil
	})
	if err != nil {
		return "", unavailable("read redis epoch", err)
	}
	return get.Val(), nil
}

// checkEpoch compares the epoch a batch read with the one this replica
// knows. On a change it republishes the messages of the old epoch; until
// that succeeds the old epoch stays current, so the next batch tries again.
// Publisher goroutine only.
func (r *Redis) checkEpoch(ctx context.Context, seen string) {
	if seen == r.epoch && seen != "" {
		return
	}
	now, err := r.initEpoch(ctx)
	if err != nil || now == r.epoch {
		return
	}
	lost := r.ring.takeEpoch(r.epoch)
	if err := r.republish(ctx, lost); err != nil {
		for _, e := range lost {
			r.ring.add(e)
		}
		r.log.Warn("redis restarted; republishing accepted messages failed, will retry", "messages", len(lost), "err", err)
		return
	}
	r.log.Warn("redis restarted without our messages; republished those it had accepted", "messages", len(lost), "old_epoch", r.epoch, "epoch", now)
	r.stats.republished.Add(int64(len(lost)))
	r.epoch = now
	r.askBeat() // our liveness key and client records went with the data
}

// republish sends entries again, one script call per shard.
func (r *Redis) republish(ctx context.Context, entries []ringEntry) error {
	if len(entries) == 0 {
		return nil
	}
	var shards shardBatch
	for i, e := range entries {
		shards.add(e.shard, r.streamCap, e.env, e.channel, i)
	}
	pipe := r.rdb.Pipeline()
	shards.queue(ctx, r, pipe)
	_, _ = pipe.Exec(ctx)
	shards.retryNoScript(ctx, r)
	for _, cmd := range shards.cmds {
		if cmd != nil && cmd.Err() != nil {
			return errors.Join(ErrUnavailable, cmd.Err())
		}
	}
	return nil
}

// askEpochCheck makes the publisher check the epoch even when nothing is
// being published; it never blocks.
func (r *Redis) askEpochCheck() {
	select {
	case r.pubq <- pubRequest{done: func(error) {}}:
	default: // the queue is busy: the next batch checks anyway
	}
}
