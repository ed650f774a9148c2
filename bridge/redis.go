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
	// newest are kept, the older ones dropped and counted (the core's
	// broker.OfflineQueue, which NewRedisBroker builds with it). Default
	// DefaultMaxQueued.
	MaxQueued int
	// MaxQueuedBytes bounds the bytes (Message.Size) of those messages as
	// well, the newest kept; zero: no byte bound.
	MaxQueuedBytes int
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
	// WillAuth, when set, is asked with the rules in force when a will
	// kept in Redis is about to be published by this replica for another
	// connection (a dead replica's client, a takeover of a replica that did
	// not answer, a delayed will come due) whether its user may still
	// publish to its topic; false drops it. A connection's own replica
	// asks its authorizer itself when the connection ends.
	WillAuth func(clientID, username, topic string) bool
}

// Redis lets any number of replicas act as one broker: it is both the
// broker.Cluster and the broker.Store of each replica's local core
// (NewRedisBroker). The core matches every message to its local clients;
// Redis carries messages between replicas, keeps what outlives a
// connection, and applies its cursor rules to each delivery through the
// broker.SessionGate Claim returns for each connection, its redisClient
// (Gate).
//
// Keys and channels, under the prefix (EMQX's names where EMQX has one):
//
//	<p>client:<id>      hash  state 1/0, online_at, offline_at, node, conn,
//	                          owner, peerhost (the client's address)
//	<p>node:<node>      hash  client id → connect time, per replica
//	<p>alive:<node>     string with TTL NodeTTL, refreshed every TTL/3: the
//	                    node's token, or a reaper's tombstone
//	<p>willclaim:<conn> string with TTL 24h: the will of connection conn is
//	                    (being) published by the replica named
//	<p>wills:delayed    sorted set  client ids whose delayed will waits,
//	                    by due time (redis_willdelay.go)
//	<p>willdelay:<id>   string  that will's envelope
//	<p>nodes            set   registered replicas, checked by the reaper
//	<p>sub:<id>         hash  filter → QoS of a persistent session, or its
//	                          5.0 options byte and ":<subscription id>"
//	                          (see encodeSubscription)
//	<p>session:<id>     hash  state (inflight, queued, awaiting PUBREL),
//	                          cursor (last stream id per shard), will, conn,
//	                          clean, expiry (ms, the session's own interval
//	                          when shorter than SessionExpiry)
//	<p>retain:<topic>   hash  id, from, qos, topic, retain, payload, ts
//	<p>retain_index     set   retained topic names, mirrored by every replica
//	<p>stream:<0..15>   stream of QoS ≥ 1 envelopes, capped at StreamCap
//	<p>sharenodes:<group> hash node → "members:unix ms" of a shared
//	                    subscription group, per replica (redis_share.go)
//	<p>shareclaim:<msg id>:<group> string with TTL 30 s: the replica that
//	                    delivers that message to that group
//	<p>sharequeue:<group> list with TTL 30 s: envelopes of messages handed
//	                    off to that group, for a replica with members to
//	                    take (redis_sharehandoff.go)
//	<p>shareowed:<node> hash "<msg id hex>:<group>" → envelope: the QoS ≥ 1
//	                    shared messages that replica's members took and
//	                    have not finished; a reaper of the replica moves
//	                    them to their groups' lists (redis_shareowed.go)
//	<p>msg:<topic>      channel carrying envelopes
//	<p>ctl:retain       channel "+topic"/"-topic" index announcements
//	<p>ctl:share        channel: a replica's shared subscription members
//	                    changed; every replica reads the counts again
//	<p>ctl:sharequeue   channel: a group's list of handed-off messages
//	                    grew; replicas with members take from it
//	<p>ctl:node:<node>  channel takeover requests and acknowledgements
//	mqtt_channel        channel EMQX subscribe/unsubscribe events (for prefix "mqtt:")
//
// Every multi-key step is a sequence of single-key commands, ordered so
// that a crash between them is harmless; Lua scripts touch one key each.
// The EMQX names therefore work unchanged in Redis Cluster.
//
// Live fan-out: a message is PUBLISHed to "<prefix>msg:<topic>"; each
// replica SUBSCRIBEs or PSUBSCRIBEs (pattern.PatternSet) what its core
// routes (Route), drops repeats, and hands every message to the core,
// which re-matches it against its trie (Receiver.Receive). A QoS ≥ 1
// message is also appended to a capped stream, by the same Lua script, so
// that a replica whose subscription connection dropped replays what it
// missed, and an offline persistent session finds its messages on
// reconnect by reading the streams from its cursor.
//
// Lock order. The core's locks come first (see package broker): a
// redisClient's Gate, Leave, Subscribing and Unsubscribing (its
// broker.SessionGate) and the checkpoint's due and mark run under a
// client's delivery lock and take mu. The bridge never calls into
// the core while it holds one of its own locks, but readMu, and none is
// held across a Redis round trip unless it says so:
//
//	readMu          outermost: a reader holds it while it hands one message
//	                to the core (core locks, then mu) or replays a stream
//	                (Redis round trips); taken under no other lock
//	checkpointMu    held by a checkpoint across the core's locks (it takes
//	                the cursors under them, then mu) and its Redis write;
//	                Save takes it under no lock, before storing a session
//	psMu            held while a PatternSet change is computed and its
//	                SUBSCRIBE/UNSUBSCRIBE commands are written
//	bus.mu          Redis Cluster: the shards' needs and subscriptions;
//	                takes nothing else
//	mu              conns, detaching, lastSeen and every redisClient; the
//	                reader raises lastSeen under it once the core has
//	                handed a message to every local client
//
// waitMu (barrier, pong and takeover-ack waiters) is a leaf: nothing else
// is taken while it is held.
type Redis struct {
	rdb        redis.UniversalClient
	prefix     string
	msgPrefix  string
	node       string
	ttl        time.Duration
	queue      broker.OfflineQueue // the core's (Bind): MaxQueued and MessageExpiry
	sessionTTL time.Duration
	// streamArgs are the leading arguments of every publishScript call:
	// the count cap and MessageExpiry in ms.
	streamArgs [2]int64
	// streamBudget is StreamMaxBytes (0: none).
	streamBudget int64
	trimReq      chan struct{} // cap 1: asks the trimmer to measure the streams
	log          *slog.Logger
	// batch sends the connect path's round trips of concurrent connects
	// in shared pipelines (redis_batch.go).
	batch *cmdBatcher

	minReplicas int                                         // RedisOptions.MinReplicasAcked
	willAuth    func(clientID, username, topic string) bool // RedisOptions.WillAuth
	pubLatency  interface{ Observe(float64) }               // RedisOptions.PublishLatency; nil: off

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// pub is the one publisher of one Redis or Sentinel; shardPubs are
	// Redis Cluster's, one per stream shard (redis_publish.go).
	pub       *publisher
	shardPubs [streamShards]*publisher
	// ackOrder keeps each client's answers in order across shardPubs.
	ackOrder *ackOrder
	// clusterEpoch is, in Redis Cluster, the epoch the watcher last read;
	// epochReads asks it to read again (epochLoop).
	clusterEpoch atomic.Pointer[string]
	epochReads   chan struct{}
	// dials counts the connections the Redis client started to dial
	// (epochWatch).
	dials atomic.Uint64
	// appended counts the envelope bytes appended to the streams since the
	// trimmer was last asked to measure them.
	appended atomic.Int64

	ps       *redis.PubSub
	psMu     sync.Mutex // orders PatternSet changes and their SUBSCRIBE commands
	patterns *pattern.PatternSet
	waitMu   sync.Mutex
	expected map[string]int           // subscribe confirmations we asked for
	pongs    map[string]chan struct{} // PING barriers in flight
	acks     map[string]chan struct{} // takeover acknowledgements awaited

	// core is the local broker core every message is handed to (Bind).
	core broker.Receiver
	// retainedNames is the retained index read at start-up, handed to the
	// core's mirror by Bind.
	retainedNames []string

	// checkpointMu is held by a checkpoint from the first cursor it takes
	// to the last one it writes, and waited for by Save before it stores a
	// session: a cursor taken while the connection was live must never
	// land in Redis after the one stored when it left (redis_checkpoint.go).
	checkpointMu sync.Mutex

	mu sync.Mutex // guards conns, detaching, lastSeen and each redisClient
	// conns holds what the bridge keeps for each connection of this node,
	// from Claim until Leave: its connection id, its cursor rules and the
	// Subscriber a takeover ends. The core owns the registry and the
	// fan-out; this is the Redis side of each of its entries.
	conns map[string]*redisClient
	// detaching holds, per client id, a connection that has left (Leave)
	// and whose session Save is still storing: a takeover or a new Claim
	// waits for it (its done channel) so it never reads a session being
	// written.
	detaching map[string]*redisClient
	lastSeen  [streamShards]streamID
	seenGen   uint64 // counts changes of lastSeen
	// oldMsg is the message whose age old holds (see oldLocked); under mu.
	oldMsg *Message
	old    bool

	// readMu is held by a reader while it handles one event: the single
	// subscription's reader, or, in Redis Cluster, the control channels'
	// reader and each shard's (redis_shardbus.go), so that one message at
	// a time is deduplicated, handed to the core and moves lastSeen.
	readMu sync.Mutex
	recent recentIDs // under readMu
	// bus is the sharded bus of Redis Cluster mode; nil for one Redis or
	// Sentinel, where messages travel on "<prefix>msg:<topic>".
	bus       *shardBus
	busPrefix string
	bound     chan struct{} // closed by Bind

	closeOnce sync.Once
	closeErr  error

	stats redisCounters

	// shares is the Redis side of the shared subscription groups
	// (redis_share.go).
	shares *redisShares

	// Liveness (redis_liveness.go).
	token         string        // this run's value in the liveness key
	beatNow       chan struct{} // asks the node loop for a heartbeat now
	lastBeat      atomic.Int64  // unix nanoseconds of the last refresh of the key
	needReconcile atomic.Bool   // live connections must be registered again
	// dataLost is set when the epoch changed (Redis restarted empty, or
	// failed over losing writes): the next reconcile takes back the ids
	// of live connections that another user claimed meanwhile.
	dataLost atomic.Bool
	// regEpoch is the Redis epoch (initEpoch) this node's connections were
	// last registered under: a liveness key found gone under another epoch
	// went with Redis's data, not with a pause of this node.
	regEpoch atomic.Pointer[string]
	conflict atomic.Pointer[error] // set while another replica holds this node id
}

