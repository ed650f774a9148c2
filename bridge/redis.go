package bridge

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bridgemq/server/bridge/pattern"
	"github.com/bridgemq/server/broker"
	"github.com/bridgemq/server/topics"
)

// streamShards is the number of Redis streams QoS ≥ 1 messages are appended
// to. A topic's shard is fixed by its first level, so stream ids are ordered
// for every topic, and a replay after a blip reads one stream per shard.
const streamShards = 16

// Defaults for zero RedisOptions fields.
const (
	DefaultRedisPrefix = "mqtt:"
	DefaultNodeTTL     = 15 * time.Second
	DefaultStreamCap   = 100_000
	DefaultMaxPatterns = 256
	DefaultMaxQueued   = 1000
)

// cleanRecordTTL is how long the EMQX client record of a clean session
// outlives the connection, so that its offline_at can still be read.
const cleanRecordTTL = 5 * time.Minute

// takeoverTimeout bounds how long Attach waits for another node to end the
// previous connection of a client id.
const takeoverTimeout = 5 * time.Second

// RedisOptions configures a Redis bridge.
type RedisOptions struct {
	// Client reaches Redis: single node, Sentinel or Cluster. Required.
	Client redis.UniversalClient
	// Prefix namespaces every key and channel (default "mqtt:", the EMQX
	// layout); messages travel on channels "<Prefix>msg:<topic>".
	Prefix string
	// NodeID names this replica; it must be unique among live replicas.
	// Default: a random id.
	NodeID string
	// NodeTTL is how long this replica's liveness key outlives its last
	// refresh; other replicas publish the wills of its clients once it has
	// expired. Default DefaultNodeTTL.
	NodeTTL time.Duration
	// MessageExpiry drops messages kept for an offline session longer than
	// this; zero keeps them as long as the stream does.
	MessageExpiry time.Duration
	// SessionExpiry removes a persistent session, its subscriptions and
	// its cursor once it has been offline this long, by Redis key expiry
	// (so it holds whichever replica it was last on); zero keeps it.
	SessionExpiry time.Duration
	// MaxQueued bounds the messages returned for one offline session: the
	// newest are kept, the older ones dropped and counted (as Memory does,
	// see broker.OfflineQueue). Default DefaultMaxQueued.
	MaxQueued int
	// MaxPatterns bounds the Redis patterns this replica subscribes
	// (Redis pays for every pattern on every PUBLISH). Default
	// DefaultMaxPatterns.
	MaxPatterns int
	// StreamCap is the approximate length each shard's stream is trimmed
	// to; it bounds replay after a blip and offline queues. Default
	// DefaultStreamCap.
	StreamCap int64
	// StreamMaxBytes bounds the Redis memory (MEMORY USAGE) of all shards'
	// streams together: past it, the largest streams lose their oldest
	// entries (each keeps at least its newest). Measured after every
	// 1/trimCheckFraction of it a replica appends. Zero: no byte budget.
	// Entries older than MessageExpiry are trimmed as well.
	StreamMaxBytes int64
	// Logger receives operational events. Default slog.Default().
	Logger *slog.Logger
	// MinReplicasAcked, when above zero, makes a QoS ≥ 1 publish wait for
	// that many Redis replicas to confirm it (WAIT, up to
	// ReplicaAckTimeout) before it is acknowledged; fewer is a publish
	// failure. Not supported with a Redis Cluster client.
	MinReplicasAcked int
	// PublishLatency, when set, observes the seconds each publish
	// pipeline batch takes to go to Redis and back (a
	// prometheus.Histogram fits).
	PublishLatency interface{ Observe(float64) }
}

