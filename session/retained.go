package session

import (
	"context"
	"encoding/binary"
	"time"

	"github.com/bridgemq/server/broker"
	"github.com/bridgemq/server/packets"
)

// Retained messages for a new subscription [MQTT-3.3.1-6].
//
// Every matching retained message is sent, however many there are, but not
// all at once: a feeder goroutine tops up the pending queue, at most half of
// -max-queued-messages of it, whenever the writer has taken messages out of
// it, so the client's reading and the inflight window pace the sending, the
// other half of the queue stays free for live messages, and a retained
// message is never dropped as "queue full". Only the matching topic names
// are held at once; each page of messages is read when there is room for
// it, so it is the retained message of the moment.
//
// Order with live messages on the same topic. A live message published just
// before a retained message can still be on its way (in Redis's pub/sub
// pipe, or in a bridge) when that retained message is queued; a live
// message published just after it can arrive while the page holding it is
// being read. So:
//
//   - while a page is read, live messages wait in held and are queued after
//     the page: a retained message goes before the live messages that
//     follow it. The first page of a feed holds them from the moment its
//     SUBACK is queued, so retained messages that fit in one page go before
//     anything published after the SUBACK, as in Mosquitto; when the queue
//     has no room for a page, held messages go on without waiting;
//   - for retainedGuard after a recently published retained message was
//     queued, a live message on its topic that is not newer than it (its
//     own live copy, or an older one) is dropped and counted: the client
//     never sees a topic go back in time after its retained message.
//
// "Newer" compares message ids when both were made by one process (the
// counter of newMessageID is the order its connections' publishes reached
// the bridge in, so for one publisher it is the order of Redis's writes),
// and the publish times otherwise: MQTT orders the messages of one
// publisher only [MQTT-4.6.0-5].

const (
	// retainedPage bounds the retained messages read from the bridge at once.
	retainedPage = 256
	// retainedPageBytes bounds the payload bytes of one page (a page always
	// holds at least one message), and the feeder reads no page while the
	// pending queue holds this many payload bytes: a subscription to many
	// large retained messages holds about two pages of them at once, not
	// half of -max-queued-messages.
	retainedPageBytes = 1 << 20
	// retainedReadTimeout bounds one read of a page of retained messages.
	retainedReadTimeout = 10 * time.Second
	// retainedGuard is how long a queued retained message keeps stopping
	// older live messages on its topic: far longer than a message spends
	// between a bridge accepting it and the subscribers' replicas.
	retainedGuard = 10 * time.Second
	// retainedFresh: a retained message published longer ago than this
	// has no older live message still on its way (allowing for clocks of
	// replicas that disagree by seconds), so it needs no guard.
	retainedFresh = time.Minute
	// maxRetainedMarks bounds the marks one connection keeps (about 100
	// bytes each). A feed of more retained messages published within
	// retainedFresh than this, within retainedGuard, marks the first ones
	// only: the others are not guarded against a late live copy. Without
	// it, a wildcard subscription over 50,000 freshly published retained
	// messages held a mark for each, ~10 MB per subscriber.
	maxRetainedMarks = 4096
)

// feed is the retained messages of one new subscription still to be sent.
type feed struct {
	filter string
	qos    byte
	subID  uint32 // the Subscription Identifier of its SUBSCRIBE, 0 for none
	// topics are the names of the matching topics, whose messages are
	// read page by page; next is the first not yet read.
	topics []string
	next   int
	// first is the first page, read before the SUBACK is sent so that
	// the retained messages of the moment of subscribing are the ones
	// sent (a later read could find one already replaced or cleared);
	// firstRead is how many of topics it covers.
	first     []*broker.Message
	firstRead int
	cancelled bool // the subscription was removed or made again
}

func (f *feed) remaining() int {
	return len(f.topics) - f.next
}

// retainedMark is a retained message queued recently, against which the
// live messages on its topic are compared.
type retainedMark struct {
	id     broker.ID
	time   time.Time // when it was published
	queued time.Time // when it was queued here
}

