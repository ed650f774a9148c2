package bridge

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// The sharded bus: how messages travel between replicas in Redis Cluster.
//
// A classic PUBLISH in Redis Cluster is forwarded to every node, so pub/sub
// would cost every master every message and the bus would not grow with the
// cluster. With a Redis Cluster client the bridge therefore moves messages
// on sharded pub/sub (SPUBLISH/SSUBSCRIBE, Redis 7), which a master
// delivers only to the clients connected to it:
//
//   - Each of the streamShards stream shards has a hash tag chosen so that
//     the shards' slots are spread evenly over the slot space
//     (shardTags): "<p>stream:{tag}" and its channel "<p>bus:{tag}" are in
//     one slot, so the publish script appends to the stream and SPUBLISHes
//     on the channel on the same master, in one atomic step, and a replica
//     reads the channel from that master.
//   - A topic's shard is the hash of its first level (shardOf), as for one
//     Redis. A replica SSUBSCRIBEs the shards its routed filters can match:
//     one shard for a filter whose first level is literal, every shard for
//     one that starts with '+' or '#'. The core re-matches every message, so
//     a replica may receive messages none of its clients wants (the cost of
//     a shard: every message of it).
//   - One subscription connection per shard (shardSub), since one
//     SSUBSCRIBE may name channels of one slot only; go-redis dials the
//     master that owns the slot. When the slot moves (resharding: the old
//     master sends SUNSUBSCRIBE) or the master fails, the connection is
//     replaced on the new owner, and the shard's stream is read from the
//     last id this replica saw, as for a blip of the single subscription.
//   - Control channels (retained index, takeovers, shared groups, EMQX
//     events) stay on classic pub/sub: they are few and every replica wants
//     them.
//
// With 16 shards on 3 masters each master owns 5 or 6 shards, so its share
// of the messages is 5/16 to 6/16 of the whole when topics are spread; 16
// masters is the most the bus can use.

// clusterSlots is the number of hash slots of Redis Cluster.
const clusterSlots = 16384

// keySlot is the Redis Cluster hash slot of key: CRC16 (XMODEM) of its hash
// tag, the part between the first '{' and the next '}' when not empty, or
// of the whole key.
func keySlot(key string) int {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	return int(crc16(key) % clusterSlots)
}

