package bridge

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/redis/go-redis/v9"

	"github.com/bridgemq/server/broker"
)

// maxBatch bounds how many queued publishes share one pipeline.
const maxBatch = 256

// ReplicaAckTimeout is how long a publish batch waits, with
// RedisOptions.MinReplicasAcked > 0, for Redis replicas to confirm its
// writes (the WAIT command's timeout). A batch not confirmed in time is not
// acknowledged: its QoS ≥ 1 publishers re-send. It stays below go-redis's
// default 3 s read timeout, which bounds the whole pipeline.
const ReplicaAckTimeout = time.Second

// ErrNotReplicated is wrapped by the error of a QoS ≥ 1 publish that Redis
// accepted but fewer than RedisOptions.MinReplicasAcked replicas confirmed
// within ReplicaAckTimeout.
var ErrNotReplicated = errors.New("not confirmed by enough redis replicas")

// isNotReplicated reports whether err is ErrNotReplicated: the message is
// in Redis and was published, only not confirmed by enough replicas.
func isNotReplicated(err error) bool { return errors.Is(err, ErrNotReplicated) }

// publishScript appends each envelope to the shard's capped stream and
// publishes it with the id Redis assigned appended (see AppendEnvelope), in
// one atomic step: every subscriber sees a shard's ids in increasing order,
// and nothing is published that a replay could not find. One call carries
// every message of a batch for that shard, so the cost of running a script
// is paid once per batch, not once per message.
//
// The stream is trimmed by count by each XADD (MAXLEN ~, the approximate
// cap) and by age once per call: XTRIM MINID ~ the Redis clock minus the
// message expiry, since an offline session would drop such an entry as
// expired anyway. (XADD takes one of MAXLEN and MINID, hence the XTRIM.)
// The trimmer (redis_trim.go) bounds the streams' bytes.
//
// KEYS[1] stream; ARGV[1] approximate stream cap; ARGV[2] message expiry in
// ms (0: no age trim); then pairs of envelope without stream id and
// channel. Returns the number of messages.
//
// shardPublishScript is the same with SPUBLISH, for Redis Cluster, where
// the channel is in the stream's slot (redis_shardbus.go).
var publishScript, shardPublishScript = redis.NewScript(publishBody("PUBLISH")), redis.NewScript(publishBody("SPUBLISH"))

func publishBody(publish string) string {
	return `
local key, cap, age = KEYS[1], ARGV[1], tonumber(ARGV[2])
for i = 3, #ARGV, 2 do
  local id = redis.call('XADD', key, 'MAXLEN', '~', cap, '*', 'e', ARGV[i])
  redis.call('` + publish + `', ARGV[i+1], ARGV[i] .. string.char(#id) .. id)
end
if age > 0 then
  local now = redis.call('TIME')
  local cutoff = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) - age
  if cutoff > 0 then redis.call('XTRIM', key, 'MINID', '~', string.format('%.0f', cutoff)) end
end
return (#ARGV - 2) / 2
`
}

// PublishScriptSource is the Lua source of the publish script of one Redis
// or Sentinel (PUBLISH), for bench/rediscost to measure it beside its
// alternatives.
func PublishScriptSource() string { return publishBody("PUBLISH") }

// channelOf is the channel a message on topic travels on.
func (r *Redis) channelOf(topic string) string {
	if r.bus != nil {
		return r.busChannel(shardOf(topic))
	}
	return r.msgPrefix + topic
}

// script is the publish script for this Redis: SPUBLISH in Redis Cluster.
func (r *Redis) script() *redis.Script {
	if r.bus != nil {
		return shardPublishScript
	}
	return publishScript
}

// keepPayloadUpTo: a batch lets go of its messages' payloads above this
// size once their envelopes are built. Smaller ones are not worth the
// allocation.
const keepPayloadUpTo = 4 << 10

type pubRequest struct {
	msg *Message // nil exactly when check is set
	// check marks a request that carries no message: it only makes the
	// batch it lands in read the Redis epoch (askEpochCheck).
	check bool
	// done is called once, by the publisher goroutine, with the outcome. It
	// must not block: it runs in the order the requests were queued.
	done func(error)
}

