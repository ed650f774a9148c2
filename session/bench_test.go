package session

import (
	"context"
	"fmt"
	"github.com/prometheus/client_golang/prometheus"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bridgemq/server/broker"
	"github.com/bridgemq/server/packets"
)

// sinkConn is a net.Conn whose writes succeed at once and whose reads block
// until it is closed: a subscriber that reads everything instantly.
type sinkConn struct {
	written atomic.Int64
	once    sync.Once
	closed  chan struct{}
}

func newSinkConn() *sinkConn { return &sinkConn{closed: make(chan struct{})} }

func (c *sinkConn) Read([]byte) (int, error) { <-c.closed; return 0, io.EOF }
func (c *sinkConn) Write(b []byte) (int, error) {
	c.written.Add(int64(len(b)))
	return len(b), nil
}
func (c *sinkConn) Close() error                     { c.once.Do(func() { close(c.closed) }); return nil }
func (c *sinkConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *sinkConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *sinkConn) SetDeadline(time.Time) error      { return nil }
func (c *sinkConn) SetReadDeadline(time.Time) error  { return nil }
func (c *sinkConn) SetWriteDeadline(time.Time) error { return nil }

// BenchmarkFanout_1000Subscribers publishes one QoS 0 message to 1,000 local
// subscribers through the in-process bridge and the sessions' writers, and
// waits until every subscriber's bytes are written. allocs/op is per
// message, for all 1,000 deliveries together.
func BenchmarkFanout_1000Subscribers(b *testing.B) {
	for _, qos := range []byte{0, 1} {
		b.Run(fmt.Sprintf("qos%d", qos), func(b *testing.B) { benchmarkFanout(b, 1000, qos) })
	}
}

func benchmarkFanout(b *testing.B, n int, qos byte) {
	ctx := context.Background()
	br := broker.NewMemory(broker.MemoryOptions{})
	env := &Env{
		Broker: br,
		Auth:   AllowAll{},
		Stats:  &Stats{},
		Log:    slog.New(slog.NewTextHandler(io.Discard, nil)),
		Config: Config{MaxInflight: 65535, MaxQueued: 1 << 20, WriteTimeout: time.Minute},
	}
	conns := make([]*sinkConn, n)
	sessions := make([]*Session, n)
	for i := range n {
		conns[i] = newSinkConn()
		s := New(conns[i], env)
		s.clientID = fmt.Sprintf("sub-%d", i)
		if _, err := br.Attach(ctx, s.clientID, "", s, broker.CleanSession(true), nil); err != nil {
			b.Fatal(err)
		}
		if err := br.Subscribe(ctx, s.clientID, "bench/+/data", qos); err != nil {
			b.Fatal(err)
		}
		sessions[i] = s
		s.started = true
	}
	defer func() {
		for _, s := range sessions {
			s.stop(nil)
		}
	}()
	msg := &broker.Message{Topic: "bench/1/data", Payload: make([]byte, 64), QoS: qos}
	perMessage := int64(2 + 2 + len(msg.Topic) + len(msg.Payload))
	if qos > 0 {
		perMessage += 2
	}
	wait := func(total int64) {
		for _, c := range conns {
			for c.written.Load() < total {
				time.Sleep(10 * time.Microsecond)
			}
		}
	}
	// Warm up: queues and write buffers reach their steady size.
	for range 100 {
		_ = br.Publish(ctx, msg)
	}
	wait(100 * perMessage)
	sent := int64(100)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		_ = br.Publish(ctx, msg)
		sent++
		if qos > 0 {
			// Acknowledge so the inflight map does not grow without bound.
			for _, s := range sessions {
				s.mu.Lock()
				clear(s.inflight)
				s.mu.Unlock()
			}
		}
	}
	wait(sent * perMessage)
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/delivery")
}

// BenchmarkInboundPublish is the path of one PUBLISH read from a client on
// a single node: validation, ACL, the in-process bridge (one subscriber)
// and, for QoS 1, the PUBACK. It measures what a connection spends per
// message before the subscriber's writer takes over.
func BenchmarkInboundPublish(b *testing.B) {
	for _, qos := range []byte{0, 1} {
		b.Run(fmt.Sprintf("qos%d", qos), func(b *testing.B) {
			ctx := context.Background()
			br := broker.NewMemory(broker.MemoryOptions{})
			env := &Env{
				Broker: br,
				Auth:   AllowAll{},
				Stats:  &Stats{},
				Log:    slog.New(slog.NewTextHandler(io.Discard, nil)),
				Config: Config{MaxInflight: 65535, MaxQueued: 1 << 20, WriteTimeout: time.Minute},
				// As the server sets it: QoS 1 pays for its latency.
				AckLatency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "ack_seconds", Buckets: prometheus.DefBuckets}),
			}
			newSession := func(id string) *Session {
				s := New(newSinkConn(), env)
				s.clientID = id
				if _, err := br.Attach(ctx, id, "", s, broker.CleanSession(true), nil); err != nil {
					b.Fatal(err)
				}
				s.started = true
				return s
			}
			sub, pub := newSession("sub"), newSession("pub")
			defer sub.stop(nil)
			defer pub.stop(nil)
			if err := br.Subscribe(ctx, "sub", "bench/+/data", 0); err != nil {
				b.Fatal(err)
			}
			p := &packets.Publish{Topic: "bench/1/data", Payload: make([]byte, 64), QoS: qos, PacketID: 1}
			b.ReportAllocs()
			for b.Loop() {
				if err := pub.onPublish(ctx, p); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
