package bridge

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// A Redis that restarts without persistence comes back empty: the messages
// it had accepted but not yet pushed to every subscriber are gone with its
// streams. Each replica therefore keeps the QoS ≥ 1 messages Redis accepted
// in the last ringAge, tagged with the epoch of the instance that accepted
// them: a random value stored at <prefix>epoch, read in the same pipeline as
// a publish batch whenever something suggests it may have changed, and at
// least every epochRecheck (see epochWatch). When the epoch changes (or the
// key is gone), the messages of the old epoch are published again;
// receivers drop the copies they already delivered by message id.
//
// A Sentinel failover loses messages the same way, without touching the
// epoch key: Redis replicates asynchronously, so the promoted replica lacks
// whatever the old master accepted after the replica's last read, yet it
// holds the old epoch key. The epoch a batch reads is therefore qualified
// by the master's replication id (INFO replication master_replid), read in
// the same pipeline: Redis draws a new one whenever a server becomes master
// (promotion, REPLICAOF NO ONE) and at every start, so a failover also
// counts as a new epoch. A change that lost nothing (a graceful failover,
// or Redis renewing the id of a master that has had no replica for
// repl-backlog-ttl) only costs duplicates that receivers drop.
//
// The ring is a window, not a log: a failover is covered only if the
// replica lagged by less than ringAge and by less than ringBytes of this
// replica's accepted messages (16 MiB is 2,000 messages of 8 KiB; at 1,000
// such messages a second the window is two seconds). Beyond it, messages
// are lost as before; -redis-min-replicas-acked (RedisOptions.
// MinReplicasAcked) closes that gap by acknowledging only what a replica
// has confirmed. In Redis Cluster mode the replication id is not read (a
// keyless INFO would reach an arbitrary node): the epoch key's own master
// is watched, and each shard's master by checkShardMasters.
const (
	ringAge   = 10 * time.Second
	ringBytes = 16 << 20
)

func (r *Redis) epochKey() string { return r.prefix + "epoch" }

// epochRecheck is the longest a publish batch goes without reading the
// epoch when nothing suggests that it changed.
const epochRecheck = 100 * time.Millisecond

// epochWatch decides which publish batches read the epoch. Reading it in
// every batch (a GET and an INFO replication on the batch's connection)
// cost a quarter of Redis's time per batch of synchronous publishers. The
// data behind the client changes in ways that lose messages only with a
// sign the client sees: a restart and a Sentinel failover close the
// connections, so the client dials again (dials counts every dial, from a
// go-redis hook, before the new connection carries any command); a
// demoted master refuses writes, and a flushed one forgets its scripts, so
// a batch fails. A batch reads the epoch when any of these happened since
// the last read, when a check was asked for (heartbeat, resubscription),
// and at least every epochRecheck, for the changes without a sign
// (FLUSHALL, a promotion that keeps the connection, as REPLICAOF NO ONE
// does). Messages accepted in between are tagged with the epoch read
// before them: when the next read finds a new one, they are published
// again with the others of the old epoch, and receivers drop the copies.
// The recheck is far shorter than ringAge, so the window covers them.
type epochWatch struct {
	dials   *atomic.Uint64 // connections the client has started to dial, ever (Redis.dials)
	gen     uint64         // dials when the epoch was last read and found current
	at      time.Time      // when the batch of that read was sent
	suspect bool           // a batch failed since
}

// watchDials counts the dials of c in dials. In Redis Cluster mode the
// dials of every node's client are counted (watchClusterTopology adds the
// counter to each): reading the epoch key in every batch would cost its
// one master a GET per batch, more than its share of the cluster's work.
func watchDials(c redis.UniversalClient, dials *atomic.Uint64) {
	if _, cluster := c.(*redis.ClusterClient); cluster {
		return
	}
	c.AddHook(dialCounter{dials})
}

// due reports whether the batch must read the epoch, and the dial count
// to pass to confirmed if the read finds it current. Its publisher's
// goroutine only.
func (w *epochWatch) due(batch []pubRequest, now time.Time) (bool, uint64) {
	gen := w.dials.Load()
	if w.suspect || gen != w.gen || now.Sub(w.at) >= epochRecheck {
		return true, gen
	}
	for _, req := range batch {
		if req.check {
			return true, gen
		}
	}
	return false, gen
}

