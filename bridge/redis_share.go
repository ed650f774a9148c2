package bridge

import (
	"context"
	"encoding/hex"
	"hash/fnv"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Shared Subscriptions across replicas (section 4.8.2). Every replica with
// members of a group routes the group's filter, so each of them receives
// each matching message; for each message and group exactly one of them
// delivers it, to one of its members (the core's round robin):
//
//   - The replicas agree on a preferred replica per message: the message
//     id's hash picks one of the group's members cluster-wide, and the
//     replica it is on is preferred. Each replica keeps its member count in
//     the hash <p>sharenodes:<group> (node → "count:unix ms", written on a
//     change and every shareRefresh, read back as often), so members on
//     different replicas share the load evenly.
//   - The preferred replica claims the message at once with SET NX
//     <p>shareclaim:<message id>:<group> (TTL shareClaimTTL); the others
//     try the same claim shareFallback later, so that a message is not
//     lost when the views of the replicas differ for a moment or the
//     preferred replica has just lost its members. Whoever sets the key
//     delivers; a QoS 0 message gets no fallback.
//   - Claims are made by one goroutine in pipelines, never on the reader:
//     Receive only queues them.

// Tuning of shared subscriptions.
const (
	// shareFallback is how long a replica that is not preferred for a QoS
	// ≥ 1 message waits before it claims the message itself.
	shareFallback = 50 * time.Millisecond
	// shareClaimTTL is how long a claim is kept: far longer than any
	// fallback, so that no replica can take a message twice.
	shareClaimTTL = 30 * time.Second
	// shareRefresh is how often a replica writes its member counts and
	// reads the others'.
	shareRefresh = time.Second
	// shareClaimTries bounds how often a claim Redis did not answer is
	// tried again.
	shareClaimTries = 10
)

// redisShares is the Redis side of this replica's shared subscription
// groups. Its lock is a leaf, taken under the core's locks (ShareMembers)
// and on the reader (ClaimShared).
type redisShares struct {
	mu    sync.Mutex
	local map[string]int // group → this replica's members
	// gone holds groups whose last local member left, to be removed from
	// Redis by the next refresh.
	gone map[string]struct{}
	// remote holds, per local group, the other replicas' member counts
	// read at the last refresh, sorted by node.
	remote map[string][]shareNode
	// due holds the claims to send now, in order; later those whose
	// fallback time has not come yet, in order (one delay for all).
	due, later []shareClaim
	// drain holds the groups whose list of handed-off messages this
	// replica looks at next (redis_sharehandoff.go).
	drain map[string]struct{}
	// done holds the fields to remove from this replica's hash of owed
	// messages (redis_shareowed.go), in order.
	done    []string
	wake    chan struct{} // cap 1: claims queued, or a list to look at
	refresh chan struct{} // cap 1: this replica's member counts changed
	reread  chan struct{} // cap 1: another replica's changed (ctl:share)
	// changed is set with refresh: the next refresh announces it on
	// ctl:share, so that the other replicas read the counts at once.
	changed bool
}

// shareNode is one replica's member count of a group.
type shareNode struct {
	node    string
	members int
}

// shareClaim is one message this replica may deliver for a group.
type shareClaim struct {
	group string
	msg   *Message
	take  func() bool
	at    time.Time // when it may be claimed
	tries int
	// owed is set once msg is recorded as owed by this replica's members
	// (redis_shareowed.go): with the claim, for a preferred one.
	owed bool
}

func newRedisShares() *redisShares {
	return &redisShares{
		local:   make(map[string]int),
		gone:    make(map[string]struct{}),
		remote:  make(map[string][]shareNode),
		drain:   make(map[string]struct{}),
		wake:    make(chan struct{}, 1),
		refresh: make(chan struct{}, 1),
		reread:  make(chan struct{}, 1),
	}
}

func (r *Redis) shareNodesKey(group string) string { return r.prefix + "sharenodes:" + group }
func (r *Redis) shareClaimKey(m *Message, group string) string {
	return r.prefix + "shareclaim:" + hex.EncodeToString(m.ID[:]) + ":" + group
}

// ShareMembers implements broker.Cluster: the count is written to Redis
// by the share loop at once, without waiting here.
func (r *Redis) ShareMembers(group string, members int) {
	s := r.shares
	s.mu.Lock()
	if members > 0 {
		s.local[group] = members
		delete(s.gone, group)
	} else {
		delete(s.local, group)
		delete(s.remote, group)
		s.gone[group] = struct{}{}
	}
	s.changed = true
	s.mu.Unlock()
	signal(s.refresh)
}

// remoteMembers is the number of members of this replica's groups that it
// knows of on other replicas (as last read by refreshShares).
func (s *redisShares) remoteMembers() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var n int64
	for _, view := range s.remote {
		for _, node := range view {
			n += int64(node.members)
		}
	}
	return n
}