// publisher is one publisher goroutine and what it alone reads and
// writes. One Redis and Sentinel have one, for every shard. Redis Cluster
// has one per stream shard (shard ≥ 0): the shard's messages go to the
// shard's master only, so a master that stalls (a paused process, a
// blackholed link) holds back the batches of its own shards, not those of
// the shards on healthy masters. A topic is always on one shard, so each
// topic's messages still leave in the order they were queued.
type publisher struct {
	q     chan pubRequest
	shard int // -1: every shard (one Redis, Sentinel)
	// epoch is the epoch of the Redis instance the publisher believes it
	// writes to; its ring's new entries are tagged with it.
	epoch string
	ring  pubRing // recently accepted messages
	// watch says when a batch must read the epoch again (in Redis
	// Cluster: ask the epoch watcher to, and look at the shard's master).
	watch epochWatch
	// ageTrimNext is, per shard, when this publisher next asks its script
	// call to trim the stream by age.
	ageTrimNext [streamShards]time.Time
	// shardMasters is, in Redis Cluster, the master each shard's recent
	// messages went to (checkShardMasters).
	shardMasters [streamShards]string
}

func newPublisher(shard int, epoch string, dials *atomic.Uint64) *publisher {
	return &publisher{q: make(chan pubRequest, 4*maxBatch), shard: shard, epoch: epoch, watch: epochWatch{dials: dials}}
}

// publisherOf is the publisher that sends messages on topic.
func (r *Redis) publisherOf(topic string) *publisher {
	if r.bus == nil {
		return r.pub
	}
	return r.shardPubs[shardOf(topic)]
}

// newPublishers makes the publishers, ready for requests; startPublishers
// starts them.
func (r *Redis) newPublishers() {
	if r.bus == nil {
		r.pub = newPublisher(-1, "", &r.dials)
		return
	}
	r.ackOrder = newAckOrder()
	r.epochReads = make(chan struct{}, 1)
	for s := range r.shardPubs {
		r.shardPubs[s] = newPublisher(s, "", &r.dials)
	}
}

// startPublishers starts the publisher goroutines, tagging what they
// accept with epoch, and in Redis Cluster the epoch watcher.
func (r *Redis) startPublishers(epoch string) {
	if r.bus == nil {
		r.pub.epoch = epoch
		r.wg.Add(1)
		go r.publishLoop(r.pub)
		return
	}
	r.clusterEpoch.Store(&epoch)
	r.wg.Add(len(r.shardPubs) + 1)
	for _, p := range r.shardPubs {
		p.epoch = epoch
		go r.publishLoop(p)
	}
	go r.epochLoop()
}

func (r *Redis) loadScripts(ctx context.Context) error {
	for _, s := range []*redis.Script{r.script(), detachScript, claimScript, clearWillScript, casClaimScript} {
		if err := s.Load(ctx, r.rdb).Err(); err != nil {
			return unavailable("load lua script", err)
		}
	}
	return nil
}

// publish is PublishAsync, waited for. It queues msg for the publisher goroutine,
// which sends many messages per round trip, and returns once Redis has
// accepted it: for QoS ≥ 1 that means it is in the shard's stream. When
// Redis cannot be reached the error wraps ErrUnavailable; a QoS 0 message is
// then dropped and counted.
func (r *Redis) publish(ctx context.Context, msg *Message) error {
	result := make(chan error, 1)
	r.PublishAsync(ctx, msg, func(err error) { result <- err })
	select {
	case err := <-result:
		return err
	case <-ctx.Done():
		// The publisher may still send it: for QoS ≥ 1 the client retries
		// and the receivers drop the repeat by message id.
		return r.publishFailed(msg.QoS, fmt.Errorf("publish %q: %w", msg.Topic, ctx.Err()))
	case <-r.ctx.Done():
		// Queued as the bridge closed, after the publisher's last drain.
		return r.publishFailed(msg.QoS, fmt.Errorf("publish %q: bridge closed: %w", msg.Topic, ErrUnavailable))
	}
}

// PublishAsync implements broker.Cluster: publish without waiting. done
// receives what Publish would have returned; calls for messages of one
// client id queued by one goroutine come in the order they were queued
// (with one Redis or Sentinel, all of one goroutine's: one publisher
// answers every message; in Redis Cluster, ackOrder restores each client's
// order across the shards' publishers, and messages without a client id
// are answered in order per topic only, so that unrelated publishers never
// wait for each other).
func (r *Redis) PublishAsync(ctx context.Context, msg *Message, done func(error)) {
	qos := msg.QoS // not msg: the publisher may let go of its payload
	p := r.publisherOf(msg.Topic)
	if r.bus != nil && msg.ClientID != "" {
		// Several publishers answer: keep the client's order (ackOrder).
		done = r.ackOrder.queue(msg.ClientID, done)
	}
	req := pubRequest{msg: msg, done: func(err error) {
		if err != nil {
			err = r.publishFailed(qos, err)
		}
		done(err)
	}}
	if r.ctx.Err() != nil {
		req.done(fmt.Errorf("publish %q: bridge closed: %w", msg.Topic, ErrUnavailable))
		return
	}
	select {
	case p.q <- req:
	case <-ctx.Done():
		req.done(fmt.Errorf("publish %q: %w", msg.Topic, ctx.Err()))
	case <-r.ctx.Done():
		req.done(fmt.Errorf("publish %q: bridge closed: %w", msg.Topic, ErrUnavailable))
	}
}