// Redis is the Bridge that lets any number of replicas act as one broker.
//
// Keys and channels, under the prefix (EMQX's names where EMQX has one):
//
//	<p>client:<id>      hash  state 1/0, online_at, offline_at, node, conn
//	<p>node:<node>      hash  client id → connect time, per replica
//	<p>alive:<node>     string with TTL NodeTTL, refreshed every TTL/3: the
//	                    node's token, or a reaper's tombstone
//	<p>willclaim:<conn> string with TTL 24h: the will of connection conn is
//	                    (being) published by the replica named
//	<p>nodes            set   registered replicas, checked by the reaper
//	<p>sub:<id>         hash  filter → QoS of a persistent session
//	<p>session:<id>     hash  state (inflight, queued, awaiting PUBREL),
//	                          cursor (last stream id per shard), will, conn, clean
//	<p>retain:<topic>   hash  id, from, qos, topic, retain, payload, ts
//	<p>retain_index     set   retained topic names, mirrored by every replica
//	<p>stream:<0..15>   stream of QoS ≥ 1 envelopes, capped at StreamCap
//	<p>msg:<topic>      channel carrying envelopes
//	<p>ctl:retain       channel "+topic"/"-topic" index announcements
//	<p>ctl:node:<node>  channel takeover requests and acknowledgements
//	mqtt_channel        channel EMQX subscribe/unsubscribe events (for prefix "mqtt:")
//
// Every multi-key step is a sequence of single-key commands, ordered so
// that a crash between them is harmless; Lua scripts touch one key each.
// The EMQX names therefore work unchanged in Redis Cluster.
//
// Live fan-out: a message is PUBLISHed to "<prefix>msg:<topic>"; each
// replica SUBSCRIBEs or PSUBSCRIBEs (pattern.PatternSet) what its local
// clients need, re-matches every message against its local trie and drops
// repeats. A QoS ≥ 1 message is also appended to a capped stream, by the same
// Lua script, so that a replica whose subscription connection dropped
// replays what it missed, and an offline persistent session finds its
// messages on reconnect by reading the streams from its cursor.
//
// Lock order. A goroutine that holds several of these takes them in this
// order, and none is held across a Redis round trip unless it says so:
//
//	clientLock(id)  per client id, held for a whole Attach (round trips
//	                included); a takeover handler waits on it only for a
//	                connection that has already claimed the id
//	psMu            held while a PatternSet change is computed and its
//	                SUBSCRIBE/UNSUBSCRIBE commands are written
//	mu              clients, the trie, lastSeen: the delivery lock; a
//	                message's fan-out and the lastSeen it raises run under
//	                one hold, lastSeen raised after the last client
//	Subscriber      Deliver and Idle run under mu and take the
//	                connection's own lock (session.Session.mu), so a
//	                Subscriber never calls into the bridge while holding it
//
// attachMu (guards the clientLock table) and waitMu (barrier, pong and
// takeover-ack waiters) are leaves: nothing else is taken while they are
// held.
type Redis struct {
	rdb        redis.UniversalClient
	prefix     string
	msgPrefix  string
	node       string
	ttl        time.Duration
	queue      broker.OfflineQueue // MaxQueued and MessageExpiry
	sessionTTL time.Duration
	// streamArgs are the leading arguments of every publishScript call:
	// the count cap and MessageExpiry in ms.
	streamArgs [2]int64
	// streamBudget is StreamMaxBytes (0: none).
	streamBudget int64
	trimReq      chan struct{} // cap 1: asks the trimmer to measure the streams
	log          *slog.Logger

	minReplicas int                           // RedisOptions.MinReplicasAcked
	pubLatency  interface{ Observe(float64) } // RedisOptions.PublishLatency; nil: off

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	pubq  chan pubRequest
	epoch string  // the Redis instance's epoch; publisher goroutine only
	ring  pubRing // recently accepted messages; publisher goroutine only
	// epochWatch says when a batch must read the epoch again.
	epochWatch epochWatch
	// ageTrimNext is, per shard, when this publisher next asks its script
	// call to trim the stream by age; publisher goroutine only.
	ageTrimNext [streamShards]time.Time
	// appended counts the envelope bytes appended to the streams since the
	// trimmer was last asked to measure them; publisher goroutine only.
	appended int64

	ps       *redis.PubSub
	psMu     sync.Mutex // orders PatternSet changes and their SUBSCRIBE commands
	patterns *pattern.PatternSet
	waitMu   sync.Mutex
	expected map[string]int           // subscribe confirmations we asked for
	pongs    map[string]chan struct{} // PING barriers in flight
	acks     map[string]chan struct{} // takeover acknowledgements awaited

	mu      sync.Mutex // guards clients, lastSeen and delivery
	clients map[string]*redisClient
	// detaching holds, per client id, a channel closed once a Detach that
	// has already unregistered the client has stored its session: a
	// takeover waits for it so it never reads a session being written.
	detaching map[string]chan struct{}
	// claiming holds, per client id, the connection id an Attach on this
	// node has claimed in Redis while it is still attaching.
	claiming map[string]string
	trie     *topics.Trie[string]
	lastSeen [streamShards]streamID
	seenGen  uint64          // counts changes of lastSeen
	matched  map[string]byte // reused by the reader under mu
	// oldMsg is the message whose age old holds (see oldLocked); under mu.
	oldMsg *Message
	old    bool

	recent   recentIDs                                 // reader goroutine only
	retained atomic.Pointer[topics.Retained[struct{}]] // mirror of the retained index

	attachMu sync.Mutex
	attaches map[string]*clientLock // serialises Attach per client id

	stats redisCounters

	// Liveness (redis_liveness.go).
	token         string                // this run's value in the liveness key
	beatNow       chan struct{}         // asks the node loop for a heartbeat now
	lastBeat      atomic.Int64          // unix nanoseconds of the last refresh of the key
	needReconcile atomic.Bool           // live connections must be registered again
	conflict      atomic.Pointer[error] // set while another replica holds this node id
}

