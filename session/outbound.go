package session

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/bridgemq/server/broker"
	"github.com/bridgemq/server/packets"
)

const (
	// maxWriteBatch bounds the bytes the writer encodes before writing them.
	maxWriteBatch = 64 << 10
	// keptWriteBuffer is the largest write buffer kept between bursts.
	keptWriteBuffer = 8 << 10
)

// Deliver implements broker.Subscriber. It never blocks: the message joins
// the bounded pending queue, or is dropped and counted when the queue is
// full. It refuses (returns false) once the connection has ended: the
// message then belongs to the state about to be handed to Detach.
//
// A message the client may not read is dropped here, so that it takes no
// room in the queue; the writer checks again (see fill), because stored,
// replayed and held-back messages reach the queue without passing here.
func (s *Session) Deliver(msg *broker.Message, qos byte) bool {
	if !s.mayRead(msg.Topic) {
		return true
	}
	return s.enqueue(outgoing{msg: msg, qos: qos})
}

// DeliverShared implements broker.Subscriber: Deliver for a message
// the shared subscription group handed this connection, which keeps the
// group with it so that, if the connection ends before the message is
// sent or acknowledged, it goes back to the group (share.go).
func (s *Session) DeliverShared(msg *broker.Message, qos byte, group string) bool {
	if !s.mayRead(msg.Topic) {
		s.sharedDone([]broker.SharedDelivery{{Group: group, Delivery: broker.Delivery{Message: msg, QoS: qos}}}, false)
		return true
	}
	s.mu.Lock()
	i, ok := s.shareIndex[group]
	if !ok {
		if s.shareIndex == nil {
			s.shareIndex = make(map[string]uint32)
		}
		i = uint32(len(s.shareNames))
		s.shareIndex[group] = i
		s.shareNames = append(s.shareNames, group)
	}
	s.mu.Unlock()
	return s.enqueue(outgoing{msg: msg, qos: qos, shared: true, subID: i})
}

// mayRead applies the read ACL in force now to a message about to be
// delivered, and counts a refusal.
func (s *Session) mayRead(topic string) bool {
	if !s.env.Auth.ChecksReads() || s.env.Auth.CanRead(s.clientID, s.username, topic) {
		return true
	}
	s.env.Stats.DeliveryDenied.Add(1)
	return false
}

// Idle implements broker.Subscriber: nothing delivered is waiting to be sent or
// acknowledged.
func (s *Session) Idle() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.pending) == 0 && len(s.held) == 0 && len(s.inflight) == 0 && !s.snapshotted
}

// enqueue queues a live message. While a page of retained messages is being
// read it waits in held, and one not newer than the retained message just
// sent on its topic is dropped (see retained.go).
func (s *Session) enqueue(o outgoing) bool {
	s.mu.Lock()
	if s.snapshotted || s.halted {
		// The connection has ended: nothing more will be written to it, so
		// the message is the stored session's (the bridge keeps it for
		// Detach), where the offline queue's rule applies (the oldest make
		// room), not the live queue's (the newest are dropped).
		s.mu.Unlock()
		return false
	}
	if s.retainedMarks != nil && s.staleLocked(o.msg) {
		s.dropLocked(o)
		s.env.Stats.DroppedStale.Add(1)
		return true
	}
	if len(s.pending)+len(s.held) >= s.env.Config.MaxQueued || s.bytesFullLocked(o.msg) {
		s.dropLocked(o)
		if o.qos == 0 {
			s.env.Stats.DroppedQoS0.Add(1)
		} else {
			s.env.Stats.DroppedQueueFull.Add(1)
		}
		return true
	}
	s.queuedBytes += queuedSize(o.msg)
	s.peakQueued = max(s.peakQueued, s.queuedBytes)
	if s.fetching {
		s.held = append(s.held, o)
		s.mu.Unlock()
		return true
	}
	s.pending = append(s.pending, o)
	start := s.startWriterLocked()
	s.mu.Unlock()
	if start {
		go s.writeLoop()
	}
	return true
}