func (r *Redis) publishFailed(qos byte, err error) error {
	r.stats.publishErrors.Add(1)
	if qos == 0 {
		r.stats.qos0Dropped.Add(1)
	}
	return err
}

// publishLoop runs p: it takes one request, drains up to maxBatch-1 more
// that are already waiting, and sends them together.
func (r *Redis) publishLoop(p *publisher) {
	defer r.wg.Done()
	batch := make([]pubRequest, 0, maxBatch)
	for {
		select {
		case req := <-p.q:
			batch = append(batch[:0], req)
		case <-r.ctx.Done():
			p.failQueued()
			return
		}
		// The first request woke this goroutine, and Go runs a goroutine
		// woken by a channel send next, ahead of the connections' readers
		// that the same network event made ready: they would queue their
		// messages only after this batch left, and wait a whole round trip
		// to Redis for the next. Yielding once lets every goroutine that
		// is ready run first (bench/README.md, row 3: p99 at 10,000 msg/s
		// across replicas 0.6x of what it was without; yielding only when
		// nothing else was queued gave 0.75x).
		runtime.Gosched()
	drain:
		for len(batch) < maxBatch {
			select {
			case req := <-p.q:
				batch = append(batch, req)
			default:
				break drain
			}
		}
		r.sendBatch(p, batch)
	}
}

// failQueued answers requests still queued when the bridge closes.
func (p *publisher) failQueued() {
	for {
		select {
		case req := <-p.q:
			if req.check { // nothing to answer for
				req.done(nil)
				continue
			}
			req.done(fmt.Errorf("publish %q: bridge closed: %w", req.msg.Topic, ErrUnavailable))
		default:
			return
		}
	}
}