// redisClient is a client connection attached to this replica.
type redisClient struct {
	id    string
	owner string // the username that created the session
	// since holds when this connection subscribed each filter it added
	// itself; filters restored with a stored session have none. Old
	// messages (a blip's replay, the window re-published after Redis
	// restarted) reach a filter only if it existed when they were
	// published [MQTT-4.5.0-1] (see eligibleGrant).
	since map[string]time.Time
	sub   Subscriber
	conn  string // this connection's id in the client record
	clean bool
	subs  map[string]byte
	late  []Delivery // refused by a closing connection, for its Detach
	will  *Message   // published if the connection ends without DISCONNECT

	// While Attach replays a persistent session's streams, live messages
	// with a stream id wait in pending; skip then holds, per shard, the
	// last stream id the replay returned, so that live copies of
	// replayed messages are not delivered twice.
	replaying bool
	pending   []pendingDelivery
	skip      *[streamShards]streamID // nil when nothing was replayed
	// checkGen is the seenGen of the position last stored as this
	// session's cursor by a checkpoint.
	checkGen uint64
	// floor is, per shard, a position this session's stored cursor never
	// goes below: where its replay ended, and each stream's end when the
	// session or one of its filters began. A subscription receives only
	// what is published after it [MQTT-4.5.0-1], so a cursor must never be
	// older than that, however far this replica's own position (lastSeen)
	// lags on a shard it had no subscription on.
	floor [streamShards]streamID
	// gated is, per shard, the last stream id gateLocked decided for this
	// connection. lastSeen moves only after a message's fan-out, so a
	// cursor taken while one is under way covers it through gated if the
	// gate saw it for this client, and leaves it to the replay if not.
	gated [streamShards]streamID
}

