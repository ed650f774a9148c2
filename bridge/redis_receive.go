package bridge

import (
	"context"
	"errors"
	"net"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bridgemq/server/broker"
	"github.com/bridgemq/server/topics"
)

// healthInterval is how long the reader waits for a message before it
// pings the subscription connection, so that a dead connection is noticed.
const healthInterval = 15 * time.Second

// readLoop is the replica's one reader of its Redis subscription. It loops
// on Receive (not Channel, which drops messages when its buffer is full)
// and never blocks on a client.
//
// go-redis reconnects and re-subscribes by itself; whatever was published
// meanwhile never arrives. The loop notices a reconnect by a receive error
// or by a subscription confirmation it did not ask for, and then replays
// every shard's stream from the last id it saw, through the same dedupe and
// matching path, before handling the live messages that follow.
func (r *Redis) readLoop() {
	defer r.wg.Done()
	gap := false
	backoff := 10 * time.Millisecond
	for {
		v, err := r.ps.ReceiveTimeout(r.ctx, healthInterval)
		if err != nil {
			if r.ctx.Err() != nil {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				// Quiet, not broken: a PING proves the connection.
				_ = r.ps.Ping(r.ctx)
				continue
			}
			if !gap {
				r.log.Warn("redis subscription lost; will replay streams after reconnect", "err", err)
			}
			gap = true
			select {
			case <-time.After(backoff):
			case <-r.ctx.Done():
				return
			}
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 10 * time.Millisecond
		r.readMu.Lock()
		switch v := v.(type) {
		case *redis.Subscription:
			if (v.Kind == "subscribe" || v.Kind == "psubscribe") && !r.confirmed(v.Channel) {
				gap = true // a re-subscription go-redis made by itself
			}
			if gap {
				gap = !r.replayGap()
			}
		case *redis.Pong:
			if gap {
				gap = !r.replayGap()
			}
			r.pong(v.Payload)
		case *redis.Message:
			if gap {
				gap = !r.replayGap()
			}
			r.receive(v)
		}
		r.readMu.Unlock()
	}
}

// receive routes one pub/sub message.
func (r *Redis) receive(m *redis.Message) {
	switch {
	case strings.HasPrefix(m.Channel, r.msgPrefix), r.bus != nil && strings.HasPrefix(m.Channel, r.busPrefix):
		r.receiveEnvelope(m.Payload)
	case m.Channel == r.retainCtlChannel():
		r.applyRetainAnnouncement(m.Payload)
	case m.Channel == r.nodeCtlChannel(r.node):
		r.control(m.Payload)
	case m.Channel == r.shareCtlChannel():
		signal(r.shares.reread)
	case m.Channel == r.shareQueueChannel():
		r.shareQueued(m.Payload)
	}
}

// receiveEnvelope decodes an application message and delivers it unless it
// is a repeat.
func (r *Redis) receiveEnvelope(payload string) {
	m := new(Message)
	sidText, err := DecodeEnvelope(payload, m)
	if err != nil {
		r.stats.decodeErrors.Add(1)
		r.log.Error("dropping message that does not decode", "err", err)
		return
	}
	r.stats.received.Add(1)
	if sidText == "" {
		if r.recent.seen(m) {
			r.stats.deduplicated.Add(1)
			return
		}
		r.deliverLocal(m, -1, streamID{})
		return
	}
	sid, err := parseStreamID(sidText)
	if err != nil {
		r.stats.decodeErrors.Add(1)
		r.log.Error("dropping message with a bad stream id", "err", err)
		return
	}
	if r.recent.seen(m) {
		// A copy through another channel or pattern, or a message published
		// again after a Redis restart or failover (see redis_epoch.go). The
		// position still moves past it: the original was handled, and a
		// session's cursor taken from the position must not lie before the
		// copy, or the session's next replay hands the message out again.
		r.stats.deduplicated.Add(1)
		r.passRepeat(shardOf(m.Topic), sid)
		return
	}
	r.deliverLocal(m, shardOf(m.Topic), sid)
}

// deliverLocal hands m to the core, which matches it to the local clients
// (broker.Receiver.Receive), and then moves this replica's position on
// m's shard past it. shard is -1 for a message without a stream id (QoS
// 0). A message whose stream id is not after the last one seen on its
// shard was handled before (Redis sends one copy per matching channel and
// pattern, and a replay may overlap live delivery): it is dropped. It runs
// on the reader goroutine only, the one writer of lastSeen.
func (r *Redis) deliverLocal(m *Message, shard int, sid streamID) bool {
	if shard >= 0 {
		r.mu.Lock()
		stale := !sid.after(r.lastSeen[shard])
		r.mu.Unlock()
		if stale {
			r.stats.deduplicated.Add(1)
			return false
		}
	}
	r.core.Receive(m, positionOf(shard, sid))
	if shard >= 0 {
		// The replica's position moves only once every local client has
		// been handed m: a session's cursor (cursorLocked) covers what the
		// gate saw for it, never a message still on its way to it.
		r.mu.Lock()
		r.lastSeen[shard] = sid
		r.seenGen++
		r.mu.Unlock()
	}
	return true
}

// passRepeat moves this replica's position on shard past sid, the stream
// id of a repeat of a message already handled. Reader goroutine only, as
// deliverLocal.
func (r *Redis) passRepeat(shard int, sid streamID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if sid.after(r.lastSeen[shard]) {
		r.lastSeen[shard] = sid
		r.seenGen++
	}
}

// Gate implements broker.SessionGate with gateLocked: the connection's
// replay and cursor rules for one message that matches it.
func (c *redisClient) Gate(m *Message, pos broker.Position, granted byte) (byte, bool) {
	r := c.r
	r.mu.Lock()
	defer r.mu.Unlock()
	granted, ok := r.gateLocked(c, m, pos, granted)
	if ok {
		r.stats.delivered.Add(1)
	}
	return granted, ok
}

// gateLocked applies the replay and cursor rules of one local client to
// one message it matches, at granted, the highest QoS among its matching
// subscriptions: the part of a delivery that stays with Redis when the
// core does the matching (broker.SessionGate.Gate). It returns the
// grant to deliver at, or false when the message does not go to the client
// now: every matching filter is newer than an old message [MQTT-4.5.0-1];
// the session is replaying its streams (the message waits in c.pending,
// merged by stream id when the replay ends); or the replay already returned
// it. Whatever it decides, it records the message's stream id in c.gated:
// the message was delivered, held back for c's state, or is not c's, so c's
// cursor may pass it. r.mu is held.
func (r *Redis) gateLocked(c *redisClient, m *Message, pos broker.Position, granted byte) (byte, bool) {
	if c.superseded {
		// Taken over elsewhere: the session lives there now, and reads
		// this message again from the cursor cut when it was taken.
		return 0, false
	}
	var sid streamID
	if pos.Shard >= 0 {
		sid = streamID{pos.Seq[0], pos.Seq[1]}
		if c.gated == nil {
			c.gated = new([streamShards]streamID)
		}
		if sid.after(c.gated[pos.Shard]) {
			c.gated[pos.Shard] = sid
		}
	}
	if (c.since != nil || !c.storedAt.IsZero()) && r.oldLocked(m) {
		var ok bool
		if granted, ok = eligibleGrant(c, m); !ok {
			return 0, false
		}
	}
	if pos.Shard < 0 {
		return granted, true
	}
	if c.replaying {
		c.pending = append(c.pending, pendingDelivery{Delivery{Message: m, QoS: min(granted, m.QoS)}, pos.Shard, sid})
		return 0, false
	}
	if c.skip != nil && !sid.after(c.skip[pos.Shard]) {
		return 0, false // already returned by this session's replay
	}
	return granted, true
}

// oldLocked reports whether m is older than lateMessage, computed once per
// message for all its receivers. r.mu is held.
func (r *Redis) oldLocked(m *Message) bool {
	if r.oldMsg != m {
		r.oldMsg, r.old = m, !m.Time.IsZero() && time.Since(m.Time) > lateMessage
	}
	return r.old
}

// positionOf is the broker.Position of stream id sid on shard (-1: none).
func positionOf(shard int, sid streamID) broker.Position {
	if shard < 0 {
		return broker.NoPosition
	}
	return broker.Position{Shard: shard, Seq: [2]uint64{sid.ms, sid.seq}}
}

// lateMessage is how old a message must be, by the publishing replica's
// clock, for its receivers to check that the matching filter is older than
// it: far above transit times and the clock differences of replicas kept by
// NTP, so that no message published after a subscription is ever withheld.
const lateMessage = time.Second

// eligibleGrant is the highest QoS among c's filters matching m that
// existed when m was published, false when none did [MQTT-4.5.0-1]. A
// filter c subscribed itself counts from when it did, within lateMessage
// (the replicas' clocks may differ). A filter restored with a stored
// session counts from when that session was stored, exactly: an old
// message published before then reached the session already, is in its
// state, or was read again from the streams when it resumed (the skip
// drops live copies of those), so a copy published again after Redis
// restarted empty is the only one still arriving, and it is a repeat.
// Only old messages pay for this. r.mu is held.
func eligibleGrant(c *redisClient, m *Message) (byte, bool) {
	var best byte
	found := false
	limit := m.Time.Add(lateMessage)
	for f, q := range c.subs {
		if at, ok := c.since[f]; ok {
			if at.After(limit) {
				continue
			}
		} else if !c.storedAt.IsZero() && !m.Time.After(c.storedAt) {
			continue
		}
		if topics.MatchSubscription(f, m.Topic) {
			best, found = max(best, q), true
		}
	}
	return best, found
}

// replayGap reads every shard's stream after the last id seen and delivers
// what was missed; it reloads the retained index, whose announcements may
// have been lost too. It reports false when Redis could not be read, to be
// retried on the next event.
func (r *Redis) replayGap() bool {
	ctx, cancel := context.WithTimeout(r.ctx, 30*time.Second)
	defer cancel()
	r.stats.replays.Add(1)
	r.mu.Lock()
	seen := r.lastSeen
	r.mu.Unlock()
	r.countTrimmed(ctx, "", seen)
	for s := range streamShards {
		if r.bus != nil {
			break // each shard's subscription replays its own stream
		}
		if err := r.replayStream(ctx, s); err != nil {
			r.log.Warn("stream replay failed; retrying", "shard", s, "err", err)
			return false
		}
	}
	if err := r.loadRetainedIndex(ctx); err != nil {
		r.log.Warn("retained index reload failed; retrying", "err", err)
		return false
	}
	r.log.Info("redis subscription restored; streams replayed")
	// Redis may have come back without our state (a restart, a failover):
	// check the epoch and our liveness key now, not at the next heartbeat,
	// so that client records, wills and ownership are re-registered at once.
	r.askEpochCheck()
	r.askBeat()
	return true
}

// replayStream delivers every entry of shard's stream after the last id
// this replica saw. readMu is held.
func (r *Redis) replayStream(ctx context.Context, shard int) error {
	r.mu.Lock()
	from := r.lastSeen[shard]
	r.mu.Unlock()
	return r.readStream(ctx, shard, from, func(m *Message, sid streamID) {
		if r.recent.seen(m) {
			r.stats.deduplicated.Add(1) // e.g. republished after a Redis restart
			return
		}
		if r.deliverLocal(m, shard, sid) {
			r.stats.replayed.Add(1)
		}
	})
}