// sendBatch pipelines every request of batch, p's, and answers each. A
// request without a message only asks for the Redis epoch check.
func (r *Redis) sendBatch(p *publisher, batch []pubRequest) {
	ctx, cancel := context.WithTimeout(r.ctx, 10*time.Second)
	defer cancel()
	if r.bus != nil {
		r.adoptClusterEpoch(ctx, p)
	}
	envs := make([]string, len(batch))
	channels := make([]string, len(batch))
	for i, req := range batch {
		if req.check {
			continue
		}
		m := req.msg
		channels[i] = r.channelOf(m.Topic)
		if m.ID == (ID{}) {
			// Without an id receivers could not drop repeats; never
			// modify the caller's message, give the envelope one.
			c := *m
			c.ID = broker.NewID()
			m = &c
		}
		// Each envelope gets an allocation of its own, never written
		// again, that the pipeline and the republish window share: no
		// scratch buffer keeps the largest batch's size, and a message
		// in flight is held twice (its payload and its envelope), not
		// three times.
		env := AppendEnvelope(make([]byte, 0, EnvelopeSize(m)), m, "")
		envs[i] = unsafe.String(unsafe.SliceData(env), len(env))
	}
	pipe := r.rdb.Pipeline()
	// When due (see epochWatch), read first, on the same connection as the
	// writes: the epoch of the instance that accepts this batch, and its
	// replication id.
	// In Redis Cluster the epoch key is on one master, maybe not this
	// shard's: the epoch watcher reads it (epochLoop).
	readEpoch, dials := p.watch.due(batch, time.Now())
	var epochCmd, replCmd *redis.StringCmd
	if readEpoch && r.bus == nil {
		epochCmd = pipe.Get(ctx, r.epochKey())
		replCmd = r.queueReplID(ctx, pipe)
	}
	first := make([]redis.Cmder, len(batch))      // the command whose result answers each request
	retained := make([][]redis.Cmder, len(batch)) // the retained-store update, if any
	var shards shardBatch
	var appended int64 // envelope bytes appended to the streams
	needsAck := false  // whether a request waits for an acknowledgement
	for i, req := range batch {
		if req.check {
			continue
		}
		m := req.msg
		if m.QoS > 0 {
			needsAck = true
			shards.add(shardOf(m.Topic), r.streamArgs, envs[i], channels[i], i)
			appended += int64(len(envs[i]))
		} else if r.bus != nil {
			first[i] = pipe.SPublish(ctx, channels[i], envs[i])
		} else {
			first[i] = pipe.Publish(ctx, channels[i], envs[i])
		}
		if m.Retain {
			retained[i] = r.queueRetain(ctx, pipe, m)
		}
		if len(m.Payload) > keepPayloadUpTo {
			// Its envelope holds the bytes now, and only the topic and
			// QoS are read from here on: let a large payload go, so that
			// a message waiting for Redis is held once, not twice.
			batch[i].msg = &Message{Topic: m.Topic, QoS: m.QoS}
		}
	}
	shards.queue(ctx, r, p, pipe)
	// WAIT last, on the same connection: it counts the replicas that have
	// every write this connection made so far.
	var waits []*redis.IntCmd
	if needsAck && r.minReplicas > 0 {
		waits = append(waits, r.queueWait(ctx, pipe))
	}
	sent := time.Now()
	if pipe.Len() > 0 { // not for a batch of checks only
		_, _ = pipe.Exec(ctx)
	}
	if w := shards.retryNoScript(ctx, r, needsAck && r.minReplicas > 0); w != nil {
		waits = append(waits, w)
	}
	if r.pubLatency != nil {
		r.pubLatency.Observe(time.Since(sent).Seconds())
	}
	r.askTrim(appended) // after the appends: the trimmer measures what they added
	replicated := r.replicated(waits)
	for sh, cmd := range shards.cmds {
		for _, i := range shards.reqs[sh] {
			first[i] = cmd
		}
	}

	if readEpoch && r.bus == nil {
		epoch, epochErr := epochCmd.Result()
		replID, replErr := replIDOf(replCmd)
		if (epochErr == nil || errors.Is(epochErr, redis.Nil)) && replErr == nil {
			seen := instanceEpoch(epoch, replID)
			r.checkEpoch(ctx, p, seen)
			if seen != "" && seen == p.epoch {
				p.watch.confirmed(dials, sent)
			}
		}
	} else if readEpoch {
		// The watcher retries a read that fails: the publisher only asks.
		r.askEpochRead()
		r.checkShardMasters(ctx, p)
		p.watch.confirmed(dials, sent)
	}
	now := time.Now()
	for i, req := range batch {
		if req.check {
			req.done(nil)
			continue
		}
		err := first[i].Err()
		for _, c := range retained[i] {
			if err == nil {
				err = c.Err()
			}
		}
		if err != nil {
			p.watch.suspect = true
			req.done(unavailable(fmt.Sprintf("publish %q", req.msg.Topic), err))
			continue
		}
		if req.msg.QoS > 0 && replicated != nil {
			r.stats.notReplicated.Add(1)
			req.done(fmt.Errorf("publish %q: %w", req.msg.Topic, replicated))
			continue
		}
		if req.msg.QoS > 0 {
			p.ring.add(ringEntry{env: envs[i], channel: channels[i], shard: shardOf(req.msg.Topic), epoch: p.epoch, at: now})
		}
		r.stats.published.Add(1)
		req.done(nil)
	}
	if !readEpoch && p.watch.dials.Load() != dials {
		// A connection was dialled while the batch was out, maybe the one
		// it went out on, to a Redis that restarted or was promoted. Its
		// messages carry the epoch read before it: checking now publishes
		// them again with the rest of the old epoch if it changed (copies
		// that receivers drop). Tagging them with an epoch read after it,
		// on another connection, could leave out a message that an old
		// master accepted just before it was demoted.
		if r.bus == nil {
			r.checkEpoch(ctx, p, "")
		} else {
			r.askEpochRead()
		}
	}
}

// shardBatch groups a batch's QoS ≥ 1 messages by stream shard: one script
// call per shard.
type shardBatch struct {
	args [streamShards][]any
	reqs [streamShards][]int
	cmds [streamShards]redis.Cmder
}

// add queues one message for shard's script call; head is the call's
// leading arguments (cap, expiry).
func (b *shardBatch) add(shard int, head [2]int64, env, channel string, req int) {
	if b.args[shard] == nil {
		b.args[shard] = []any{head[0], head[1]}
	}
	b.args[shard] = append(b.args[shard], env, channel)
	b.reqs[shard] = append(b.reqs[shard], req)
}

// queue adds the script call of every shard with messages to pipe. The age
// trim runs in at most one call per shard per ageTrimEvery (from this
// replica): MINID needs no finer grain, and a call without it costs less.
// p's goroutine only.
func (b *shardBatch) queue(ctx context.Context, r *Redis, p *publisher, pipe redis.Pipeliner) {
	now := time.Now()
	for sh, args := range b.args {
		if args == nil {
			continue
		}
		if args[1] != int64(0) {
			if now.Before(p.ageTrimNext[sh]) {
				args[1] = int64(0)
			} else {
				p.ageTrimNext[sh] = now.Add(ageTrimEvery)
			}
		}
		b.cmds[sh] = r.script().EvalSha(ctx, pipe, []string{r.streamKey(sh)}, args...)
	}
}