// cursorLocked is where a replay of c's session may start: the highest of
// this replica's position (lastSeen, past every message whose fan-out
// ended), the last id the gate decided for c (gated), c's floor and where
// its replay ended. Everything up to it reached c, is in the state stored
// with it, or was never c's; everything after it is read again from the
// streams. It is the rule broker.Cluster.Leave applies once the core does
// the fan-out. r.mu is held.
func (r *Redis) cursorLocked(c *redisClient) [streamShards]streamID {
	cur := r.lastSeen
	raise(&cur, &c.gated)
	raise(&cur, &c.floor)
	if c.skip != nil {
		raise(&cur, c.skip)
	}
	return cur
}

type pendingDelivery struct {
	d     Delivery
	shard int
	sid   streamID
}

type redisCounters struct {
	published, publishErrors, qos0Dropped atomic.Int64
	received, delivered, deduplicated     atomic.Int64
	replayed, replays, decodeErrors       atomic.Int64
	queuedDropped, expired, willsSent     atomic.Int64
	queueTrimmed, replayTrimmed           atomic.Int64
	streamTrims                           atomic.Int64
	takeovers, republished                atomic.Int64
	claimConflicts, notReplicated         atomic.Int64
}

// NewRedis connects a Redis bridge: it subscribes its control channels,
// loads the retained index, registers the node and starts the publisher,
// the reader and the liveness loops. Close stops them.
func NewRedis(ctx context.Context, o RedisOptions) (*Redis, error) {
	if o.Client == nil {
		return nil, errors.New("new redis bridge: Client is required")
	}
	if o.Prefix == "" {
		o.Prefix = DefaultRedisPrefix
	}
	if o.NodeID == "" {
		o.NodeID = randomToken()
	}
	if o.NodeTTL <= 0 {
		o.NodeTTL = DefaultNodeTTL
	}
	if o.StreamCap <= 0 {
		o.StreamCap = DefaultStreamCap
	}
	if o.MaxPatterns <= 0 {
		o.MaxPatterns = DefaultMaxPatterns
	}
	if o.MaxQueued <= 0 {
		o.MaxQueued = DefaultMaxQueued
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.MinReplicasAcked < 0 {
		return nil, fmt.Errorf("new redis bridge: MinReplicasAcked %d is negative", o.MinReplicasAcked)
	}
	if _, cluster := o.Client.(*redis.ClusterClient); cluster && o.MinReplicasAcked > 0 {
		return nil, errors.New("new redis bridge: MinReplicasAcked is not supported with Redis Cluster")
	}
	r := &Redis{
		rdb:        o.Client,
		prefix:     o.Prefix,
		msgPrefix:  o.Prefix + "msg:",
		node:       o.NodeID,
		ttl:        o.NodeTTL,
		sessionTTL: o.SessionExpiry,
		log:        o.Logger.With("component", "bridge.redis", "node", o.NodeID),
		pubq:       make(chan pubRequest, 4*maxBatch),
		patterns:   pattern.NewPatternSet(o.Prefix+"msg:", o.MaxPatterns),
		expected:   make(map[string]int),
		pongs:      make(map[string]chan struct{}),
		acks:       make(map[string]chan struct{}),
		clients:    make(map[string]*redisClient),
		detaching:  make(map[string]chan struct{}),
		claiming:   make(map[string]string),
		trie:       topics.NewTrie[string](),
		matched:    make(map[string]byte),
		recent:     newRecentIDs(1 << 16),
		attaches:   make(map[string]*clientLock),
		token:      randomToken(),
		beatNow:    make(chan struct{}, 1),
	}
	r.queue = broker.OfflineQueue{Max: o.MaxQueued, Expiry: o.MessageExpiry, Dropped: &r.stats.queuedDropped, Expired: &r.stats.expired}
	if cc, ok := o.Client.(*redis.ClusterClient); ok {
		watchClusterTopology(ctx, cc)
	}
	r.minReplicas = o.MinReplicasAcked
	r.pubLatency = o.PublishLatency
	if o.StreamMaxBytes < 0 {
		return nil, fmt.Errorf("new redis bridge: StreamMaxBytes %d is negative", o.StreamMaxBytes)
	}
	r.streamArgs = [2]int64{o.StreamCap, max(0, o.MessageExpiry.Milliseconds())}
	r.streamBudget = o.StreamMaxBytes
	r.trimReq = make(chan struct{}, 1)
	if err := r.rdb.Ping(ctx).Err(); err != nil {
		return nil, fmt.Errorf("new redis bridge: ping: %w: %w", ErrUnavailable, err)
	}
	if err := r.loadScripts(ctx); err != nil {
		return nil, fmt.Errorf("new redis bridge: %w", err)
	}
	r.ctx, r.cancel = context.WithCancel(context.Background())

	// Subscribe before reading any state, so that nothing announced in
	// between is missed.
	// Subscribe, and wait for the confirmations, before reading any state,
	// so that nothing announced in between is missed: announcements that
	// arrive while the state loads wait in the connection for the reader.
	if err := r.subscribeControl(ctx); err != nil {
		r.cancel()
		_ = r.ps.Close()
		return nil, fmt.Errorf("new redis bridge: %w", err)
	}
	r.epochWatch.watch(r.rdb)
	var err error
	r.epoch, err = r.initEpoch(ctx)
	if err == nil {
		err = r.initStreams(ctx)
	}
	if err == nil {
		err = r.loadRetainedIndex(ctx)
	}
	if err == nil {
		err = r.joinCluster(ctx)
	}
	if err != nil {
		r.cancel()
		_ = r.ps.Close()
		return nil, fmt.Errorf("new redis bridge: %w", err)
	}
	r.wg.Add(5)
	go r.trimLoop()
	go r.readLoop()
	go r.publishLoop()
	go r.nodeLoop()
	go r.checkpointLoop()
	if err := r.reapPreviousRun(ctx); err != nil {
		_ = r.Close()
		return nil, fmt.Errorf("new redis bridge: %w", err)
	}
	return r, nil
}

// subscribeControl subscribes the control channels and reads their
// confirmations itself, before the reader starts.
func (r *Redis) subscribeControl(ctx context.Context) error {
	ctl := []string{r.retainCtlChannel(), r.nodeCtlChannel(r.node)}
	r.ps = r.rdb.Subscribe(ctx)
	if err := r.ps.Subscribe(ctx, ctl...); err != nil {
		return unavailable("subscribe control channels", err)
	}
	for range ctl {
		v, err := r.ps.ReceiveTimeout(ctx, barrierTimeout)
		if err != nil {
			return unavailable("subscribe control channels", err)
		}
		if _, ok := v.(*redis.Subscription); !ok {
			return fmt.Errorf("subscribe control channels: unexpected %T before confirmation", v)
		}
	}
	return nil
}

// NodeID returns the name this replica registered under.
func (r *Redis) NodeID() string { return r.node }

// Ready reports whether this replica can take a CONNECT and a QoS 1
// PUBLISH, for a readiness probe: its node id is its own, its liveness key
// was refreshed within the TTL, and every stream shard's key answers (in
// Redis Cluster, every master the client routes to answers too).
func (r *Redis) Ready(ctx context.Context) error {
	if p := r.conflict.Load(); p != nil {
		return fmt.Errorf("redis ready: %w", *p)
	}
	if since := time.Since(time.Unix(0, r.lastBeat.Load())); since > r.ttl {
		return fmt.Errorf("redis ready: %w: liveness key not refreshed for %s", ErrUnavailable, since.Round(time.Millisecond))
	}
	if err := r.probeShards(ctx); err != nil {
		return fmt.Errorf("redis ready: %w", err)
	}
	return nil
}

// Stats returns the bridge's counters: messages published, delivered to
// local clients, dropped as repeats, QoS 0 messages dropped while Redis was
// unreachable, messages replayed from the streams, and so on.
func (r *Redis) Stats() map[string]int64 {
	s := &r.stats
	return map[string]int64{
		"published":                       s.published.Load(),
		"publish_errors":                  s.publishErrors.Load(),
		"qos0_dropped":                    s.qos0Dropped.Load(),
		"received":                        s.received.Load(),
		"delivered":                       s.delivered.Load(),
		"deduplicated":                    s.deduplicated.Load(),
		"replayed":                        s.replayed.Load(),
		"replays":                         s.replays.Load(),
		"decode_errors":                   s.decodeErrors.Load(),
		"offline_queue_dropped":           s.queuedDropped.Load(),
		"offline_queue_expired":           s.expired.Load(),
		"offline_queue_trimmed":           s.queueTrimmed.Load(),
		"replay_trimmed":                  s.replayTrimmed.Load(),
		"stream_byte_trims":               s.streamTrims.Load(),
		"wills_published":                 s.willsSent.Load(),
		"takeovers":                       s.takeovers.Load(),
		"claim_conflicts":                 s.claimConflicts.Load(),
		"republished_after_redis_restart": s.republished.Load(),
		"publish_not_replicated":          s.notReplicated.Load(),
		"retained_messages":               int64(r.retained.Load().Len()),
		"subscription_filters":            int64(r.trie.Filters()),
	}
}

// Close stops the bridge's goroutines and its subscription. Messages
// already accepted by Publish are in Redis; clients still attached are left
// to the other replicas, which publish their wills once this node's
// liveness key expires.
func (r *Redis) Close() error {
	r.cancel()
	err := r.ps.Close()
	r.wg.Wait()
	r.mu.Lock()
	idle := len(r.clients) == 0
	r.mu.Unlock()
	if idle {
		// Nothing to reap: leave the registry at once.
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if released, _ := releaseScript.Run(ctx, r.rdb, []string{r.aliveKey(r.node)}, r.token).Int(); released == 1 {
			_ = r.rdb.SRem(ctx, r.nodesKey(), r.node).Err()
		}
	}
	if err != nil {
		return fmt.Errorf("close redis bridge: %w", err)
	}
	return nil
}

// Key and channel names.

func (r *Redis) clientKey(id string) string    { return r.prefix + "client:" + id }
func (r *Redis) nodeKey(node string) string    { return r.prefix + "node:" + node }
func (r *Redis) aliveKey(node string) string   { return r.prefix + "alive:" + node }
func (r *Redis) nodesKey() string              { return r.prefix + "nodes" }
func (r *Redis) subKey(id string) string       { return r.prefix + "sub:" + id }
func (r *Redis) sessionKey(id string) string   { return r.prefix + "session:" + id }
func (r *Redis) retainKey(topic string) string { return r.prefix + "retain:" + topic }
func (r *Redis) retainIndexKey() string        { return r.prefix + "retain_index" } // not under retain:, where any topic name may land
func (r *Redis) streamKey(shard int) string    { return r.prefix + "stream:" + strconv.Itoa(shard) }
func (r *Redis) retainCtlChannel() string      { return r.prefix + "ctl:retain" }
func (r *Redis) nodeCtlChannel(n string) string {
	return r.prefix + "ctl:node:" + n
}

// eventChannel is EMQX's "mqtt_channel" for the default prefix.
func (r *Redis) eventChannel() string { return strings.TrimSuffix(r.prefix, ":") + "_channel" }

// shardOf maps a topic to its stream by its first level.
func shardOf(topic string) int {
	first := topic
	if i := strings.IndexByte(topic, '/'); i >= 0 {
		first = topic[:i]
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(first))
	return int(h.Sum32() % streamShards)
}

// randomToken returns 16 random bytes in hex.
func randomToken() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// unavailable wraps a Redis error so that callers can test for
// ErrUnavailable.
func unavailable(op string, err error) error {
	return fmt.Errorf("%s: %w: %w", op, ErrUnavailable, err)
}
