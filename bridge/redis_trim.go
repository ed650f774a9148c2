package bridge

import (
	"context"
	"errors"
	"time"

	"github.com/redis/go-redis/v9"
)

// Bounding the streams' bytes (RedisOptions.StreamMaxBytes).
//
// The budget is for all shards together, so that a deployment whose
// traffic shares one first topic level (one shard) can use all of it. No
// script may touch two shards (Redis Cluster), so a trimmer goroutine
// measures every shard's MEMORY USAGE and first and last ids in one
// pipelined round trip and, while the sum is over the budget, trims the
// oldest entries across all shards (XTRIM MINID ~ on each, one pipelined
// round trip). The publisher asks for a measurement after every
// 1/trimCheckFraction of the budget it appends, so the streams exceed the
// budget by at most that much per replica, plus what replicas append
// during one measurement.

// trimCheckFraction: a publisher asks for a measurement after appending
// 1/trimCheckFraction of StreamMaxBytes (32 MiB of the default 256 MiB).
const trimCheckFraction = 8

// trimTimeout bounds one measurement and its trims.
const trimTimeout = 10 * time.Second

// endsScript returns a stream's first and last entry ids, or an empty
// array when it is empty or missing. A script, so that the entries'
// envelopes stay in Redis.
var endsScript = redis.NewScript(`
local f = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
if not f[1] then return {} end
local l = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
return {f[1][1], l[1][1]}
`)

// askTrim counts added, the envelope bytes a batch appended, and asks the
// trimmer to measure the streams once the publishers have appended
// 1/trimCheckFraction of the budget since it was last asked; it never
// blocks.
func (r *Redis) askTrim(added int64) {
	if r.streamBudget <= 0 || r.appended.Add(added) < max(1, r.streamBudget/trimCheckFraction) {
		return
	}
	r.appended.Store(0)
	select {
	case r.trimReq <- struct{}{}:
	default: // a measurement is already due
	}
}

// trimLoop measures and trims the streams when asked, until Close.
func (r *Redis) trimLoop() {
	defer r.wg.Done()
	for {
		select {
		case <-r.trimReq:
		case <-r.ctx.Done():
			return
		}
		ctx, cancel := context.WithTimeout(r.ctx, trimTimeout)
		if err := r.trimStreams(ctx); err != nil && r.ctx.Err() == nil {
			r.log.Warn("stream byte budget: measuring or trimming failed; retried after the next appends", "err", err)
		}
		cancel()
	}
}

// trimStreams measures every shard's stream and, while together they use
// more than the budget, trims the oldest entries across all of them: it
// estimates (each stream's bytes spread evenly between its first and last
// entry's time) the time before which half the excess lies, and trims
// every stream to it (XTRIM MINID ~, never past a stream's newest entry);
// then measures again, at most eight rounds.
func (r *Redis) trimStreams(ctx context.Context) error {
	for range 8 {
		done, err := r.trimRound(ctx)
		if done || err != nil {
			return err
		}
	}
	return nil
}

// shardSpan is what one round knows of a shard's stream.
type shardSpan struct {
	bytes       int64
	first, last streamID // zero for an empty stream
}

// olderThan estimates the bytes of s's entries with ids before ms that a
// trim may remove: a stream's only entry is its newest, and stays.
func (s shardSpan) olderThan(ms uint64) int64 {
	switch {
	case s.bytes == 0 || s.first == s.last || ms <= s.first.ms:
		return 0
	case ms > s.last.ms || s.last.ms == s.first.ms:
		return s.bytes
	}
	return int64(float64(s.bytes) * float64(ms-s.first.ms) / float64(s.last.ms-s.first.ms))
}

// trimRound measures the streams once and trims them once; done when they
// are within the budget.
func (r *Redis) trimRound(ctx context.Context) (done bool, err error) {
	var mem [streamShards]*redis.IntCmd
	var ends [streamShards]*redis.Cmd
	_, err = r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for sh := range streamShards {
			mem[sh] = p.MemoryUsage(ctx, r.streamKey(sh), 0)
			ends[sh] = endsScript.Eval(ctx, p, []string{r.streamKey(sh)})
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return false, unavailable("measure streams", err)
	}
	var spans [streamShards]shardSpan
	var total int64
	lo, hi := uint64(1<<63), uint64(0)
	for sh := range streamShards {
		ids, _ := ends[sh].StringSlice()
		if len(ids) != 2 {
			continue
		}
		first, err1 := parseStreamID(ids[0])
		last, err2 := parseStreamID(ids[1])
		if err1 != nil || err2 != nil {
			continue
		}
		spans[sh] = shardSpan{bytes: mem[sh].Val(), first: first, last: last}
		total += spans[sh].bytes
		lo, hi = min(lo, first.ms), max(hi, last.ms+1)
	}
	excess := total - r.streamBudget
	if excess <= 0 {
		return true, nil
	}
	// Aim at half the excess (at least 1 KiB): the estimate assumes bytes
	// spread evenly over time, which bursts are not, and what is trimmed
	// cannot come back; the next round measures again.
	excess = max(excess/2, min(excess, 1<<10))
	// The earliest time before which the streams hold the excess (or all
	// they can give).
	for lo < hi {
		mid := lo + (hi-lo)/2
		var older int64
		for _, s := range spans {
			older += s.olderThan(mid)
		}
		if older >= excess {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	cmds, err := r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for sh, s := range spans {
			if s.bytes == 0 || lo <= s.first.ms {
				continue
			}
			minID := streamID{ms: lo}
			if !s.last.after(minID) {
				minID = s.last // keep the newest entry
			}
			p.XTrimMinIDApprox(ctx, r.streamKey(sh), minID.String(), 0)
		}
		return nil
	})
	if err != nil {
		return false, unavailable("trim streams", err)
	}
	trimmed := int64(0)
	for _, c := range cmds {
		trimmed += c.(*redis.IntCmd).Val()
	}
	if trimmed == 0 {
		return true, nil // nothing more can go: each stream is down to its newest node
	}
	r.stats.streamTrims.Add(trimmed)
	return false, nil
}
