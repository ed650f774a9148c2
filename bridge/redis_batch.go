package bridge

import (
	"context"
	"time"

	"github.com/redis/go-redis/v9"
)

// Shared pipelines for connects and disconnects. A CONNECT costs a
// replica three round trips to Redis (read the client's records, claim the
// id, write its record), the end of a clean session three too (clear its
// will, mark it offline, remove its records). Each alone is a write and a
// read on a socket, for the replica and for Redis, which cost more than the
// commands themselves (bench/README.md, "Connect rate"). When many clients
// connect at once (a fleet back after an outage) or leave at once (a
// replica draining), their round trips go out together: a few batch
// goroutines each take whatever requests are waiting and send them as one
// pipeline. A connect alone waits for no other: a batch leaves as soon as
// a batch goroutine is free.

// Tuning of the shared pipelines.
const (
	// batchWorkers is how many pipelines are in flight at once: a slow
	// request (a session with many subscriptions to read) holds up only
	// the requests of its own batch.
	batchWorkers = 4
	// batchMax bounds the requests of one pipeline.
	batchMax = 64
)

// batchReq is one caller's commands in a shared pipeline.
type batchReq struct {
	queue func(ctx context.Context, p redis.Pipeliner) // queues the caller's commands
	err   error                                        // the first error of its commands
	done  chan struct{}
}

// cmdBatcher runs the commands of concurrent callers in shared pipelines.
type cmdBatcher struct {
	rdb  redis.UniversalClient
	ctx  context.Context // the bridge's: its end stops the batch goroutines
	reqs chan *batchReq
}

// newCmdBatcher starts the batch goroutines, which run until ctx ends; add
// and done count them (the bridge's WaitGroup).
func newCmdBatcher(ctx context.Context, rdb redis.UniversalClient, add func(int), done func()) *cmdBatcher {
	b := &cmdBatcher{rdb: rdb, ctx: ctx, reqs: make(chan *batchReq, batchWorkers*batchMax)}
	add(batchWorkers)
	for range batchWorkers {
		go func() {
			defer done()
			b.loop()
		}()
	}
	return b
}

// pipelined runs the commands queue adds to a pipeline, in a shared one,
// and returns the first of their errors, as redis.Pipelined does. The
// commands it queued hold their replies when it returns. Once its request
// is taken it waits for the pipeline (bounded by barrierTimeout): a command
// sent is never left running behind a caller that gave up, so ctx only
// bounds the wait for a place in the queue.
func (b *cmdBatcher) pipelined(ctx context.Context, queue func(ctx context.Context, p redis.Pipeliner)) error {
	if err := b.ctx.Err(); err != nil {
		return err
	}
	req := &batchReq{queue: queue, done: make(chan struct{})}
	select {
	case b.reqs <- req:
	case <-ctx.Done():
		return ctx.Err()
	case <-b.ctx.Done():
		return b.ctx.Err()
	}
	select {
	case <-req.done:
		return req.err
	case <-b.ctx.Done():
		// Closing: a batch under way still answers; a request no batch
		// goroutine took never will.
		select {
		case <-req.done:
			return req.err
		case <-time.After(barrierTimeout):
			return b.ctx.Err()
		}
	}
}

// script runs s in a shared pipeline, as s.Run does: by its hash, and
// with its body when Redis has lost it (restarted, flushed).
func (b *cmdBatcher) script(ctx context.Context, s *redis.Script, keys []string, args ...any) (*redis.Cmd, error) {
	var cmd *redis.Cmd
	err := b.pipelined(ctx, func(ctx context.Context, p redis.Pipeliner) {
		cmd = s.EvalSha(ctx, p, keys, args...)
	})
	if redis.HasErrorPrefix(err, "NOSCRIPT") {
		err = b.pipelined(ctx, func(ctx context.Context, p redis.Pipeliner) {
			cmd = s.Eval(ctx, p, keys, args...)
		})
	}
	return cmd, err
}

// loop sends batches until the bridge closes: it waits for a request,
// takes every other one waiting (up to batchMax), and sends them as one
// pipeline.
func (b *cmdBatcher) loop() {
	batch := make([]*batchReq, 0, batchMax)
	for {
		batch = batch[:0]
		select {
		case <-b.ctx.Done():
			return
		case req := <-b.reqs:
			batch = append(batch, req)
		}
	more:
		for len(batch) < batchMax {
			select {
			case req := <-b.reqs:
				batch = append(batch, req)
			default:
				break more
			}
		}
		b.run(batch)
	}
}

// run sends batch as one pipeline and hands each request its commands'
// first error.
func (b *cmdBatcher) run(batch []*batchReq) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(b.ctx), barrierTimeout)
	defer cancel()
	pipe := b.rdb.Pipeline()
	ends := make([]int, len(batch))
	for i, req := range batch {
		req.queue(ctx, pipe)
		ends[i] = pipe.Len()
	}
	cmds, _ := pipe.Exec(ctx)
	start := 0
	for i, req := range batch {
		for _, c := range cmds[start:ends[i]] {
			if err := c.Err(); err != nil {
				req.err = err
				break
			}
		}
		start = ends[i]
		close(req.done)
	}
}