// redisClient is what the Redis bridge keeps for one connection of this
// node, from Claim to Leave: the Redis side of one of the core's registry
// entries. Its fields are guarded by Redis.mu.
type redisClient struct {
	r     *Redis // the bridge, whose mu guards what follows
	id    string
	owner string // the username that created the session
	// since holds when this connection subscribed each filter it added
	// itself; filters restored with a stored session have none, and old
	// messages reach them only if published after storedAt, when the
	// session was stored (see eligibleGrant). Old
	// messages (a blip's replay, the window re-published after Redis
	// restarted) reach a filter only if it existed when they were
	// published [MQTT-4.5.0-1] (see eligibleGrant).
	since map[string]time.Time
	// storedAt is when the session this connection resumed was stored
	// (its stored_at); zero for a new session.
	storedAt time.Time
	sub      Subscriber // the connection, ended by a takeover
	addr     string     // the client's address, for the client record
	conn     string     // this connection's id in the client record
	// claimedMS is when this connection claimed its client id, unix ms by
	// this replica's clock (the record's claimed_ms).
	claimedMS int64
	// clean is set for a session that ends with its connection (not
	// Lifetime.Persistent), cleanStart for one that discarded the stored
	// session (Lifetime.CleanStart): 3.1.1 sets both or neither, 5.0 any
	// of the four. expiry is the persistent session's own interval
	// (Lifetime.Expiry; 0: SessionExpiry).
	clean      bool
	cleanStart bool
	expiry     time.Duration
	// subs mirrors the core's subscriptions of the client (Claim's stored
	// ones, then its SessionGate's Subscribing and Unsubscribing), for the replay
	// and for eligibleGrant.
	subs map[string]byte
	// opts mirrors the options of the subscriptions that have any, for
	// the stored record (see encodeSubscription).
	opts map[string]SubOptions
	will *Message // published if the connection ends without DISCONNECT

	// cursor is the stored cursor Claim found (hasCursor), where Resume
	// replays from. Like left, a pointer: the 256 bytes of each array
	// are needed by few connections, or only at their end, and a
	// replica holds one redisClient per connection.
	cursor    *[streamShards]streamID
	hasCursor bool
	// attached is closed once Resume or Abandon has run: a takeover
	// asked for a connection still attaching waits for it. resumed tells
	// which.
	attached chan struct{}
	resumed  bool
	// superseded is set once another node has taken the client id over
	// (its takeover request reached this node): Gate passes nothing more,
	// and cut, the cursor at that moment, is the one Leave stores (a
	// pointer, as cursor and left: few connections are ever superseded).
	superseded bool
	cut        *[streamShards]streamID
	// left is the cursor Leave took; done is closed once Save stored it.
	left *[streamShards]streamID
	done chan struct{}

	// While Resume replays a persistent session's streams, live messages
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
	// lags on a shard it had no subscription on. nil: none (a clean
	// session, or a new one before its first floor): made when first
	// raised, so that an idle connection does not carry 256 bytes of it.
	floor *[streamShards]streamID
	// gated is, per shard, the last stream id Gate decided for this
	// connection. lastSeen moves only after a message's fan-out, so a
	// cursor taken while one is under way covers it through gated if the
	// gate saw it for this client, and leaves it to the replay if not.
	// nil until the gate first decides a message with a stream id for it.
	gated *[streamShards]streamID
}

