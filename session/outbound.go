package session

import (
	"fmt"
	"slices"
	"time"

	"github.com/bridgemq/server/bridge"
	"github.com/bridgemq/server/packets"
)

// maxWriteBatch bounds the bytes the writer encodes before writing them.
const maxWriteBatch = 64 << 10

// Deliver implements bridge.Subscriber. It never blocks: the message joins
// the bounded pending queue, or is dropped and counted when the queue is
// full. It refuses once the state has been handed to Detach.
func (s *Session) Deliver(msg *bridge.Message, qos byte) bool {
	if s.env.Auth.ChecksReads() && !s.env.Auth.CanRead(s.clientID, s.username, msg.Topic) {
		return true
	}
	return s.enqueue(outgoing{msg: msg, qos: qos})
}

func (s *Session) enqueue(o outgoing) bool {
	s.mu.Lock()
	if s.snapshotted {
		s.mu.Unlock()
		return false
	}
	if len(s.pending) >= s.env.Config.MaxQueued {
		s.mu.Unlock()
		if o.qos == 0 {
			s.env.Stats.DroppedQoS0.Add(1)
		} else {
			s.env.Stats.DroppedQueueFull.Add(1)
		}
		return true
	}
	s.pending = append(s.pending, o)
	s.mu.Unlock()
	s.signal()
	return true
}

// sendAck queues an acknowledgement for the writer.
func (s *Session) sendAck(p packets.Packet) {
	s.mu.Lock()
	s.ctrl = appendAck(s.ctrl, p)
	s.mu.Unlock()
	s.signal()
}

func appendAck(dst []byte, p packets.Packet) []byte {
	out, err := packets.Append(dst, p)
	if err != nil {
		// Only a bug can make an ack unencodable.
		panic(fmt.Sprintf("encode %T: %v", p, err))
	}
	return out
}

// signal wakes the writer.
func (s *Session) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// writeLoop is the only writer of the socket once the session runs. It
// batches acknowledgements and messages into one write.
func (s *Session) writeLoop() {
	var buf []byte
	for {
		select {
		case <-s.wake:
		case <-s.closed:
			return
		}
		for {
			buf = s.fill(buf[:0])
			if len(buf) == 0 {
				break
			}
			_ = s.conn.SetWriteDeadline(time.Now().Add(s.env.Config.WriteTimeout))
			if _, err := s.conn.Write(buf); err != nil {
				s.stop(fmt.Errorf("write: %w", err))
				return
			}
			if cap(buf) > 4*maxWriteBatch {
				buf = nil // do not keep a burst's buffer forever
			}
		}
	}
}

// fill encodes what is ready to send: acknowledgements first, then pending
// messages while the inflight window has room. Messages leave in the order
// they arrived [MQTT-4.6.0-6].
func (s *Session) fill(buf []byte) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	buf = append(buf, s.ctrl...)
	s.ctrl = s.ctrl[:0]
	n := 0
	for ; n < len(s.pending) && len(buf) < maxWriteBatch; n++ {
		o := s.pending[n]
		p := packets.Publish{QoS: o.qos, Retain: o.retain, Topic: o.msg.Topic, Payload: o.msg.Payload}
		if o.qos > 0 {
			if len(s.inflight) >= s.env.Config.MaxInflight {
				break
			}
			p.PacketID = s.allocateID()
			s.seq++
			s.inflight[p.PacketID] = &inflight{outgoing: o, seq: s.seq}
		}
		buf = packets.AppendPublish(buf, &p)
		s.env.Stats.Delivered.Add(1)
	}
	if n > 0 {
		clear(s.pending[:n])
		s.pending = s.pending[n:]
		if len(s.pending) == 0 {
			s.pending = s.pending[:0:0]
		}
	}
	if n < len(s.pending) && len(buf) >= maxWriteBatch {
		s.signal()
	}
	return buf
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
func sortInflight(list []bridge.Inflight, byID map[uint16]*inflight) {
	slices.SortFunc(list, func(a, b bridge.Inflight) int {
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