// confirmed records that the epoch read by the batch sent at sent, with
// gen dials counted before it, is the current one.
func (w *epochWatch) confirmed(gen uint64, sent time.Time) {
	w.gen, w.at, w.suspect = gen, sent, false
}

// dialCounter is a go-redis hook that counts dials.
type dialCounter struct{ n *atomic.Uint64 }

func (d dialCounter) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		d.n.Add(1)
		return next(ctx, network, addr)
	}
}

func (d dialCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }

func (d dialCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// ringEntry is one accepted message, ready to be published again.
type ringEntry struct {
	env, channel string
	shard        int
	epoch        string
	at           time.Time
}

// pubRing is the recently accepted messages, oldest first, bounded by age
// and size. It is used by its publisher's goroutine only. It is a circular
// buffer: at a high rate it holds some 100,000 entries, and a slice cut
// from the front and appended to at the back was copied whole every
// quarter of its length (growslice), some 300 bytes moved and a large
// allocation per message.
type pubRing struct {
	buf     []ringEntry // len(buf) is the capacity; entries at head, head+1, … (mod len)
	head, n int
	bytes   int
}

// at returns the i-th entry from the oldest.
func (p *pubRing) at(i int) *ringEntry { return &p.buf[(p.head+i)%len(p.buf)] }

// len returns the number of entries.
func (p *pubRing) len() int { return p.n }

func (p *pubRing) add(e ringEntry) {
	if p.n == len(p.buf) {
		grown := make([]ringEntry, max(64, 2*len(p.buf)))
		for i := range p.n {
			grown[i] = *p.at(i)
		}
		p.buf, p.head = grown, 0
	}
	*p.at(p.n) = e
	p.n++
	p.bytes += len(e.env)
	for p.n > 0 && (p.bytes > ringBytes || e.at.Sub(p.at(0).at) > ringAge) {
		old := p.at(0)
		p.bytes -= len(old.env)
		*old = ringEntry{}
		p.head = (p.head + 1) % len(p.buf)
		p.n--
	}
}

// takeShard removes and returns the entries of shard.
func (p *pubRing) takeShard(shard int) []ringEntry {
	return p.take(func(e *ringEntry) bool { return e.shard == shard })
}

// takeEpoch removes and returns the entries accepted under epoch.
func (p *pubRing) takeEpoch(epoch string) []ringEntry {
	return p.take(func(e *ringEntry) bool { return e.epoch == epoch })
}

// take removes and returns the entries which match, oldest first; the
// others keep their order.
func (p *pubRing) take(match func(*ringEntry) bool) []ringEntry {
	var out []ringEntry
	kept := 0
	for i := range p.n {
		e := *p.at(i)
		if match(&e) {
			out = append(out, e)
			p.bytes -= len(e.env)
			continue
		}
		*p.at(kept) = e
		kept++
	}
	for i := kept; i < p.n; i++ {
		*p.at(i) = ringEntry{}
	}
	p.n = kept
	return out
}

// initEpoch creates the epoch key if it is missing and reads it, qualified
// by the master's replication id (see instanceEpoch).
func (r *Redis) initEpoch(ctx context.Context) (string, error) {
	var get *redis.StringCmd
	var repl *redis.StringCmd
	_, err := r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.SetNX(ctx, r.epochKey(), randomToken(), 0)
		get = p.Get(ctx, r.epochKey())
		repl = r.queueReplID(ctx, p)
		return nil
	})
	if err != nil {
		return "", unavailable("read redis epoch", err)
	}
	replID, err := replIDOf(repl)
	if err != nil {
		return "", unavailable("read redis epoch", err)
	}
	return instanceEpoch(get.Val(), replID), nil
}

// queueReplID adds the read of the master's replication id to p, on the
// connection of the batch it qualifies; nil in Redis Cluster mode.
func (r *Redis) queueReplID(ctx context.Context, p redis.Pipeliner) *redis.StringCmd {
	if _, cluster := r.rdb.(*redis.ClusterClient); cluster {
		return nil
	}
	return p.Info(ctx, "replication")
}