// cursorLocked is where a replay of c's session may start: the highest of
// this replica's position (lastSeen, past every message whose fan-out
// ended), the last id the gate decided for c (gated), c's floor and where
// its replay ended. Everything up to it reached c, is in the state stored
// with it, or was never c's; everything after it is read again from the
// streams. Leave takes it. r.mu is held.
func (r *Redis) cursorLocked(c *redisClient) [streamShards]streamID {
	cur := r.lastSeen
	if c.gated != nil {
		raise(&cur, c.gated)
	}
	if c.floor != nil {
		raise(&cur, c.floor)
	}
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
	published, publishErrors, qos0Dropped   atomic.Int64
	received, delivered, deduplicated       atomic.Int64
	replayed, replays, decodeErrors         atomic.Int64
	willsSent, willsDelayed, willsCancelled atomic.Int64
	willsRefused                            atomic.Int64
	queueTrimmed, replayTrimmed             atomic.Int64
	streamTrims, deadNodeChecks             atomic.Int64
	takeovers, republished                  atomic.Int64
	claimConflicts, notReplicated           atomic.Int64
	shareClaimed, shareLost                 atomic.Int64
	shareClaimedLate                        atomic.Int64
	shareHandedOff, shareTakenOver          atomic.Int64
	shareOwedMoved, shareOwedStale          atomic.Int64
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
		patterns:   pattern.NewPatternSet(o.Prefix+"msg:", o.MaxPatterns),
		expected:   make(map[string]int),
		pongs:      make(map[string]chan struct{}),
		acks:       make(map[string]chan struct{}),
		conns:      make(map[string]*redisClient),
		detaching:  make(map[string]*redisClient),
		recent:     newRecentIDs(1<<16, 1<<20),
		bound:      make(chan struct{}),
		token:      randomToken(),
		beatNow:    make(chan struct{}, 1),
		shares:     newRedisShares(),
	}
	if cc, ok := o.Client.(*redis.ClusterClient); ok {
		watchClusterTopology(ctx, cc, &r.dials)
		if err := checkShardedPubSub(ctx, cc); err != nil {
			return nil, fmt.Errorf("new redis bridge: %w", err)
		}
		r.bus = newShardBus(cc, o.Prefix)
		r.busPrefix = o.Prefix + "bus:"
		if err := r.checkShardSlots(); err != nil {
			return nil, fmt.Errorf("new redis bridge: %w", err)
		}
	}
	r.newPublishers()
	r.minReplicas = o.MinReplicasAcked
	r.willAuth = o.WillAuth
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
	watchDials(r.rdb, &r.dials)
	epoch, err := r.initEpoch(ctx)
	if err == nil {
		r.regEpoch.Store(&epoch)
		err = r.initStreams(ctx)
	}
	if err == nil {
		r.retainedNames, err = r.readRetainedIndex(ctx)
	}
	if err == nil {
		err = r.joinCluster(ctx)
	}
	if err != nil {
		r.cancel()
		_ = r.ps.Close()
		return nil, fmt.Errorf("new redis bridge: %w", err)
	}
	r.startPublishers(epoch)
	r.batch = newCmdBatcher(r.ctx, r.rdb, r.wg.Add, r.wg.Done)
	r.wg.Add(4)
	go r.shareLoop()
	go r.trimLoop()
	go r.nodeLoop()
	go r.dueWillsLoop()
	if err := r.reapPreviousRun(ctx); err != nil {
		_ = r.Close()
		return nil, fmt.Errorf("new redis bridge: %w", err)
	}
	return r, nil
}

