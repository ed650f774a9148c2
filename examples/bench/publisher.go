package main

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/bridgemq/server/internal/mqttconn"
	"github.com/bridgemq/server/packets"
)

// publisher sends one client's share of the load. Its goroutine owns the
// write side of the connection; a reader goroutine handles the broker's
// acknowledgements. For QoS 1 and 2 it keeps up to -inflight messages
// unacknowledged: the free packet ids are a channel that the reader refills.
type publisher struct {
	id      int
	c       *mqttconn.Conn
	cfg     *config
	run     uint16
	epoch   time.Time
	topics  []string
	free    chan uint16 // packet ids available; len == cap when nothing is in flight
	release chan uint16 // QoS 2: PUBREC received, PUBREL to send
	sent    atomic.Uint64
	acked   atomic.Uint64
	readErr chan error
	// sentAt holds, by packet id, when the PUBLISH that holds the id was
	// handed to the connection's buffer (nanoseconds since epoch);
	// ackLatency, owned by the reader, the time from there to its PUBACK
	// (QoS 1) or PUBCOMP (QoS 2).
	sentAt     []atomic.Int64
	ackLatency Histogram
}

// newPublisher wraps a connected client.
func newPublisher(id int, c *mqttconn.Conn, cfg *config, run uint16, epoch time.Time) *publisher {
	p := &publisher{id: id, c: c, cfg: cfg, run: run, epoch: epoch, topics: cfg.publisherTopics(id), readErr: make(chan error, 1)}
	if cfg.QoS > 0 {
		window := cfg.Inflight
		if rm := c.ReceiveMaximum(); rm > 0 && rm < window {
			window = rm // a 5.0 server's Receive Maximum [MQTT-3.3.4-7]
		}
		p.free = make(chan uint16, window)
		for i := 1; i <= window; i++ {
			p.free <- uint16(i)
		}
		p.release = make(chan uint16, window)
		p.sentAt = make([]atomic.Int64, window+1)
	}
	return p
}

// readAcks handles PUBACK, PUBREC and PUBCOMP until the connection closes.
func (p *publisher) readAcks() {
	for {
		pk, err := p.c.ReadPacket()
		if err != nil {
			if mqttconn.Stopped(err) {
				err = nil
			}
			p.readErr <- err
			return
		}
		switch a := pk.(type) {
		case *packets.Puback: // [MQTT-4.3.2]
			p.acknowledged(a.PacketID)
		case *packets.Pubrec: // [MQTT-4.3.3]: answer with PUBREL
			p.release <- a.PacketID
		case *packets.Pubcomp:
			p.acknowledged(a.PacketID)
		default:
			p.readErr <- fmt.Errorf("publisher %d: %w: %T", p.id, mqttconn.ErrUnexpected, pk)
			return
		}
	}
}

// acknowledged records the end of id's flow and frees the id. Reader
// goroutine only.
func (p *publisher) acknowledged(id uint16) {
	if int(id) < len(p.sentAt) {
		p.ackLatency.Record(int64(time.Since(p.epoch)) - p.sentAt[id].Load())
	}
	p.acked.Add(1)
	p.free <- id
}

// publish sends the publisher's messages: count of them, or until the
// context ends (duration mode). interval is the time between two sends, 0
// for as fast as possible. The write buffer is flushed whenever the
// publisher is about to wait, so nothing sits in it while the broker could
// be working on it.
func (p *publisher) publish(ctx context.Context, count uint64, interval time.Duration) error {
	payload := newPayload(p.cfg.Size)
	msg := &packets.Publish{QoS: p.cfg.QoS, Payload: payload}
	start := time.Now()
	for seq := uint64(0); seq < count; seq++ {
		if ctx.Err() != nil {
			break
		}
		if interval > 0 {
			if wait := time.Until(start.Add(time.Duration(seq) * interval)); wait > 0 {
				if err := p.flush(); err != nil {
					return err
				}
				time.Sleep(wait)
			}
		}
		if p.cfg.QoS > 0 {
			id, err := p.nextID(ctx)
			if err != nil {
				return err
			}
			if id == 0 {
				break // context ended while waiting for the window
			}
			msg.PacketID = id
		}
		msg.Topic = p.topics[(uint64(p.id)+seq)%uint64(len(p.topics))]
		now := int64(time.Since(p.epoch))
		stamp{Run: p.run, Publisher: uint16(p.id), Seq: uint32(seq), SentNanos: now}.put(payload)
		if p.cfg.QoS > 0 {
			p.sentAt[msg.PacketID].Store(now)
		}
		if err := p.c.QueuePublish(msg); err != nil {
			return fmt.Errorf("publisher %d: %w", p.id, err)
		}
		p.sent.Add(1)
	}
	return p.flush()
}

// nextID returns a free packet id, sending PUBRELs while it waits. It
// returns 0 when the context ends first.
func (p *publisher) nextID(ctx context.Context) (uint16, error) {
	for {
		select {
		case id := <-p.free:
			return id, nil
		case id := <-p.release:
			if err := p.c.QueueAck(packets.TypePubrel, id); err != nil {
				return 0, err
			}
			continue
		default:
		}
		// The window is full: whatever is buffered must reach the broker
		// before any acknowledgement can come back.
		if err := p.flush(); err != nil {
			return 0, err
		}
		select {
		case id := <-p.free:
			return id, nil
		case id := <-p.release:
			if err := p.c.QueueAck(packets.TypePubrel, id); err != nil {
				return 0, err
			}
		case <-ctx.Done():
			return 0, nil
		}
	}
}

// awaitAcks waits until every packet id is back (all messages acknowledged)
// or the deadline passes, answering PUBRECs meanwhile.
func (p *publisher) awaitAcks(deadline time.Time) error {
	if p.cfg.QoS == 0 {
		return nil
	}
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	for returned := 0; returned < cap(p.free); {
		select {
		case <-p.free:
			returned++
		case id := <-p.release:
			if err := p.c.QueueAck(packets.TypePubrel, id); err != nil {
				return err
			}
			if err := p.flush(); err != nil {
				return err
			}
		case <-timer.C:
			return nil
		}
	}
	return nil
}

func (p *publisher) flush() error {
	if err := p.c.Flush(); err != nil {
		return fmt.Errorf("publisher %d: %w", p.id, err)
	}
	return nil
}
