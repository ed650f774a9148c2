package bridge

import (
	"context"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Delayed wills (the MQTT 5.0 Will Delay Interval) wait in Redis, so that
// a new connection with the client id cancels one whichever replica it
// lands on, and a survivor publishes one whose replica died meanwhile, at
// the time it was due [MQTT-3.1.3-9]:
//
//	<p>wills:delayed      sorted set  client id, scored by when its will is due (unix ms)
//	<p>willdelay:<id>     string      the will's envelope, until published or cancelled
//
// Of the two that remove a client id from the set, a replica publishing
// it and an attach cancelling it (claimRecord), exactly one does (ZREM), so the will is
// published once or not at all.

// dueWillsEvery is how often each replica looks for delayed wills that
// are due: a will is published at most this late.
const dueWillsEvery = 250 * time.Millisecond

func (r *Redis) delayedWillsKey() string         { return r.prefix + "wills:delayed" }
func (r *Redis) delayedWillKey(id string) string { return r.prefix + "willdelay:" + id }

// delayWill stores will to be published after delay, unless a new
// connection with clientID arrives first (claimRecord cancels it).
func (r *Redis) delayWill(ctx context.Context, clientID string, will *Message, delay time.Duration) error {
	w := *will
	w.WillDelay = 0
	due := time.Now().Add(delay)
	// The envelope outlives its due time by an hour, so that a replica
	// down for a while still finds it; after that nothing is left behind.
	if err := r.rdb.Set(ctx, r.delayedWillKey(clientID), AppendEnvelope(nil, &w, ""), delay+time.Hour).Err(); err != nil {
		return unavailable("store delayed will", err)
	}
	if err := r.rdb.ZAdd(ctx, r.delayedWillsKey(), redis.Z{Score: float64(due.UnixMilli()), Member: clientID}).Err(); err != nil {
		return unavailable("schedule delayed will", err)
	}
	r.stats.willsDelayed.Add(1)
	return nil
}

// dueWillsBatch is how many due wills one round of publishDueWills takes.
const dueWillsBatch = 100

// publishDueWills publishes the delayed wills that are due, each by the
// replica that takes it off the set first. It takes them dueWillsBatch at
// a time, with one pipeline of ZREMs and one of GETDELs per batch, until
// none is due: a blip that drops 100,000 connections with delayed wills
// publishes them when due, not at one batch per tick.
func (r *Redis) publishDueWills(ctx context.Context) error {
	for {
		n, err := r.publishDueBatch(ctx)
		if err != nil || n < dueWillsBatch {
			return err
		}
	}
}

// publishDueBatch publishes up to dueWillsBatch due wills and returns how
// many were due.
func (r *Redis) publishDueBatch(ctx context.Context) (int, error) {
	now := strconv.FormatInt(time.Now().UnixMilli(), 10)
	ids, err := r.rdb.ZRangeByScore(ctx, r.delayedWillsKey(), &redis.ZRangeBy{Min: "-inf", Max: now, Count: dueWillsBatch}).Result()
	if err != nil || len(ids) == 0 {
		if err != nil {
			err = unavailable("read due wills", err)
		}
		return 0, err
	}
	rems := make([]*redis.IntCmd, len(ids))
	if _, err := r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			rems[i] = p.ZRem(ctx, r.delayedWillsKey(), id)
		}
		return nil
	}); err != nil {
		return 0, unavailable("take due wills", err)
	}
	var mine []string // taken off the set here: only this replica publishes them
	for i, id := range ids {
		if rems[i].Val() == 1 {
			mine = append(mine, id)
		}
	}
	// The will's user: the session's owner, or its client record's once
	// the session is gone (a delayed will lasts no longer than its session).
	envs := make([]*redis.StringCmd, len(mine))
	owners := make([][2]*redis.StringCmd, len(mine))
	_, err = r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range mine {
			envs[i] = p.GetDel(ctx, r.delayedWillKey(id))
			owners[i] = [2]*redis.StringCmd{p.HGet(ctx, r.sessionKey(id), "owner"), p.HGet(ctx, r.clientKey(id), "owner")}
		}
		return nil
	})
	if err != nil && err != redis.Nil {
		r.log.Warn("due wills not read; dropped", "wills", len(mine), "err", err)
		return len(ids), nil
	}
	for i, id := range mine {
		env, err := envs[i].Result()
		if err == redis.Nil {
			r.log.Warn("due will has no message left; not published", "client", id)
			continue
		}
		if err != nil {
			r.log.Warn("due will not read; dropped", "client", id, "err", err)
			continue
		}
		will := new(Message)
		if _, err := DecodeEnvelope(env, will); err != nil {
			r.log.Error("dropping delayed will that does not decode", "client", id, "err", err)
			continue
		}
		user, uerr := owners[i][0].Result()
		if uerr != nil {
			user, uerr = owners[i][1].Result()
		}
		if uerr == nil && !r.willAllowed(id, user, will) {
			continue
		}
		will.Time = time.Now() // its Message Expiry Interval counts from now
		r.retryWill(id, "", will)
	}
	return len(ids), nil
}

// dueWillsLoop runs publishDueWills every dueWillsEvery until Close.
func (r *Redis) dueWillsLoop() {
	defer r.wg.Done()
	t := time.NewTicker(dueWillsEvery)
	defer t.Stop()
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(r.ctx, 5*time.Second)
		if err := r.publishDueWills(ctx); err != nil && r.ctx.Err() == nil {
			r.log.Warn("delayed wills not checked", "err", err)
		}
		cancel()
	}
}

// retryWillAfter publishes will after delay from this replica, for a will
// Redis refused to keep.
func (r *Redis) retryWillAfter(clientID string, will *Message, delay time.Duration) {
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		t := time.NewTimer(delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.ctx.Done():
			r.log.Error("delayed will not published: bridge closed before it was due", "client", clientID)
			return
		}
		w := *will
		w.Time, w.WillDelay = time.Now(), 0
		r.retryWill(clientID, "", &w)
	}()
}