// replIDOf extracts master_replid from the reply of queueReplID; "" for
// nil.
func replIDOf(cmd *redis.StringCmd) (string, error) {
	if cmd == nil {
		return "", nil
	}
	info, err := cmd.Result()
	if err != nil {
		return "", fmt.Errorf("info replication: %w", err)
	}
	for line := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(line, "master_replid:"); ok {
			return strings.TrimSpace(v), nil
		}
	}
	return "", errors.New("info replication: no master_replid")
}

// instanceEpoch is what identifies the Redis data a batch was written to:
// the epoch key's value and the master's replication id. It is "" when
// the key is missing, so that the key is created again.
func instanceEpoch(epoch, replID string) string {
	if epoch == "" || replID == "" {
		return epoch
	}
	return epoch + "@" + replID
}

// checkEpoch compares the epoch a batch of p read with the one p knows.
// On a change it republishes the messages of the old epoch; until that
// succeeds the old epoch stays current, so the next batch tries again. One
// Redis or Sentinel only (in Redis Cluster see epochLoop); p's goroutine
// only.
func (r *Redis) checkEpoch(ctx context.Context, p *publisher, seen string) {
	if seen == p.epoch && seen != "" {
		return
	}
	now, err := r.initEpoch(ctx)
	if err != nil || now == p.epoch {
		return
	}
	if r.adoptEpoch(ctx, p, now) {
		r.dataLost.Store(true)
		r.askBeat() // our liveness key and client records went with the data
	}
}

// adoptEpoch makes now p's epoch, once the messages of p's window accepted
// under the old one are published again; false, with the old epoch kept,
// when that failed. p's goroutine only.
func (r *Redis) adoptEpoch(ctx context.Context, p *publisher, now string) bool {
	lost := p.ring.takeEpoch(p.epoch)
	if err := r.republish(ctx, p, lost); err != nil {
		for _, e := range lost {
			p.ring.add(e)
		}
		r.log.Warn("redis restarted or failed over; republishing accepted messages failed, will retry", "messages", len(lost), "err", err)
		return false
	}
	if p.shard < 0 || len(lost) > 0 {
		r.log.Warn("redis restarted or failed over, maybe without our messages; republished those it had accepted", "messages", len(lost), "old_epoch", p.epoch, "epoch", now)
	}
	r.stats.republished.Add(int64(len(lost)))
	// They stay in the window under the new epoch: the instance that has
	// just taken them may fail over in turn before its replica has them.
	for _, e := range lost {
		e.epoch = now
		p.ring.add(e)
	}
	p.epoch = now
	return true
}

// republish sends entries again, one script call per shard.
func (r *Redis) republish(ctx context.Context, p *publisher, entries []ringEntry) error {
	if len(entries) == 0 {
		return nil
	}
	var shards shardBatch
	for i, e := range entries {
		shards.add(e.shard, r.streamArgs, e.env, e.channel, i)
	}
	pipe := r.rdb.Pipeline()
	shards.queue(ctx, r, p, pipe)
	_, _ = pipe.Exec(ctx)
	shards.retryNoScript(ctx, r, false)
	for _, cmd := range shards.cmds {
		if cmd != nil && cmd.Err() != nil {
			return errors.Join(ErrUnavailable, cmd.Err())
		}
	}
	return nil
}

// askEpochCheck makes the publishers check the epoch even when nothing is
// being published; it never blocks.
func (r *Redis) askEpochCheck() {
	if r.bus == nil {
		r.pub.askCheck()
		return
	}
	for _, p := range r.shardPubs {
		p.askCheck()
	}
}

func (p *publisher) askCheck() {
	select {
	case p.q <- pubRequest{check: true, done: func(error) {}}:
	default: // the queue is busy: the next batch checks anyway
	}
}

