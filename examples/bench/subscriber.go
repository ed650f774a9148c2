package main

import (
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"github.com/bridgemq/server/internal/mqttconn"
	"github.com/bridgemq/server/internal/sequence"
	"github.com/bridgemq/server/packets"
)

// subscriber receives, checks and times the messages of one client. Its
// goroutine owns both directions of the connection: it reads, records, and
// queues acknowledgements that are flushed once no more input is buffered.
type subscriber struct {
	id    int
	c     *mqttconn.Conn
	run   uint16
	epoch time.Time

	latency   Histogram
	seq       *sequence.Tracker
	stale     uint64 // messages of another run (a persistent session's leftovers) or not stamped
	delivered *atomic.Uint64
	lastRecv  atomic.Int64 // nanoseconds since epoch of the last fresh message
}

// newSubscriber wraps a connected, subscribed client. delivered is the
// shared counter of fresh deliveries across all subscribers.
func newSubscriber(id int, c *mqttconn.Conn, cfg *config, run uint16, epoch time.Time, delivered *atomic.Uint64) *subscriber {
	perPub := cfg.Count
	if cfg.Duration > 0 {
		perPub = 1024
	}
	return &subscriber{id: id, c: c, run: run, epoch: epoch, seq: sequence.NewTracker(cfg.Publishers, perPub), delivered: delivered}
}

// receive runs until the connection closes; it returns nil on a close the
// tool made itself.
func (s *subscriber) receive() error {
	for {
		pk, err := s.c.ReadPacket()
		if err != nil {
			if mqttconn.Stopped(err) {
				return nil
			}
			return fmt.Errorf("subscriber %d: %w", s.id, err)
		}
		switch m := pk.(type) {
		case *packets.Publish:
			s.record(m)
			switch m.QoS {
			case 1:
				err = s.c.QueueAck(packets.TypePuback, m.PacketID) // [MQTT-4.3.2-2]
			case 2:
				err = s.c.QueueAck(packets.TypePubrec, m.PacketID) // [MQTT-4.3.3-2]
			}
		case *packets.Pubrel:
			err = s.c.QueueAck(packets.TypePubcomp, m.PacketID) // [MQTT-4.3.3-2]
		case *packets.Suback, *packets.Pingresp:
		default:
			return fmt.Errorf("subscriber %d: %w: %T", s.id, mqttconn.ErrUnexpected, pk)
		}
		if err == nil && s.c.InputBuffered() == 0 {
			err = s.c.Flush()
		}
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("subscriber %d: acknowledging: %w", s.id, err)
		}
	}
}

// record checks and times one delivered message.
func (s *subscriber) record(m *packets.Publish) {
	now := int64(time.Since(s.epoch))
	st, err := readStamp(m.Payload)
	if err != nil || st.Run != s.run || int(st.Publisher) >= s.seq.Publishers() {
		s.stale++
		return
	}
	if !s.seq.Observe(int(st.Publisher), st.Seq) {
		return
	}
	s.latency.Record(now - st.SentNanos)
	s.lastRecv.Store(now)
	s.delivered.Add(1)
}