// doneLocked appends o to done when a group handed it to this
// connection. s.mu is held.
func (s *Session) doneLocked(done []broker.SharedDelivery, o outgoing) []broker.SharedDelivery {
	if !o.shared {
		return done
	}
	return append(done, s.sharedDelivery(o))
}

// dropLocked unlocks s.mu and, for a message a group handed this
// connection, reports it done: dropped, it is owed to the group no more.
func (s *Session) dropLocked(o outgoing) {
	var done []broker.SharedDelivery
	if o.shared {
		done = []broker.SharedDelivery{s.sharedDelivery(o)}
	}
	s.mu.Unlock()
	s.sharedDone(done, false)
}

// queuedSize is what a message counts against -max-queued-bytes: its topic,
// payload and 5.0 properties (broker.Message.Size), which is what the queue
// keeps alive.
func queuedSize(m *broker.Message) int { return m.Size() }

// bytesFullLocked reports whether m would take the queue past
// MaxQueuedBytes. A queue that is empty takes any message, so that one
// larger than the bound is still delivered. s.mu is held.
func (s *Session) bytesFullLocked(m *broker.Message) bool {
	limit := s.env.Config.MaxQueuedBytes
	return limit > 0 && s.queuedBytes > 0 && s.queuedBytes+queuedSize(m) > limit
}

// sendAck queues an acknowledgement for the writer.
func (s *Session) sendAck(p packets.Packet) {
	s.mu.Lock()
	s.ctrl = s.appendAck(s.ctrl, p)
	start := s.startWriterLocked()
	s.mu.Unlock()
	if start {
		go s.writeLoop()
	}
}

// appendAck encodes p in the connection's protocol version (see encode).
// An acknowledgement too large for a 5.0 client's Maximum Packet Size (a
// SUBACK for hundreds of filters to a client that takes 100 bytes) is not
// sent [MQTT-3.1.2-24]; the client would wait for it forever, so the
// connection ends, with DISCONNECT 0x95 where that fits. s.mu may be held.
func (s *Session) appendAck(dst []byte, p packets.Packet) []byte {
	out, err := s.encode(dst, p)
	if errors.Is(err, packets.ErrPacketTooLarge) {
		go s.stop(err)
		return dst
	}
	if err != nil {
		// Only a bug can make an ack unencodable.
		panic(fmt.Sprintf("encode %T: %v", p, err))
	}
	return out
}

// signal makes sure a writer will look at the queues: it wakes the running
// writer, or starts one when there is something to write.
func (s *Session) signal() {
	s.mu.Lock()
	start := s.startWriterLocked()
	s.mu.Unlock()
	if start {
		go s.writeLoop()
	}
}

// startWriterLocked wakes the running writer, or reports whether the caller
// must start a writer goroutine (and marks one as running). A writer lingers
// for writerIdle after its last write and then exits, so an idle
// connection costs one goroutine, not two. s.mu is held.
func (s *Session) startWriterLocked() bool {
	if s.writing {
		select {
		case s.wake <- struct{}{}:
		default:
		}
		return false
	}
	if !s.started || s.halted || (len(s.ctrl) == 0 && len(s.pending) == 0) {
		return false
	}
	if s.wake == nil {
		// Most connections of a server are idle: they pay for the
		// channel only once something is written to them.
		s.wake = make(chan struct{}, 1)
	}
	s.writing = true
	s.writers.Add(1)
	return true
}

// writerIdle is how long a writer waits for more work before it exits.
const writerIdle = 2 * time.Second