// ClaimShared implements broker.Cluster: the preferred replica queues an
// immediate claim, the others a fallback one for QoS ≥ 1 messages. The
// share loop claims them and calls take for those it wins.
func (r *Redis) ClaimShared(group string, m *Message, take func() bool) {
	s := r.shares
	s.mu.Lock()
	preferred := r.preferredLocked(group, m)
	switch {
	case preferred:
		s.due = append(s.due, shareClaim{group: group, msg: m, take: take})
	case m.QoS > 0:
		s.later = append(s.later, shareClaim{group: group, msg: m, take: take, at: time.Now().Add(shareFallback)})
	}
	s.mu.Unlock()
	if preferred || m.QoS > 0 {
		signal(s.wake)
	}
}

// preferredLocked reports whether this replica is the preferred one for m
// in group: m's id hashed over the group's members cluster-wide (this
// replica's own count, the others' as last read) lands on one of this
// replica's. s.mu is held.
func (r *Redis) preferredLocked(group string, m *Message) bool {
	s := r.shares
	own := s.local[group]
	if own == 0 {
		return false
	}
	others := s.remote[group]
	total := own
	for _, n := range others {
		total += n.members
	}
	h := fnv.New64a()
	_, _ = h.Write(m.ID[:])
	pick := int(h.Sum64() % uint64(total))
	// Walk the replicas in node order, this one among them.
	mine := false
	for _, n := range others {
		if !mine && r.node < n.node {
			if pick < own {
				return true
			}
			pick -= own
			mine = true
		}
		if pick < n.members {
			return false
		}
		pick -= n.members
	}
	return !mine
}

// signal wakes a loop waiting on ch (cap 1) without blocking.
func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// shareLoop sends the queued claims in pipelines and hands the won
// messages to the core (take), in the order they were queued; and it
// keeps the member counts of this replica in Redis and reads the others'.
func (r *Redis) shareLoop() {
	defer r.wg.Done()
	s := r.shares
	tick := time.NewTicker(shareRefresh)
	defer tick.Stop()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		s.mu.Lock()
		wait := time.Hour
		if len(s.later) > 0 {
			wait = max(0, time.Until(s.later[0].at))
		}
		s.mu.Unlock()
		timer.Reset(wait)
		select {
		case <-r.ctx.Done():
			return
		case <-s.wake:
		case <-timer.C:
		case <-s.refresh:
			r.refreshShares()
		case <-s.reread:
			r.refreshShares()
		case <-tick.C:
			r.refreshShares()
			r.drainAllShares()
		}
		r.claimDue()
		// Before a drain can record a message again that a lost claim
		// recorded.
		r.flushDone()
		r.drainShares()
	}
}

// claimDue claims every queued claim whose time has come, in one
// pipeline, and delivers the won ones. A claim Redis did not answer is
// tried again after shareFallback, at most shareClaimTries times. A won
// message that no local member could take (the last one just left) is
// handed off to the group's list in Redis, for a replica with members
// to take (redis_sharehandoff.go). Its claim stays: giving the claim
// back for the others' fallback to take lost the message whenever the
// fallbacks had already tried, which those of every other replica do at
// once, 50 ms after the message, when it is the claim of a fallback that
// is given back.
//
// Every won QoS ≥ 1 message is recorded as owed by this replica's
// members before any member gets it (redis_shareowed.go): the preferred
// claims, which mostly win, in the claims' pipeline (a lost one is
// forgotten again); the others, which mostly lose, once won.
func (r *Redis) claimDue() {
	s := r.shares
	now := time.Now()
	s.mu.Lock()
	batch := s.due
	s.due = nil
	i := 0
	for i < len(s.later) && !s.later[i].at.After(now) {
		i++
	}
	batch = append(batch, s.later[:i]...)
	s.later = slices.Delete(s.later, 0, i)
	s.mu.Unlock()
	if len(batch) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(r.ctx, barrierTimeout)
	defer cancel()
	first := 0 // the preferred claims, first tried, lead the batch
	for first < len(batch) && batch[first].at.IsZero() {
		first++
	}
	owedKey := r.shareOwedKey(r.node)
	cmds := make([]*redis.BoolCmd, len(batch))
	var record *redis.IntCmd
	_, _ = r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for k, c := range batch {
			cmds[k] = p.SetNX(ctx, r.shareClaimKey(c.msg, c.group), r.node, shareClaimTTL)
		}
		if args := owedValues(batch[:first]); len(args) > 0 {
			record = p.HSet(ctx, owedKey, args...)
		}
		return nil
	})
	if record != nil && record.Err() == nil {
		for k := range batch[:first] {
			batch[k].owed = true
		}
	}
	won, retry, forget := r.settleClaims(batch, cmds)
	var late []shareClaim // won, not yet recorded
	for _, c := range won {
		if !c.owed {
			late = append(late, c)
		}
	}
	if args := owedValues(late); len(args) > 0 {
		if err := r.rdb.HSet(ctx, owedKey, args...).Err(); err != nil {
			r.log.Warn("shared subscription messages not recorded as owed here", "messages", len(args)/2, "err", err)
		}
	}
	handOff := make(map[string][]*Message)
	var groups []string // of handOff, in the order of their first message
	for _, c := range won {
		r.stats.shareClaimed.Add(1)
		if !c.at.IsZero() {
			// Won by a fallback (or a retried) claim: the preferred replica
			// lagged by shareFallback or more, or the replicas' views of
			// the members differed.
			r.stats.shareClaimedLate.Add(1)
		}
		if !c.take() {
			if handOff[c.group] == nil {
				groups = append(groups, c.group)
			}
			handOff[c.group] = append(handOff[c.group], c.msg)
		}
	}
	for _, g := range groups {
		if err := r.pushShared(ctx, g, handOff[g]); err != nil {
			r.stats.shareLost.Add(int64(len(handOff[g])))
			r.log.Warn("shared subscription messages won without a member lost", "group", g, "messages", len(handOff[g]), "err", err)
		}
	}
	if len(forget) > 0 {
		r.forgetOwed(forget)
	}
	if len(retry) > 0 {
		s.mu.Lock()
		// The retried go after the queued ones: their times are later.
		s.later = append(s.later, retry...)
		s.mu.Unlock()
	}
}

