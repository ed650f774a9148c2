package bridge

import (
	"context"
	"time"

	"github.com/redis/go-redis/v9"
)

// checkpointEvery is how often the stored stream position of each connected
// persistent session is brought forward.
const checkpointEvery = 2 * time.Second

// checkpointChunk is how many cursors a checkpoint writes in one pipeline,
// and checkpointTimeout bounds each pipeline: with 100,000 connected
// sessions a checkpoint is a hundred pipelines, none of which times out
// for the size of the others. A session leaving meanwhile waits for the
// checkpoint (Save).
const (
	checkpointChunk   = 1024
	checkpointTimeout = 5 * time.Second
)

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

// checkpointScript stores a live session's cursor only if the session
// hash still names the connection it was taken for: a session taken over
// elsewhere, or ended (its hash deleted), is not written to, nor made
// again. KEYS[1] session; ARGV conn, cursor, stored_at.
var checkpointScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'conn') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'cursor', ARGV[2], 'stored_at', ARGV[3])
return 1
`)

// checkpoint stores, for every connected persistent session whose client
// has acknowledged everything delivered to it (the core's Checkpoint asks
// Subscriber.Idle under the client's delivery lock), its cursor as it is
// now (cursorLocked): every message up to it was delivered to the session,
// so a later replay may start there. A session that replayed its streams at
// attach never goes below where that replay ended; one whose position has
// not moved since its last checkpoint costs nothing.
//
// It holds checkpointMu from the first cursor it takes to the last write:
// Save waits for it, so that a cursor taken before the connection left
// never overwrites the one stored when it left, which covers what the
// connection received after this checkpoint. Each write is guarded by the
// connection (checkpointScript).
func (r *Redis) checkpoint(ctx context.Context) error {
	r.checkpointMu.Lock()
	defer r.checkpointMu.Unlock()
	var marks []cursorMark
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
			marks = append(marks, cursorMark{id: id, conn: c.conn, cursor: r.cursorLocked(c), at: time.Now()})
			c.checkGen = r.seenGen
		}
	}
	r.core.Checkpoint(due, take)
	if len(marks) == 0 {
		return nil
	}
	for len(marks) > 0 {
		n := min(len(marks), checkpointChunk)
		if err := r.storeCursors(ctx, marks[:n]); err != nil {
			return err
		}
		marks = marks[n:]
	}
	return nil
}

// cursorMark is one session's cursor as a checkpoint took it, for the
// connection conn.
type cursorMark struct {
	id, conn string
	cursor   [streamShards]streamID
	at       time.Time
}

// storeCursors writes marks in one pipeline, each by checkpointScript,
// within checkpointTimeout.
func (r *Redis) storeCursors(ctx context.Context, marks []cursorMark) error {
	ctx, cancel := context.WithTimeout(ctx, checkpointTimeout)
	defer cancel()
	args := func(m *cursorMark) (keys []string, argv []any) {
		return []string{r.sessionKey(m.id)}, []any{m.conn, encodeCursor(&m.cursor), m.at.UnixMilli()}
	}
	cmds := make([]*redis.Cmd, len(marks))
	_, err := r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i := range marks {
			keys, argv := args(&marks[i])
			cmds[i] = checkpointScript.EvalSha(ctx, p, keys, argv...)
		}
		return nil
	})
	if err != nil && !noScript(cmds) {
		return unavailable("store session cursors", err)
	}
	for i := range marks {
		if redis.HasErrorPrefix(cmds[i].Err(), "NOSCRIPT") {
			keys, argv := args(&marks[i])
			cmds[i] = checkpointScript.Run(ctx, r.rdb, keys, argv...)
		}
		if err := cmds[i].Err(); err != nil {
			return unavailable("store session cursor", err)
		}
	}
	return nil
}