// subscribeControl subscribes the control channels and reads their
// confirmations itself, before the reader starts.
func (r *Redis) subscribeControl(ctx context.Context) error {
	ctl := []string{r.retainCtlChannel(), r.nodeCtlChannel(r.node), r.shareCtlChannel(), r.shareQueueChannel()}
	r.ps = r.rdb.Subscribe(ctx) // dials with its first command
	if r.bus != nil {
		ctl = ctl[1:] // on sharded pub/sub (subscribeRetainAnnouncements)
		if err := r.subscribeRetainAnnouncements(ctx); err != nil {
			return err
		}
	}
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

// Bind implements broker.Cluster: the core's mirror of the retained topic
// names gets the index read at start-up, and the reader, which hands every
// message to the core, and the checkpoint loop start. Announcements made
// since the index was read wait in the subscription for the reader.
func (r *Redis) Bind(core broker.Receiver) {
	r.core = core
	r.queue = core.Queue()
	core.ReplaceRetained(r.retainedNames)
	r.retainedNames = nil
	close(r.bound)
	r.wg.Add(2)
	go r.readLoop()
	go r.checkpointLoop()
}

// NewRedisBroker returns the local broker core of a replica with the Redis
// bridge as both its Store and its Cluster.
func NewRedisBroker(ctx context.Context, o RedisOptions) (*broker.Broker, *Redis, error) {
	r, err := NewRedis(ctx, o)
	if err != nil {
		return nil, nil, err
	}
	b := broker.New(r, r, broker.Options{MaxQueued: o.MaxQueued, MaxQueuedBytes: o.MaxQueuedBytes, MessageExpiry: o.MessageExpiry})
	return b, r, nil
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
		"offline_queue_trimmed":           s.queueTrimmed.Load(),
		"replay_trimmed":                  s.replayTrimmed.Load(),
		"stream_byte_trims":               s.streamTrims.Load(),
		"dead_node_checks":                s.deadNodeChecks.Load(),
		"wills_published":                 s.willsSent.Load(),
		"wills_delayed":                   s.willsDelayed.Load(),
		"wills_cancelled":                 s.willsCancelled.Load(),
		"wills_refused":                   s.willsRefused.Load(),
		"takeovers":                       s.takeovers.Load(),
		"claim_conflicts":                 s.claimConflicts.Load(),
		"republished_after_redis_restart": s.republished.Load(),
		"publish_not_replicated":          s.notReplicated.Load(),
		"shared_claimed":                  s.shareClaimed.Load(),
		"shared_not_claimed":              s.shareLost.Load(),
		"shared_claimed_late":             s.shareClaimedLate.Load(),
		"shared_remote_members":           r.shares.remoteMembers(),
		"shared_handed_off":               s.shareHandedOff.Load(),
		"shared_taken_over":               s.shareTakenOver.Load(),
		"shared_owed_moved":               s.shareOwedMoved.Load(),
		"shared_owed_not_forgotten":       s.shareOwedStale.Load(),
	}
}