// settleClaims sorts batch by what Redis answered to each claim (cmds):
// won, in order; to retry (no answer, fewer than shareClaimTries times);
// and the fields to forget of those recorded as owed that will not be
// delivered here (lost, or not answered too often).
func (r *Redis) settleClaims(batch []shareClaim, cmds []*redis.BoolCmd) (won, retry []shareClaim, forget []string) {
	var lost int
	var lastErr error
	for k, c := range batch {
		ok, err := cmds[k].Result()
		switch {
		case err != nil:
			if c.tries++; c.tries < shareClaimTries {
				c.at = time.Now().Add(shareFallback)
				retry = append(retry, c)
				continue
			}
			r.stats.shareLost.Add(1)
			lost, lastErr = lost+1, err
		case ok:
			won = append(won, c)
			continue
		}
		if c.owed {
			forget = append(forget, owedField(c.msg, c.group))
		}
	}
	if lost > 0 {
		r.log.Warn("shared subscription messages not claimed after retries", "messages", lost, "err", lastErr)
	}
	return won, retry, forget
}

// refreshShares writes this replica's member count of each local group,
// removes it from groups it left, and reads the other replicas' counts:
// counts not refreshed for the liveness TTL (a replica that died) are
// left out, and removed once three times as old.
func (r *Redis) refreshShares() {
	s := r.shares
	s.mu.Lock()
	local := make(map[string]int, len(s.local))
	for g, n := range s.local {
		local[g] = n
	}
	gone := make([]string, 0, len(s.gone))
	for g := range s.gone {
		gone = append(gone, g)
	}
	clear(s.gone)
	announce := s.changed
	s.changed = false
	s.mu.Unlock()
	if len(local) == 0 && len(gone) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(r.ctx, barrierTimeout)
	defer cancel()
	now := time.Now()
	stamp := strconv.FormatInt(now.UnixMilli(), 10)
	reads := make(map[string]*redis.MapStringStringCmd, len(local))
	_, err := r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, g := range gone {
			p.HDel(ctx, r.shareNodesKey(g), r.node)
		}
		for g, n := range local {
			key := r.shareNodesKey(g)
			p.HSet(ctx, key, r.node, strconv.Itoa(n)+":"+stamp)
			p.PExpire(ctx, key, 3*r.ttl)
			reads[g] = p.HGetAll(ctx, key)
		}
		if announce {
			p.Publish(ctx, r.shareCtlChannel(), r.node)
		}
		return nil
	})
	if err != nil {
		r.log.Warn("shared subscription members not refreshed", "err", err)
		s.mu.Lock()
		for _, g := range gone {
			if _, back := s.local[g]; !back {
				s.gone[g] = struct{}{}
			}
		}
		s.changed = s.changed || announce
		s.mu.Unlock()
		return
	}
	var stale [][2]string
	views := make(map[string][]shareNode, len(reads))
	for g, cmd := range reads {
		var view []shareNode
		for node, v := range cmd.Val() {
			if node == r.node {
				continue
			}
			count, ms, ok := strings.Cut(v, ":")
			n, err1 := strconv.Atoi(count)
			at, err2 := strconv.ParseInt(ms, 10, 64)
			if !ok || err1 != nil || err2 != nil {
				continue
			}
			age := now.Sub(time.UnixMilli(at))
			if age > 3*r.ttl {
				stale = append(stale, [2]string{g, node})
			}
			if age > r.ttl || n <= 0 {
				continue
			}
			view = append(view, shareNode{node, n})
		}
		slices.SortFunc(view, func(a, b shareNode) int { return strings.Compare(a.node, b.node) })
		views[g] = view
	}
	s.mu.Lock()
	for g, v := range views {
		if _, ok := s.local[g]; ok {
			s.remote[g] = v
		}
	}
	s.mu.Unlock()
	if len(stale) > 0 {
		_, _ = r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, gn := range stale {
				p.HDel(ctx, r.shareNodesKey(gn[0]), gn[1])
			}
			return nil
		})
	}
}