// retainedFeeds looks up the retained messages matching new subscriptions:
// the topic names, and the first page of messages.
func (s *Session) retainedFeeds(ctx context.Context, granted []packets.Subscription) []*feed {
	var feeds []*feed
	for _, g := range granted {
		f := &feed{filter: g.Filter, qos: g.QoS}
		var err error
		f.topics, err = s.env.Broker.RetainedTopics(ctx, g.Filter)
		if n := min(len(f.topics), retainedPage, max(1, s.env.Config.MaxQueued/2)); err == nil && n > 0 {
			var read int
			f.first, read, err = s.env.Broker.RetainedMessages(ctx, f.topics[:n], retainedPageBytes)
			f.firstRead = max(1, read)
		}
		if err != nil {
			s.logger().Error("retained lookup", "filter", g.Filter, "err", err)
			continue
		}
		feeds = append(feeds, f)
	}
	return feeds
}

// startFeedsLocked starts sending the retained messages of new
// subscriptions, with RETAIN=1 [MQTT-3.3.1-6] [MQTT-3.3.1-8]. Making a
// subscription again sends them again [MQTT-3.8.4-3] and stops what was
// left of its previous feed. Called with the SUBACK queued under the same
// hold of s.mu: when the feeder starts, live messages wait from the SUBACK
// on until its first page is queued, so that a client with few retained
// messages gets them before anything published after its SUBACK.
func (s *Session) startFeedsLocked(ctx context.Context, feeds []*feed) {
	if s.halted || s.snapshotted {
		return
	}
	added := false
	for _, f := range feeds {
		s.cancelFeedLocked(f.filter)
		if f.first != nil || f.firstRead > 0 {
			// [MQTT-3.3.1-6] the retained messages of the moment the
			// subscription is made, queued with its SUBACK.
			s.queueRetainedLocked(f, f.first)
			f.next += f.firstRead
			f.first, f.firstRead = nil, 0
		}
		if f.remaining() > 0 {
			s.feeds = append(s.feeds, f)
			added = true
		}
	}
	if !added || s.feeding {
		return
	}
	s.feeding = true
	s.fetching = true
	if s.feedRoom == nil {
		s.feedRoom = make(chan struct{}, 1)
	}
	fctx, cancel := context.WithCancel(ctx)
	s.feedCancel = cancel
	s.feeders.Add(1)
	go s.feedLoop(fctx, cancel)
}

// cancelFeedLocked stops sending what is left of filter's retained
// messages. s.mu is held.
func (s *Session) cancelFeedLocked(filter string) {
	for _, f := range s.feeds {
		if f.filter == filter {
			f.cancelled = true
		}
	}
}

// retainedRoomLocked returns how many retained messages may join the
// pending queue now: none until it has drained to half of the feeder's
// share, so that each read of the bridge brings a page, not one message,
// and none while the queue holds retainedPageBytes of payload. s.mu is
// held.
func (s *Session) retainedRoomLocked() int {
	limit := max(1, s.env.Config.MaxQueued/2)
	room := limit - len(s.pending) - len(s.held)
	if room < max(1, limit/2) {
		return 0
	}
	if s.queuedBytes >= retainedPageBytes {
		return 0 // a page's worth of bytes is already waiting
	}
	if b := s.env.Config.MaxQueuedBytes; b > 0 && s.queuedBytes > b/2 {
		return 0 // the feeder's share of the byte bound is taken too
	}
	return room
}