// In Redis Cluster the epoch key lives on one master, which need not be
// the master of any shard a publisher writes: reading it in a shard's
// batch would make every shard's batches wait for that one master. One
// goroutine, the epoch watcher, reads it instead, when a publisher asks
// (askEpochRead: the publisher's epochWatch found a read due), and keeps
// what it found in clusterEpoch. Each shard's publisher compares that with
// its own epoch before each batch (adoptClusterEpoch) and, on a change,
// publishes its window's messages of the old epoch again before the batch,
// so that a message is only ever tagged with an epoch read before it was
// sent. A watcher that finds a change wakes every publisher, so that an
// idle shard's window is republished too.

// askEpochRead asks the epoch watcher to read the epoch; it never blocks.
func (r *Redis) askEpochRead() {
	select {
	case r.epochReads <- struct{}{}:
	default: // a read is already due
	}
}

// epochLoop is the epoch watcher of Redis Cluster mode, until Close.
func (r *Redis) epochLoop() {
	defer r.wg.Done()
	for {
		select {
		case <-r.epochReads:
		case <-r.ctx.Done():
			return
		}
		ctx, cancel := context.WithTimeout(r.ctx, 10*time.Second)
		r.readClusterEpoch(ctx)
		cancel()
	}
}

// readClusterEpoch reads the epoch key and, when it changed (or is gone:
// it is created again), makes the new one current and wakes the
// publishers. A failed read is retried at the next ask.
func (r *Redis) readClusterEpoch(ctx context.Context) {
	was := *r.clusterEpoch.Load()
	seen, err := r.rdb.Get(ctx, r.epochKey()).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return
	}
	if seen == was && seen != "" {
		return
	}
	now, err := r.initEpoch(ctx)
	if err != nil || now == was {
		return
	}
	r.log.Warn("redis epoch changed: the master of the epoch key restarted or failed over", "old_epoch", was, "epoch", now)
	r.clusterEpoch.Store(&now)
	r.askEpochCheck()
	r.dataLost.Store(true)
	r.askBeat() // our liveness key and client records may have gone with the data
}

// adoptClusterEpoch brings p to the epoch the watcher last found, before
// p sends a batch; on failure p keeps its epoch and tries again at its
// next batch. p's goroutine only.
func (r *Redis) adoptClusterEpoch(ctx context.Context, p *publisher) {
	if now := *r.clusterEpoch.Load(); now != p.epoch {
		r.adoptEpoch(ctx, p, now)
	}
}

// In Redis Cluster each shard's stream lives on the master of its slot, and
// the epoch key on one master only: a failover of another master, where the
// promoted replica lacks what the old master accepted after the replica's
// last read, leaves the epoch unchanged. Each publisher therefore also
// remembers, per shard, the master it writes to, and checks it whenever an
// epoch read is due (checkShardMasters). When a shard's master changed (a
// failover, or a slot moved by resharding), the shard's messages of the
// window are published again to the new master; receivers drop the copies
// they delivered (live by message id, a session's replay by message id
// too), so a migration that lost nothing costs only duplicates that go
// nowhere.

// checkShardMasters compares the master of each shard p writes, from the
// client's slot map, with the one its recent messages went to, and
// republishes the shard's window on a change. p's goroutine only.
func (r *Redis) checkShardMasters(ctx context.Context, p *publisher) {
	for s := range streamShards {
		if p.shard >= 0 && s != p.shard {
			continue
		}
		m, err := r.bus.cc.MasterForKey(ctx, r.streamKey(s))
		if err != nil {
			continue
		}
		addr := m.Options().Addr
		was := p.shardMasters[s]
		if was == "" || was == addr {
			p.shardMasters[s] = addr
			continue
		}
		lost := p.ring.takeShard(s)
		if err := r.republish(ctx, p, lost); err != nil {
			for _, e := range lost {
				p.ring.add(e)
			}
			r.log.Warn("stream shard moved to another master; republishing its recent messages failed, will retry", "shard", s, "messages", len(lost), "err", err)
			continue
		}
		r.log.Warn("stream shard moved to another master, maybe without our messages; republished those it had accepted",
			"shard", s, "messages", len(lost), "from", was, "to", addr)
		r.stats.republished.Add(int64(len(lost)))
		for _, e := range lost {
			p.ring.add(e)
		}
		p.shardMasters[s] = addr
	}
}