// writeLoop is the only writer of the socket while it runs. It batches
// acknowledgements and messages into one write.
func (s *Session) writeLoop() {
	defer s.writers.Done()
	s.mu.Lock()
	buf := s.wbuf
	s.wbuf = nil
	s.mu.Unlock()
	idle := time.NewTimer(writerIdle)
	defer idle.Stop()
	// deadline is the write deadline this writer last set. Setting one
	// costs a timer update under a runtime lock, once per write (one per
	// PUBACK with synchronous publishers): it is renewed only when less
	// than half of WriteTimeout is left, so a write that blocks fails
	// after between half of WriteTimeout and all of it.
	var deadline time.Time
	var done, clearing []broker.SharedDelivery
	for {
		buf, done, clearing = s.fillShared(buf[:0], false, done[:0], clearing[:0])
		if len(buf) == 0 && len(clearing) == 0 {
			s.sharedDone(done, false)
			idle.Reset(writerIdle)
			select {
			case <-s.wake:
				continue
			case <-s.closed:
				return
			case <-idle.C:
			}
			buf, done, clearing = s.fillShared(buf[:0], true, done[:0], clearing[:0])
			if len(buf) == 0 && len(clearing) == 0 {
				s.sharedDone(done, false)
				return
			}
		}
		s.sharedDone(done, false)
		clear(done)
		if len(buf) > 0 && !s.write(buf, &deadline) {
			return
		}
		if len(clearing) > 0 {
			// A group's QoS 2 message stays with this member once sent
			// [MQTT-4.8.2-5]: the cluster forgets it was owed first, so
			// that no other node gives it to another member should this
			// one die. Until then it waits in the queue, where it goes
			// back to the group if the connection ends.
			s.sharedDone(clearing, true)
			s.markCleared(len(clearing))
			clear(clearing)
		}
	}
}

// write writes buf to the socket under the write turn, renewing the
// write deadline when less than half of WriteTimeout is left. It reports
// false when the connection is closing or the write failed.
func (s *Session) write(buf []byte, deadline *time.Time) bool {
	select {
	case s.wturn <- struct{}{}:
	case <-s.closed:
		return false
	}
	if now := time.Now(); deadline.Sub(now) < s.env.Config.WriteTimeout/2 {
		*deadline = now.Add(s.env.Config.WriteTimeout)
		_ = s.conn.SetWriteDeadline(*deadline)
	}
	_, err := s.conn.Write(buf)
	<-s.wturn
	if err != nil {
		s.stop(fmt.Errorf("write: %w", err))
		return false
	}
	return true
}

// fill encodes what is ready to send: acknowledgements first, then pending
// messages while the inflight window has room. Messages leave in the order
// they arrived [MQTT-4.6.0-6].
//
// Every message is handed to the socket here, whichever way it reached the
// queue (live, retained, restored from a stored session, replayed from the
// streams), so the read ACL is applied here, with the rules in force at the
// moment of sending: a message on a topic the client may not read is
// dropped.
//
// With exitIfEmpty, finding nothing to send ends the writer's turn under the
// same lock, so a later signal starts a new writer.
func (s *Session) fill(buf []byte, exitIfEmpty bool) []byte {
	buf, _, _ = s.fillShared(buf, exitIfEmpty, nil, nil)
	return buf
}

