package bridge

import (
	"context"
	"time"

	"github.com/redis/go-redis/v9"
)

// checkpointEvery is how often the stored stream position of each connected
// persistent session is brought forward.
const checkpointEvery = 2 * time.Second

// checkpointLoop brings the stored cursor of connected persistent sessions
// forward. Without it a session's cursor stays where it attached until the
// connection ends cleanly; if the replica dies first, the next connection
// replays everything since then, and a replay longer than MaxQueued keeps
// only its oldest part.
func (r *Redis) checkpointLoop() {
	defer r.wg.Done()
	t := time.NewTicker(checkpointEvery)
	defer t.Stop()
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-t.C:
		}
		if err := r.checkpoint(r.ctx); err != nil {
			r.log.Warn("checkpoint of session cursors failed", "err", err)
		}
	}
}

// checkpoint stores, for every connected persistent session whose client
// has acknowledged everything delivered to it (the core's Checkpoint asks
// Subscriber.Idle under the client's delivery lock), its cursor as it is
// now (cursorLocked): every message up to it was delivered to the session,
// so a later replay may start there. A session that replayed its streams at
// attach never goes below where that replay ended; one whose position has
// not moved since its last checkpoint costs nothing.
func (r *Redis) checkpoint(ctx context.Context) error {
	type mark struct {
		id     string
		cursor [streamShards]streamID
	}
	var marks []mark
	due := func(id string) bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		c := r.conns[id]
		return c != nil && !c.clean && !c.replaying && !c.superseded && c.checkGen != r.seenGen
	}
	take := func(id string) {
		r.mu.Lock()
		defer r.mu.Unlock()
		if c := r.conns[id]; c != nil {
			marks = append(marks, mark{id: id, cursor: r.cursorLocked(c)})
			c.checkGen = r.seenGen
		}
	}
	r.core.Checkpoint(due, take)
	if len(marks) == 0 {
		return nil
	}
	_, err := r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i := range marks {
			p.HSet(ctx, r.sessionKey(marks[i].id), "cursor", encodeCursor(&marks[i].cursor))
		}
		return nil
	})
	if err != nil {
		return unavailable("store session cursors", err)
	}
	return nil
}
