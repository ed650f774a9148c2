package session

import (
	"context"
	"time"

	"github.com/bridgemq/server/bridge"
	"github.com/bridgemq/server/packets"
)

// Retained messages for a new subscription [MQTT-3.3.1-6].
//
// Every matching retained message is sent, however many there are, but not
// all at once: a feeder goroutine tops up the pending queue, at most half of
// -max-queued-messages of it, whenever the writer has taken messages out of
// it, so the client's reading and the inflight window pace the sending, the
// other half of the queue stays free for live messages, and a retained
// message is never dropped as "queue full". With a bridge.RetainedPager only
// the matching topic names are held at once; each page of messages is read
// when there is room for it, so it is the retained message of the moment.

const (
	// retainedPage bounds the retained messages read from the bridge at once.
	retainedPage = 256
	// retainedReadTimeout bounds one read of a page of retained messages.
	retainedReadTimeout = 10 * time.Second
)

// feed is the retained messages of one new subscription still to be sent.
type feed struct {
	filter string
	qos    byte
	// topics, from a bridge.RetainedPager, are read page by page; msgs,
	// from Bridge.Retained when the bridge cannot page, were read at once.
	topics    []string
	msgs      []*bridge.Message
	next      int
	cancelled bool // the subscription was removed or made again
}

func (f *feed) remaining() int {
	if f.msgs != nil {
		return len(f.msgs) - f.next
	}
	return len(f.topics) - f.next
}

// sendRetained starts sending the retained messages matching a new
// subscription, with RETAIN=1, after its SUBACK [MQTT-3.3.1-6] [MQTT-3.3.1-8].
// Making a subscription again sends them again [MQTT-3.8.4-3], and stops
// what was left of the previous feed.
func (s *Session) sendRetained(ctx context.Context, g packets.Subscription) {
	f := &feed{filter: g.Filter, qos: g.QoS}
	var err error
	if pager, ok := s.env.Bridge.(bridge.RetainedPager); ok {
		f.topics, err = pager.RetainedTopics(ctx, g.Filter)
	} else {
		f.msgs, err = s.env.Bridge.Retained(ctx, g.Filter)
	}
	if err != nil {
		s.logger().Error("retained lookup", "filter", g.Filter, "err", err)
		return
	}
	s.mu.Lock()
	s.cancelFeedLocked(g.Filter)
	if f.remaining() == 0 || s.halted || s.snapshotted {
		s.mu.Unlock()
		return
	}
	s.feeds = append(s.feeds, f)
	if s.feeding {
		s.mu.Unlock()
		return
	}
	s.feeding = true
	if s.feedRoom == nil {
		s.feedRoom = make(chan struct{}, 1)
	}
	fctx, cancel := context.WithCancel(ctx)
	s.feedCancel = cancel
	s.feeders.Add(1)
	s.mu.Unlock()
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
// share, so that each read of the bridge brings a page, not one message.
// s.mu is held.
func (s *Session) retainedRoomLocked() int {
	limit := max(1, s.env.Config.MaxQueued/2)
	room := limit - len(s.pending)
	if room < max(1, limit/2) {
		return 0
	}
	return room
}

// feedLoop sends the feeds' retained messages, one page at a time, while
// the connection lasts.
func (s *Session) feedLoop(ctx context.Context, cancel context.CancelFunc) {
	defer s.feeders.Done()
	defer cancel()
	pager, _ := s.env.Bridge.(bridge.RetainedPager)
	for {
		s.mu.Lock()
		f, room := s.nextFeedLocked()
		if f == nil {
			s.feeding = false
			s.feeds = nil
			s.mu.Unlock()
			return
		}
		n := min(room, f.remaining(), retainedPage)
		if f.msgs != nil {
			page := f.msgs[f.next : f.next+n]
			f.next += n
			s.queueRetainedLocked(f, page)
			s.unlockAndWrite()
			continue
		}
		names := f.topics[f.next : f.next+n]
		s.mu.Unlock()

		rctx, rcancel := context.WithTimeout(ctx, retainedReadTimeout)
		msgs, err := pager.RetainedMessages(rctx, names)
		rcancel()

		s.mu.Lock()
		f.next += n
		if err != nil {
			if ctx.Err() == nil {
				s.env.Log.Error("retained messages not sent", "client", s.clientID, "filter", f.filter,
					"unsent", f.remaining()+n, "err", err)
			}
			f.cancelled = true
		} else if !f.cancelled && !s.snapshotted {
			s.queueRetainedLocked(f, msgs)
		}
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

// queueRetainedLocked queues a page of f's retained messages. s.mu is held.
func (s *Session) queueRetainedLocked(f *feed, msgs []*bridge.Message) {
	for _, m := range msgs {
		if !s.mayRead(m.Topic) {
			continue // takes no room; the writer checks again
		}
		s.pending = append(s.pending, outgoing{msg: m, qos: min(m.QoS, f.qos), retain: true})
	}
}