// feedLoop sends the feeds' retained messages, one page at a time, while
// the connection lasts.
func (s *Session) feedLoop(ctx context.Context, cancel context.CancelFunc) {
	defer s.feeders.Done()
	defer cancel()
	for {
		s.mu.Lock()
		f, room := s.nextFeedLocked()
		if f == nil {
			s.releaseHeldLocked()
			s.feeding = false
			if !s.halted {
				s.feeds = nil
			} // else what is left is owed to a persistent session (snapshot)
			s.unlockAndWrite()
			return
		}
		n := min(room, f.remaining(), retainedPage)
		names := f.topics[f.next : f.next+n]
		s.fetching = true
		s.mu.Unlock()

		rctx, rcancel := context.WithTimeout(ctx, retainedReadTimeout)
		msgs, read, err := s.env.Broker.RetainedMessages(rctx, names, retainedPageBytes)
		rcancel()

		s.mu.Lock()
		if err != nil && ctx.Err() != nil && !s.clean {
			// The connection is ending: the page is left to the stored
			// session (see storeLeftoverRetained).
			s.releaseHeldLocked()
			s.unlockAndWrite()
			return
		}
		if err != nil {
			if ctx.Err() == nil {
				s.env.Log.Error("retained messages not sent", "client", s.clientID, "filter", f.filter,
					"unsent", f.remaining(), "err", err)
			}
			f.cancelled = true
		} else {
			f.next += max(1, read)
			if !f.cancelled && !s.snapshotted {
				s.queueRetainedLocked(f, msgs)
			}
		}
		s.releaseHeldLocked()
		s.unlockAndWrite()
	}
}

// nextFeedLocked waits until the queue has room for retained messages and
// returns the feed to take them from, or nil when there is nothing left to
// send or the connection is ending. s.mu is held; it is released while
// waiting.
func (s *Session) nextFeedLocked() (*feed, int) {
	for {
		if s.halted || s.snapshotted {
			return nil, 0
		}
		for len(s.feeds) > 0 && (s.feeds[0].cancelled || s.feeds[0].remaining() == 0) {
			s.feeds[0] = nil
			s.feeds = s.feeds[1:]
		}
		if len(s.feeds) == 0 {
			return nil, 0
		}
		if room := s.retainedRoomLocked(); room > 0 {
			return s.feeds[0], room
		}
		// Live messages do not wait for room: it may take them to make it.
		s.releaseHeldLocked()
		if s.startWriterLocked() {
			go s.writeLoop()
		}
		s.mu.Unlock()
		select {
		case <-s.feedRoom:
		case <-s.closed:
		}
		s.mu.Lock()
	}
}

// unlockAndWrite releases s.mu and makes sure a writer sends what was
// queued.
func (s *Session) unlockAndWrite() {
	start := s.startWriterLocked()
	s.mu.Unlock()
	if start {
		go s.writeLoop()
	}
}

// queueRetainedLocked queues a page of f's retained messages and marks the
// recent ones against older live copies. s.mu is held.
func (s *Session) queueRetainedLocked(f *feed, msgs []*broker.Message) {
	now := time.Now()
	for _, m := range msgs {
		if !s.mayRead(m.Topic) {
			continue // takes no room; the writer checks again
		}
		s.pending = append(s.pending, outgoing{msg: m, qos: min(m.QoS, f.qos), retain: true, fed: true, subID: f.subID})
		s.queuedBytes += queuedSize(m)
		if m.Time.IsZero() || now.Sub(m.Time) > retainedFresh {
			continue
		}
		if s.retainedMarks == nil {
			s.retainedMarks = make(map[string]retainedMark)
			s.marksSweep = now.Add(retainedGuard)
		}
		if _, ok := s.retainedMarks[m.Topic]; !ok && len(s.retainedMarks) >= maxRetainedMarks {
			continue
		}
		s.retainedMarks[m.Topic] = retainedMark{id: m.ID, time: m.Time, queued: now}
	}
	s.sweepMarksLocked(now)
}

// sweepMarksLocked forgets, at most once per retainedGuard, the marks older
// than retainedGuard, so that they cost memory only while they guard.
// s.mu is held.
func (s *Session) sweepMarksLocked(now time.Time) {
	if s.retainedMarks == nil || !now.After(s.marksSweep) {
		return
	}
	for t, mk := range s.retainedMarks {
		if now.Sub(mk.queued) > retainedGuard {
			delete(s.retainedMarks, t)
		}
	}
	if len(s.retainedMarks) == 0 {
		s.retainedMarks = nil
	}
	s.marksSweep = now.Add(retainedGuard)
}