// ageTrimEvery is how often a replica has each shard's stream trimmed by
// age.
const ageTrimEvery = time.Second

// retryNoScript sends the script's body once for each shard whose call hit
// NOSCRIPT: after a Redis restart the script cache is empty. The calls share
// one pipeline; with wait, a WAIT for MinReplicasAcked replicas ends it and
// is returned (nil when nothing was retried).
func (b *shardBatch) retryNoScript(ctx context.Context, r *Redis, wait bool) *redis.IntCmd {
	var pipe redis.Pipeliner
	for sh, cmd := range b.cmds {
		if cmd != nil && cmd.Err() != nil && redis.HasErrorPrefix(cmd.Err(), "NOSCRIPT") {
			if pipe == nil {
				pipe = r.rdb.Pipeline()
			}
			b.cmds[sh] = r.script().Eval(ctx, pipe, []string{r.streamKey(sh)}, b.args[sh]...)
		}
	}
	if pipe == nil {
		return nil
	}
	var w *redis.IntCmd
	if wait {
		w = r.queueWait(ctx, pipe)
	}
	_, _ = pipe.Exec(ctx)
	return w
}

// queueWait adds WAIT MinReplicasAcked ReplicaAckTimeout to pipe (go-redis
// Pipeliner has no Wait method).
func (r *Redis) queueWait(ctx context.Context, pipe redis.Pipeliner) *redis.IntCmd {
	cmd := redis.NewIntCmd(ctx, "wait", r.minReplicas, ReplicaAckTimeout.Milliseconds())
	_ = pipe.Process(ctx, cmd)
	return cmd
}

// replicated checks the WAIT replies of a batch: nil when each counted at
// least MinReplicasAcked replicas, else the error its QoS ≥ 1 requests get.
func (r *Redis) replicated(waits []*redis.IntCmd) error {
	for _, w := range waits {
		n, err := w.Result()
		if err != nil {
			return unavailable("wait for redis replicas", err)
		}
		if n < int64(r.minReplicas) {
			return fmt.Errorf("%d of %d redis replicas confirmed within %s: %w", n, r.minReplicas, ReplicaAckTimeout, ErrNotReplicated)
		}
	}
	return nil
}

// queueRetain adds the retained-store update for m to pipe: the EMQX hash,
// the index of retained topics and the announcement that keeps every
// replica's mirror of the index current. An empty payload clears the
// retained message [MQTT-3.3.1-10]; any other replaces it [MQTT-3.3.1-5].
func (r *Redis) queueRetain(ctx context.Context, pipe redis.Pipeliner, m *Message) []redis.Cmder {
	if len(m.Payload) == 0 {
		return []redis.Cmder{
			pipe.Del(ctx, r.retainKey(m.Topic)),
			pipe.SRem(ctx, r.retainIndexKey(), m.Topic),
			r.announceRetained(ctx, pipe, "-"+m.Topic),
		}
	}
	ts := m.Time
	if ts.IsZero() {
		ts = time.Now()
	}
	// HSET writes every field, so a concurrent update of the same topic
	// leaves one whole record, never a mix. "props" holds the MQTT 5.0
	// properties (the envelope's properties section), "" for none: it is
	// always written, so a message without properties does not inherit
	// those of the one it replaces.
	var props []byte
	if m.Properties != nil {
		props = appendProperties(nil, m.Properties)
	}
	return []redis.Cmder{pipe.HSet(ctx, r.retainKey(m.Topic),
		"id", hex.EncodeToString(m.ID[:]),
		"from", m.ClientID,
		"qos", strconv.Itoa(int(m.QoS)),
		"topic", m.Topic,
		"retain", "true",
		"payload", m.Payload,
		"ts", strconv.FormatInt(ts.UnixMilli(), 10),
		"props", props,
	),
		pipe.SAdd(ctx, r.retainIndexKey(), m.Topic),
		r.announceRetained(ctx, pipe, "+"+m.Topic),
	}
}

// announceRetained queues a retained index announcement: on sharded pub/sub
// in Redis Cluster (see subscribeRetainAnnouncements).
func (r *Redis) announceRetained(ctx context.Context, pipe redis.Pipeliner, a string) *redis.IntCmd {
	if r.bus != nil {
		return pipe.SPublish(ctx, r.retainCtlChannel(), a)
	}
	return pipe.Publish(ctx, r.retainCtlChannel(), a)
}