// crc16 is CRC-16/XMODEM (polynomial 0x1021, initial value 0), the one
// Redis Cluster hashes keys with.
func crc16(s string) uint16 {
	var crc uint16
	for i := 0; i < len(s); i++ {
		crc ^= uint16(s[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}

// shardTags returns, for each stream shard, the hash tag whose slot is the
// centre of the shard's equal part of the slot space: the smallest decimal
// number that hashes there. Masters given equal slot ranges (as
// redis-cli --cluster create does) then own equal numbers of shards, up to
// one.
func shardTags() [streamShards]string {
	var tags [streamShards]string
	var want [clusterSlots]int // slot → shard+1 of the shard whose centre it is
	for s := range streamShards {
		want[s*clusterSlots/streamShards+clusterSlots/streamShards/2] = s + 1
	}
	found := 0
	for k := 0; found < streamShards; k++ {
		t := strconv.Itoa(k)
		if s := want[keySlot(t)]; s > 0 && tags[s-1] == "" {
			tags[s-1] = t
			found++
		}
	}
	return tags
}

// shardBus is this replica's side of the sharded bus: which shards its
// routed filters need, and the subscription of each.
type shardBus struct {
	cc *redis.ClusterClient
	// streams and channels are each shard's stream key and channel, named
	// once: the publish path names one per message.
	streams, channels [streamShards]string

	mu   sync.Mutex // guards need, all and subs
	need [streamShards]int
	all  int // routed filters starting with a wildcard: they need every shard
	subs [streamShards]*shardSub
}

// shardSub is the subscription of one sharded channel: a stream shard's,
// or (shard -1) the retained index announcements'.
type shardSub struct {
	shard   int
	channel string
	ready   chan struct{} // closed once Redis first confirms the subscription
	cancel  context.CancelFunc
	// replay reads what the channel may have carried while the
	// subscription was down; false when Redis could not be read. With
	// rewind, the shard moved to another master (see rewindWindow).
	replay func(rewind bool) bool
	// owner is the master the subscription was last confirmed on; the
	// shard's goroutine only.
	owner string
	// left is the node that unsubscribed us because the slot left it
	// (sunsubscribe), until the slot map names another owner; the shard's
	// goroutine only.
	left string
}

func newShardBus(cc *redis.ClusterClient, prefix string) *shardBus {
	b := &shardBus{cc: cc}
	for s, tag := range clusterTags() {
		b.streams[s] = prefix + "stream:{" + tag + "}"
		b.channels[s] = prefix + "bus:{" + tag + "}"
	}
	return b
}

// clusterTags is shardTags, computed once.
var clusterTags = sync.OnceValue(shardTags)

// ClusterStreamKey is the stream a QoS ≥ 1 message on topic is appended to
// in Redis Cluster, under prefix: its slot is the slot of the shard's
// channel, and so the master that carries the topic's messages.
func ClusterStreamKey(prefix, topic string) string {
	return prefix + "stream:{" + clusterTags()[shardOf(topic)] + "}"
}

// busChannel is shard's channel in Redis Cluster.
func (r *Redis) busChannel(shard int) string { return r.bus.channels[shard] }

// checkShardSlots makes sure each shard's stream and bus channel share a
// slot, as the publish script needs (it appends to the one and SPUBLISHes
// on the other). A prefix with a '{' it does not close ("x{") starts a
// hash tag that runs into the key's own "{tag}", so the two names hash
// differently and every publish on a shard whose two slots sit on
// different masters would fail: such a prefix is refused at start.
func (r *Redis) checkShardSlots() error {
	for s := range streamShards {
		if stream, bus := r.streamKey(s), r.busChannel(s); keySlot(stream) != keySlot(bus) {
			return fmt.Errorf("prefix %q: shard %d's stream %q (slot %d) and channel %q (slot %d) are in different slots of the Redis Cluster; close its '{' with a '}' or leave braces out",
				r.prefix, s, stream, keySlot(stream), bus, keySlot(bus))
		}
	}
	return nil
}

// filterShard is the one shard every topic filter matches lies on, false
// when its first level is a wildcard.
func filterShard(filter string) (int, bool) {
	first := filter
	if i := strings.IndexByte(filter, '/'); i >= 0 {
		first = filter[:i]
	}
	if first == "+" || first == "#" {
		return 0, false
	}
	return shardOf(first), true
}

// routeShards adds filters to the shards' needs, subscribes every shard
// needed now and not yet subscribed, and returns once each shard the
// filters need is subscribed (a barrier: a message published after it
// reaches this replica).
func (r *Redis) routeShards(ctx context.Context, filters []string) error {
	b := r.bus
	var touched [streamShards]bool
	b.mu.Lock()
	for _, f := range filters {
		if s, ok := filterShard(f); ok {
			b.need[s]++
			touched[s] = true
		} else {
			b.all++
			touched = [streamShards]bool{}
			for s := range touched {
				touched[s] = true
			}
		}
	}
	var wait []*shardSub
	for s := range streamShards {
		if b.subs[s] == nil && (b.need[s] > 0 || b.all > 0) {
			b.subs[s] = r.startShardSub(s)
		}
		if touched[s] {
			wait = append(wait, b.subs[s])
		}
	}
	b.mu.Unlock()
	t := time.NewTimer(barrierTimeout)
	defer t.Stop()
	for _, sub := range wait {
		select {
		case <-sub.ready:
		case <-t.C:
			return fmt.Errorf("subscribe shard %d: no confirmation in %v: %w", sub.shard, barrierTimeout, ErrUnavailable)
		case <-ctx.Done():
			return fmt.Errorf("subscribe shard %d: %w", sub.shard, ctx.Err())
		}
	}
	return nil
}

// unrouteShards takes filters from the shards' needs and ends the
// subscriptions of shards no longer needed.
func (r *Redis) unrouteShards(filters []string) {
	b := r.bus
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, f := range filters {
		if s, ok := filterShard(f); ok {
			b.need[s] = max(0, b.need[s]-1)
		} else {
			b.all = max(0, b.all-1)
		}
	}
	for s, sub := range b.subs {
		if sub != nil && b.need[s] == 0 && b.all == 0 {
			sub.cancel()
			b.subs[s] = nil
		}
	}
}

// startShardSub starts the subscription of shard; b.mu is held.
func (r *Redis) startShardSub(shard int) *shardSub {
	ctx, cancel := context.WithCancel(r.ctx)
	sub := &shardSub{shard: shard, channel: r.busChannel(shard), ready: make(chan struct{}), cancel: cancel,
		replay: func(rewind bool) bool { return r.replayShard(shard, rewind) }}
	r.wg.Add(1)
	go r.shardLoop(ctx, sub)
	return sub
}

// subscribeRetainAnnouncements subscribes, in Redis Cluster, the retained
// index announcements on sharded pub/sub and waits for the confirmation. A
// classic PUBLISH reaches the other nodes over the cluster bus, after the
// publisher's PUBACK: a subscribe on another replica just after it would
// read a mirror without the new topic. A sharded channel lives on one
// master, which writes each announcement to every subscriber before it
// answers the publisher, as one Redis does. After a gap the whole index is
// read again.
func (r *Redis) subscribeRetainAnnouncements(ctx context.Context) error {
	sctx, cancel := context.WithCancel(r.ctx)
	sub := &shardSub{shard: -1, channel: r.retainCtlChannel(), ready: make(chan struct{}), cancel: cancel,
		replay: func(bool) bool {
			ctx, cancel := context.WithTimeout(r.ctx, 30*time.Second)
			defer cancel()
			r.readMu.Lock()
			defer r.readMu.Unlock()
			if err := r.loadRetainedIndex(ctx); err != nil {
				r.log.Warn("retained index reload failed; retrying", "err", err)
				return false
			}
			return true
		}}
	r.wg.Add(1)
	go r.shardLoop(sctx, sub)
	select {
	case <-sub.ready:
		return nil
	case <-time.After(barrierTimeout):
		return fmt.Errorf("subscribe %s: no confirmation in %v: %w", sub.channel, barrierTimeout, ErrUnavailable)
	case <-ctx.Done():
		return fmt.Errorf("subscribe %s: %w", sub.channel, ctx.Err())
	}
}

// shardLoop keeps shard's subscription up until ctx ends: it opens a
// subscription connection on the slot's master, reads it, and opens a new
// one when the slot has moved or the master is gone. A message missed
// meanwhile is read from the shard's stream (replayShard) before the next
// live one is handled.
func (r *Redis) shardLoop(ctx context.Context, sub *shardSub) {
	defer r.wg.Done()
	gap := false
	backoff := 10 * time.Millisecond
	for ctx.Err() == nil {
		ps := r.bus.cc.SSubscribe(ctx, sub.channel)
		stop := context.AfterFunc(ctx, func() { _ = ps.Close() })
		ok := r.readShard(ctx, ps, sub, gap)
		stop()
		_ = ps.Close()
		if ctx.Err() != nil {
			return
		}
		gap = true // whatever was published meanwhile is in the stream
		// The slot map may be stale: a failover or a migration.
		r.bus.cc.ReloadState(ctx)
		if sub.left != "" {
			r.awaitNewOwner(ctx, sub)
		}
		if !ok {
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return
			}
			backoff = min(2*backoff, time.Second)
		} else {
			backoff = 10 * time.Millisecond
		}
	}
}

// readShard reads one subscription connection of sub until it must be
// replaced: it reports whether the connection had been working (false:
// replace it after a pause). gap says the stream must be read before the
// next live message.
func (r *Redis) readShard(ctx context.Context, ps *redis.PubSub, sub *shardSub, gap bool) bool {
	confirmed := false
	rewind := false
	failures := 0
	for {
		v, err := ps.ReceiveTimeout(ctx, healthInterval)
		if err != nil {
			if ctx.Err() != nil {
				return true
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				_ = ps.Ping(ctx)
				continue
			}
			if !gap {
				r.log.Warn("redis shard subscription lost; will replay its stream", "shard", sub.shard, "err", err)
			}
			gap = true
			var re redis.Error
			failures++
			if errors.As(err, &re) || failures >= 3 {
				// A reply such as MOVED or CLUSTERDOWN, or a connection
				// that keeps failing: dial the slot's owner again.
				return false
			}
			select {
			case <-time.After(10 * time.Millisecond << failures):
			case <-ctx.Done():
				return true
			}
			continue
		}
		failures = 0
		switch v := v.(type) {
		case *redis.Subscription:
			switch v.Kind {
			case "ssubscribe":
				if confirmed {
					gap = true // go-redis re-subscribed after a reconnect
				}
				confirmed = true
				select {
				case <-sub.ready:
				default:
					close(sub.ready)
				}
				if m, err := r.bus.cc.MasterForKey(ctx, sub.channel); err == nil {
					owner := m.Options().Addr
					if sub.owner != "" && owner != sub.owner {
						gap, rewind = true, true
					}
					sub.owner = owner
				}
			case "sunsubscribe":
				// The slot left this master (a failover that demoted
				// it, or resharding): subscribe on its new owner and
				// read what was published meanwhile.
				r.log.Info("redis shard moved; subscribing on its new master", "shard", sub.shard, "from", sub.owner)
				sub.left = sub.owner
				return true
			}
			if gap && r.waitBound(ctx) {
				gap = !sub.replay(rewind)
				rewind = rewind && gap
			}
		case *redis.Pong:
			if m, err := r.bus.cc.MasterForKey(ctx, sub.channel); err == nil && sub.owner != "" && m.Options().Addr != sub.owner {
				// Confirmed on a node the slot map no longer names: a
				// replica may serve the subscription, but hears the
				// master's SPUBLISHes only once the master counts it
				// among its replicas. Subscribe on the master.
				r.log.Info("redis shard subscription not on the slot's master; subscribing there", "shard", sub.shard, "on", sub.owner, "master", m.Options().Addr)
				return true
			}
			if gap && r.waitBound(ctx) {
				gap = !sub.replay(rewind)
				rewind = rewind && gap
			}
		case *redis.Message:
			if !r.waitBound(ctx) {
				return true
			}
			if gap {
				gap = !sub.replay(rewind)
				rewind = rewind && gap
			}
			r.readMu.Lock()
			r.receive(v)
			r.readMu.Unlock()
		}
	}
}

// newOwnerWait bounds how long a shard whose master unsubscribed it waits
// for the slot map to name another master before subscribing anyway.
const newOwnerWait = 10 * time.Second

// awaitNewOwner waits until the client's slot map names a master for sub's
// channel other than sub.left, the node that said the slot left it, asking
// for the map again meanwhile. Subscribing by a stale map lands on the old
// master: a demoted one, now a replica, confirms the subscription and
// serves it, but hears the new master's SPUBLISHes only once the new
// master counts it among its replicas, and the confirmation would name
// the old master as owner, so the stream would not be read again from
// before the failover (rewindWindow). Past newOwnerWait it goes on: the
// Pong check in readShard moves the subscription later.
func (r *Redis) awaitNewOwner(ctx context.Context, sub *shardSub) {
	defer func() { sub.left = "" }()
	deadline := time.Now().Add(newOwnerWait)
	for time.Now().Before(deadline) {
		if m, err := r.bus.cc.MasterForKey(ctx, sub.channel); err == nil && m.Options().Addr != sub.left {
			return
		}
		select {
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
			return
		}
		r.bus.cc.ReloadState(ctx)
	}
	r.log.Warn("redis shard: the slot map still names the master that gave the slot up; subscribing anyway", "shard", sub.shard, "node", sub.left)
}

// waitBound waits until the core is bound (Bind): the retained
// announcements' subscription starts before it. False when ctx ended.
func (r *Redis) waitBound(ctx context.Context) bool {
	select {
	case <-r.bound:
		return true
	case <-ctx.Done():
		return false
	}
}

// rewindWindow is how far back a shard's stream is read again when the
// shard moved to another master. Stream ids are ordered within one master's
// history only: a demoted master that was paused, not killed, may still
// append (and send) a message it had buffered, with an id later than those
// the promoted replica gave meanwhile; this replica's position then lies
// past messages it never saw. Reading the window again finds them;
// messages already handled are dropped by id (recentIDs). It matches the
// publishers' republish window (ringAge).
const rewindWindow = ringAge

// replayShard reads shard's stream after the last id this replica saw and
// delivers what it missed; with rewind, from rewindWindow before it. It
// reports false when Redis could not be read.
func (r *Redis) replayShard(shard int, rewind bool) bool {
	ctx, cancel := context.WithTimeout(r.ctx, 30*time.Second)
	defer cancel()
	r.readMu.Lock()
	defer r.readMu.Unlock()
	r.stats.replays.Add(1)
	if rewind {
		r.mu.Lock()
		if ms := uint64(rewindWindow.Milliseconds()); r.lastSeen[shard].ms > ms {
			r.lastSeen[shard] = streamID{ms: r.lastSeen[shard].ms - ms}
		} else {
			r.lastSeen[shard] = streamID{}
		}
		r.mu.Unlock()
		r.log.Info("redis shard on a new master; reading its recent stream again", "shard", shard)
	}
	if err := r.replayStream(ctx, shard); err != nil {
		r.log.Warn("shard stream replay failed; retrying", "shard", shard, "err", err)
		return false
	}
	return true
}

// checkShardedPubSub makes sure every master serves sharded pub/sub
// (Redis 7): COMMAND INFO answers nil for a command it does not know.
func checkShardedPubSub(ctx context.Context, cc *redis.ClusterClient) error {
	return cc.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
		info, err := m.Do(ctx, "COMMAND", "INFO", "SPUBLISH").Slice()
		if err != nil {
			return fmt.Errorf("%s: command info spublish: %w", m.Options().Addr, err)
		}
		if len(info) == 0 || info[0] == nil {
			return fmt.Errorf("%s does not serve SPUBLISH: Redis Cluster needs Redis 7 or later", m.Options().Addr)
		}
		return nil
	})
}