// Close stops the bridge's goroutines and its subscription. Messages
// already accepted by Publish are in Redis; clients still attached are left
// to the other replicas, which publish their wills once this node's
// liveness key expires. The core closes it twice, as its Cluster and as
// its Store: the second call returns the first's result.
func (r *Redis) Close() error {
	r.closeOnce.Do(func() { r.closeErr = r.close() })
	return r.closeErr
}

func (r *Redis) close() error {
	r.cancel()
	err := r.ps.Close()
	r.wg.Wait()
	r.mu.Lock()
	idle := len(r.conns) == 0
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
func (r *Redis) retainCtlChannel() string      { return r.prefix + "ctl:retain" }
func (r *Redis) shareCtlChannel() string       { return r.prefix + "ctl:share" }
func (r *Redis) nodeCtlChannel(n string) string {
	return r.prefix + "ctl:node:" + n
}

// streamKey is shard's stream: "<prefix>stream:<shard>", or in Redis Cluster
// "<prefix>stream:{<tag>}", in the slot of the shard's channel.
func (r *Redis) streamKey(shard int) string {
	if r.bus != nil {
		return r.bus.streams[shard]
	}
	return r.prefix + "stream:" + strconv.Itoa(shard)
}

// eventChannel is EMQX's "mqtt_channel" for the default prefix.
func (r *Redis) eventChannel() string { return strings.TrimSuffix(r.prefix, ":") + "_channel" }

// StreamShard is the stream shard a topic's QoS ≥ 1 messages are
// appended to and, in Redis Cluster, the shard channel its messages
// travel on. One publisher's messages on topics of one shard reach every
// replica in the order they were accepted; on topics of different shards
// they may not in Redis Cluster, where each shard has its own master,
// publisher goroutine and subscription (MQTT orders messages per topic
// only [MQTT-4.6.0-5]). Tests that fence a publisher's messages with one
// of their own use it to put the fence on the same shard.
func StreamShard(topic string) int { return shardOf(topic) }

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