// fillShared is fill, and appends to done the messages groups handed
// this connection that it is done with: sent at QoS 0, or dropped (a
// QoS 1 message is done when acknowledged, onPuback). It stops before a
// group's QoS 2 message the cluster has not forgotten as owed, and
// appends it and the next ones the window has room for to clearing: the
// writer has the cluster forget them (waiting), then sends them.
func (s *Session) fillShared(buf []byte, exitIfEmpty bool, done, clearing []broker.SharedDelivery) ([]byte, []broker.SharedDelivery, []broker.SharedDelivery) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.shareDropped) > 0 {
		done = append(done, s.shareDropped...)
		s.shareDropped = nil
	}
	buf = append(buf, s.ctrl...)
	s.ctrl = s.ctrl[:0]
	checkReads := s.env.Auth.ChecksReads()
	var now time.Time // read once per batch, when a message has properties
	n := 0
	var delivered int64
	// Once halted the socket is closed: what is not sent stays queued,
	// where a group's messages go back to the group (a QoS 2 one put in
	// flight would stay with this member, never sent).
	for ; !s.halted && n < len(s.pending) && len(buf) < maxWriteBatch; n++ {
		o := s.pending[n]
		if checkReads && !s.mayRead(o.msg.Topic) {
			s.queuedBytes -= queuedSize(o.msg)
			done = s.doneLocked(done, o)
			continue
		}
		p := packets.Publish{QoS: o.qos, Retain: o.retain, Topic: o.msg.Topic, Payload: o.msg.Payload}
		if o.msg.Properties != nil {
			if now.IsZero() {
				now = time.Now()
			}
			expired, remaining := o.msg.Expired(now)
			if expired {
				// [MQTT-3.3.2-5] not delivered once its expiry has passed,
				// to 3.1.1 clients neither.
				s.queuedBytes -= queuedSize(o.msg)
				s.env.Stats.DroppedExpired.Add(1)
				done = s.doneLocked(done, o)
				continue
			}
			p.Properties = s.publishProperties(o.msg, remaining)
		}
		if s.subOpts != nil && !s.applyOptionsLocked(&o, &p) {
			s.queuedBytes -= queuedSize(o.msg) // [MQTT-3.8.3-3] No Local
			done = s.doneLocked(done, o)
			continue
		}
		if o.qos > 0 && len(s.inflight) >= s.maxInflight {
			break
		}
		if mustClear(o) {
			// Before shapePublishLocked, which may assign a Topic Alias.
			clearing = s.clearingLocked(clearing, n)
			break
		}
		if s.v5.shapesPublish() && !s.shapePublishLocked(&p) {
			// Too large for the client: dropped, as if sent [MQTT-3.1.2-25].
			s.queuedBytes -= queuedSize(o.msg)
			s.env.Stats.DroppedTooLarge.Add(1)
			done = s.doneLocked(done, o)
			continue
		}
		if o.qos > 0 {
			p.PacketID = s.allocateID()
			s.seq++
			s.allocMaps()
			s.inflight[p.PacketID] = inflight{outgoing: o, seq: s.seq}
		}
		s.queuedBytes -= queuedSize(o.msg)
		if o.qos == 0 {
			done = s.doneLocked(done, o)
		}
		buf = s.appendPublish(buf, &p)
		delivered++
	}
	if delivered > 0 {
		// Once per batch: an atomic add per message was a cost of its own
		// in a fan-out to many subscribers.
		s.env.Stats.Delivered.Add(delivered)
	}
	if n > 0 {
		if s.feeding {
			select {
			case s.feedRoom <- struct{}{}:
			default:
			}
		}
		clear(s.pending[:n])
		if n == len(s.pending) {
			s.pending = s.pending[:0] // keep the array: no allocation per message
		} else {
			s.pending = s.pending[n:]
		}
	}
	if len(buf) == 0 && len(clearing) == 0 && exitIfEmpty {
		// Nothing to send: the writer exits; keep a small buffer for the next.
		s.writing = false
		if cap(buf) <= keptWriteBuffer {
			s.wbuf = buf
		}
	}
	return buf, done, clearing
}

// appendPublish encodes an outgoing PUBLISH in the connection's protocol
// version, through the fast path of each.
func (s *Session) appendPublish(dst []byte, p *packets.Publish) []byte {
	if s.version == packets.Version5 {
		return packets.AppendPublish5(dst, p)
	}
	return packets.AppendPublish(dst, p)
}

// allocateID returns a packet id that is not 0 [MQTT-2.3.1-1] and not in
// use by an unacknowledged message [MQTT-2.3.1-2]. The caller holds s.mu and
// has checked the window has room, so a free id exists.
func (s *Session) allocateID() uint16 {
	for {
		s.nextID++
		if s.nextID == 0 {
			continue
		}
		if _, used := s.inflight[s.nextID]; !used {
			return s.nextID
		}
	}
}

// sortInflight orders a snapshot's inflight messages as they were first sent.
func sortInflight(list []broker.Inflight, byID map[uint16]inflight) {
	slices.SortFunc(list, func(a, b broker.Inflight) int {
		sa, sb := byID[a.PacketID].seq, byID[b.PacketID].seq
		switch {
		case sa < sb:
			return -1
		case sa > sb:
			return 1
		}
		return 0
	})
}