// releaseHeldLocked ends a page read: the live messages that arrived
// meanwhile join the queue after the page, except those older than a
// retained message just queued. s.mu is held.
func (s *Session) releaseHeldLocked() {
	s.fetching = false
	for _, o := range s.held {
		if s.retainedMarks != nil && s.staleLocked(o.msg) {
			s.env.Stats.DroppedStale.Add(1)
			s.queuedBytes -= queuedSize(o.msg)
			s.shareDropped = s.doneLocked(s.shareDropped, o)
			continue
		}
		s.pending = append(s.pending, o)
	}
	clear(s.held)
	s.held = s.held[:0]
}

// staleLocked reports whether live message m is not newer than a retained
// message on its topic queued within retainedGuard. s.mu is held.
func (s *Session) staleLocked(m *broker.Message) bool {
	now := time.Now()
	s.sweepMarksLocked(now)
	mk, ok := s.retainedMarks[m.Topic] // a nil map finds nothing
	if !ok || now.Sub(mk.queued) > retainedGuard {
		return false
	}
	if m.ID == mk.id {
		// The live copy of the retained message just sent: it matched a
		// subscription established before it was published, so it is
		// delivered too, with RETAIN=0 [MQTT-3.3.1-9]. Same value, so the
		// topic does not go back in time.
		return false
	}
	return !newerThan(m, mk.id, mk.time)
}

// newerThan reports whether m was published after the message with id and
// publish time t. Ids made by one process (newMessageID: a random prefix
// per process, then a counter) are ordered by their counter; otherwise the
// publish times decide, at the millisecond a stored retained message keeps,
// and a tie counts as newer: a message is dropped only when it is known to
// be older.
func newerThan(m *broker.Message, id broker.ID, t time.Time) bool {
	if m.ID == id {
		return false
	}
	if id != (broker.ID{}) && [8]byte(m.ID[:8]) == [8]byte(id[:8]) {
		return binary.BigEndian.Uint64(m.ID[8:]) > binary.BigEndian.Uint64(id[8:])
	}
	return m.Time.UnixMilli() >= t.UnixMilli()
}

// storeLeftoverRetained adds to a persistent session's stored state the
// retained messages its new subscriptions were owed and had not been sent
// when the connection ended: they are pending transmission [MQTT-3.1.2-5]
// and go out with RETAIN=1 on the session's return [MQTT-3.3.1-8]. Like
// any queued message, QoS 0 ones are not kept, and the queue's bound holds.
// The feeders have stopped.
func (s *Session) storeLeftoverRetained(ctx context.Context, state *broker.StoredSession) {
	s.mu.Lock()
	feeds := s.leftoverFeeds
	s.leftoverFeeds = nil
	s.mu.Unlock()
	room := s.env.Config.MaxQueued - len(state.Queued)
	for _, f := range feeds {
		if f.cancelled || f.qos == 0 || room <= 0 {
			continue
		}
		var msgs []*broker.Message
		names := f.topics[f.next:]
		names = names[:min(len(names), room)]
		for len(names) > 0 {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), retainedReadTimeout)
			page, read, err := s.env.Broker.RetainedMessages(rctx, names, retainedPageBytes)
			cancel()
			if err != nil {
				s.logger().Error("retained messages owed to the session not stored", "filter", f.filter, "unsent", len(names), "err", err)
				break
			}
			msgs = append(msgs, page...)
			names = names[max(1, read):]
		}
		for _, m := range msgs {
			qos := min(m.QoS, f.qos)
			if qos == 0 || room <= 0 || !s.mayRead(m.Topic) {
				continue
			}
			state.Queued = append(state.Queued, broker.Delivery{Message: m, QoS: qos, Retain: true})
			room--
		}
	}
}
