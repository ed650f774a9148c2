// Package loadgen is the fault tests' devices: QoS 1 publishers of
// sequence-numbered messages that keep a window in flight, reconnect with
// the same client id and re-send (DUP=1) what was not acknowledged, and
// persistent-session subscribers that acknowledge, tally and can hop
// between replicas; with Summarize, what was acknowledged but never
// delivered. Deliveries are counted with the load tool's
// internal/sequence tracker, and every connection is an internal/mqttconn
// one, as the load tool's are. The load tool (examples/bench) measures
// speed with clients that never reconnect; these measure what survives a
// fault.
package loadgen

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bridgemq/server/internal/mqttconn"
	"github.com/bridgemq/server/internal/mqtttest"
	"github.com/bridgemq/server/internal/sequence"
	"github.com/bridgemq/server/packets"
)

// Key names one message: its publisher and sequence number.
func Key(publisher string, seq int) string { return publisher + "/" + strconv.Itoa(seq) }

// Tally counts deliveries of sequence-numbered messages by key
// ("<publisher>/<seq>") with the load tool's sequence.Tracker, for
// subscribers on several goroutines.
type Tally struct {
	mu   sync.Mutex
	pubs map[string]int // publisher name → its index in tr
	tr   *sequence.Tracker
}

func NewTally() *Tally {
	return &Tally{pubs: make(map[string]int), tr: sequence.NewTracker(0, 1024)}
}

// splitKey parses a key into its publisher and sequence number. A key
// that is not "<publisher>/<seq>" counts as message 0 of a publisher named
// after the whole key, so that it is still one distinct message.
func splitKey(key string) (publisher string, seq uint32) {
	if i := strings.LastIndexByte(key, '/'); i >= 0 {
		if n, err := strconv.ParseUint(key[i+1:], 10, 32); err == nil {
			return key[:i], uint32(n)
		}
	}
	return key, 0
}

// add records one delivery of key.
func (s *Tally) Add(key string) {
	name, seq := splitKey(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	pub, ok := s.pubs[name]
	if !ok {
		pub = len(s.pubs)
		s.pubs[name] = pub
	}
	s.tr.Observe(pub, seq)
}

func (s *Tally) Has(key string) bool {
	name, seq := splitKey(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	pub, ok := s.pubs[name]
	return ok && s.tr.Has(pub, seq)
}

// counts returns the distinct keys delivered and the deliveries beyond the
// first of each.
func (s *Tally) Counts() (distinct, duplicates int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return int(s.tr.Unique()), int(s.tr.Duplicates())
}

// PayloadKey extracts the key from a payload: everything before the first
// space.
func PayloadKey(payload []byte) string {
	s := string(payload)
	if i := strings.IndexByte(s, ' '); i >= 0 {
		return s[:i]
	}
	return s
}

// Publisher publishes sequence-numbered QoS 1 messages over a raw
// connection, keeps up to window of them unacknowledged, and re-sends
// (DUP=1) on a new connection whatever was not acknowledged when a
// connection broke or an acknowledgement took longer than ackTimeout. It
// reconnects with the same client id, as a device does.
type Publisher struct {
	name       string
	dial       func() (net.Conn, error)
	topic      string
	Padding    int // payload bytes after the key
	Window     int
	AckTimeout time.Duration

	mu         sync.Mutex
	sent       int // distinct sequence numbers sent at least once
	resent     int
	reconnects int
	acked      map[int]bool
	lastErr    error // last connection failure, for the report
}

func NewPublisher(name, topic string, dial func() (net.Conn, error)) *Publisher {
	return &Publisher{name: name, dial: dial, topic: topic, Window: 32, AckTimeout: 3 * time.Second, acked: make(map[int]bool)}
}

// pubInflight is one PUBLISH awaiting its PUBACK.
type pubInflight struct {
	seq    int
	sentAt time.Time
}

// pubConn is one connection of a publisher and the reader of its PUBACKs.
type pubConn struct {
	conn *mqttconn.Conn
	acks chan uint16   // closed when the reader stops
	done chan struct{} // closed when the publisher abandons the connection
}

// run publishes sequence numbers 0..n-1, about rate per second (0: as fast
// as the window allows), starts no new one after stopNew, and returns once
// every message it sent is acknowledged, or with an error when ctx ends
// first.
func (p *Publisher) Run(ctx context.Context, n, rate int, stopNew time.Time) error {
	var (
		queue    []int // sequence numbers to send, re-sends first
		resend   = map[int]bool{}
		inflight = map[uint16]pubInflight{}
		nextSeq  int
		nextID   uint16
		pc       *pubConn
		start    = time.Now()
	)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	drop := func(why error) {
		p.mu.Lock()
		p.lastErr = why
		p.mu.Unlock()
		_ = pc.conn.NC.Close()
		close(pc.done)
		pc = nil
		var back []int
		for _, f := range inflight {
			back = append(back, f.seq)
			resend[f.seq] = true
		}
		slices.Sort(back)
		queue = append(back, queue...)
		clear(inflight)
	}
	defer func() {
		if pc != nil {
			_ = pc.conn.NC.Close()
			close(pc.done)
		}
	}()
	for {
		now := time.Now()
		if now.Before(stopNew) {
			target := n
			if rate > 0 {
				target = min(n, int(now.Sub(start).Seconds()*float64(rate))+1)
			}
			for ; nextSeq < target; nextSeq++ {
				queue = append(queue, nextSeq)
			}
		}
		stopped := nextSeq >= n || !now.Before(stopNew)
		if stopped && len(queue) == 0 && len(inflight) == 0 {
			return nil
		}
		if pc == nil {
			c, err := p.connect(ctx)
			if err != nil {
				p.mu.Lock()
				p.lastErr = err
				p.mu.Unlock()
				select {
				case <-ctx.Done():
					return fmt.Errorf("publisher %s: %w (last connection error: %v)", p.name, ctx.Err(), err)
				case <-time.After(100 * time.Millisecond):
				}
				continue
			}
			pc = c
		}
		// The PUBLISHes go into the connection's buffer, which writes them
		// when full and at Flush, under one write deadline. A failed write
		// sticks: Flush reports it and drop takes back what was queued.
		_ = pc.conn.NC.SetWriteDeadline(now.Add(mqtttest.WaitTimeout))
		queued, failed := false, false
		for !failed && len(inflight) < p.Window && len(queue) > 0 {
			seq := queue[0]
			queue = queue[1:]
			for {
				nextID++
				if _, busy := inflight[nextID]; nextID != 0 && !busy {
					break
				}
			}
			payload := []byte(Key(p.name, seq))
			if p.Padding > 0 {
				payload = append(append(payload, ' '), strings.Repeat("x", p.Padding)...)
			}
			inflight[nextID] = pubInflight{seq: seq, sentAt: now}
			p.mu.Lock()
			if resend[seq] {
				p.resent++
			} else {
				p.sent++
			}
			p.mu.Unlock()
			failed = pc.conn.QueuePublish(&packets.Publish{QoS: 1, PacketID: nextID, Topic: p.topic, Payload: payload, Dup: resend[seq]}) != nil
			queued = true
		}
		if queued {
			if err := pc.conn.Flush(); err != nil {
				drop(fmt.Errorf("write: %w", err))
				continue
			}
		}
		select {
		case id, ok := <-pc.acks:
			if !ok {
				drop(errors.New("connection closed"))
				continue
			}
			if f, ok := inflight[id]; ok {
				delete(inflight, id)
				delete(resend, f.seq)
				p.mu.Lock()
				p.acked[f.seq] = true
				p.mu.Unlock()
			}
		case <-tick.C:
			for _, f := range inflight {
				if time.Since(f.sentAt) > p.AckTimeout {
					drop(fmt.Errorf("no PUBACK within %s", p.AckTimeout))
					break
				}
			}
		case <-ctx.Done():
			return fmt.Errorf("publisher %s: %w with %d unacknowledged", p.name, ctx.Err(), len(inflight)+len(queue))
		}
	}
}

// connect opens a connection, completes CONNECT/CONNACK and starts the
// PUBACK reader.
func (p *Publisher) connect(ctx context.Context) (*pubConn, error) {
	p.mu.Lock()
	p.reconnects++
	p.mu.Unlock()
	nc, err := p.dial()
	if err != nil {
		return nil, fmt.Errorf("dial: %w", err)
	}
	conn := mqttconn.New(nc, mqttconn.Options{KeepAlive: 60})
	if _, err := conn.Connect(p.name, true, time.Now().Add(mqtttest.WaitTimeout)); err != nil {
		_ = nc.Close()
		return nil, err
	}
	pc := &pubConn{conn: conn, acks: make(chan uint16, 256), done: make(chan struct{})}
	go func() {
		defer close(pc.acks)
		for {
			pk, err := conn.ReadPacket()
			if err != nil {
				return
			}
			if a, ok := pk.(*packets.Puback); ok {
				select {
				case pc.acks <- a.PacketID:
				case <-pc.done:
					return
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return pc, nil
}

// ackedKeys returns the keys of the messages the server acknowledged.
func (p *Publisher) AckedKeys() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	keys := make([]string, 0, len(p.acked))
	for seq := range p.acked {
		keys = append(keys, Key(p.name, seq))
	}
	return keys
}

// Subscriber is a persistent-session (clean=false) QoS 1 subscriber over
// raw connections. It acknowledges every PUBLISH as soon as it has read it
// and records the keys. With hopEvery > 0 it disconnects (DISCONNECT) and
// connects to the next of addrs that often, until the hop channel closes.
type Subscriber struct {
	id     string
	filter string
	qos    byte
	addrs  []string
	tally  *Tally

	mu              sync.Mutex
	acked           map[string]bool // keys whose PUBACK was written
	dupAfterAck     int             // deliveries of a key already acknowledged
	connects        int
	noSessionResume int // reconnects whose CONNACK said no session present
	lastErr         error
	visits          []Visit // one per connection, for the report
}

// Visit is what a subscriber received over one connection.
type Visit struct {
	Addr                 string
	Received, Dups, Dup1 int    // messages, re-deliveries of acknowledged ones, with DUP=1
	FirstDup, LastDup    string // keys of the first and last re-delivery
}

func NewSubscriber(id, filter string, tally *Tally, addrs ...string) *Subscriber {
	return &Subscriber{id: id, filter: filter, qos: 1, addrs: addrs, tally: tally, acked: make(map[string]bool)}
}

// start connects and subscribes once, synchronously, so that the
// subscription exists when it returns, then keeps receiving in the
// background until ctx ends; hop, when not nil, makes it move to the next
// address every hopEvery until hop is closed.
func (s *Subscriber) Start(t testing.TB, ctx context.Context, hopEvery time.Duration, hop <-chan struct{}) (done <-chan struct{}) {
	t.Helper()
	conn, err := s.connect(s.addrs[0])
	if err != nil {
		t.Fatalf("subscriber %s: %v", s.id, err)
	}
	codes, err := conn.Subscribe([]string{s.filter}, s.qos, time.Now().Add(mqtttest.WaitTimeout))
	if err != nil {
		t.Fatalf("subscriber %s: %v", s.id, err)
	}
	if codes[0] != packets.GrantedQoS(s.qos) {
		t.Fatalf("subscriber %s: SUBACK code 0x%02x, want QoS %d granted", s.id, byte(codes[0]), s.qos)
	}
	ch := make(chan struct{})
	go func() {
		defer close(ch)
		s.loop(ctx, conn, hopEvery, hop)
	}()
	return ch
}

func (s *Subscriber) connect(addr string) (*mqttconn.Conn, error) {
	nc, err := net.DialTimeout("tcp", addr, mqtttest.WaitTimeout)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	conn := mqttconn.New(nc, mqttconn.Options{KeepAlive: 60})
	ack, err := conn.Connect(s.id, false, time.Now().Add(mqtttest.WaitTimeout))
	if err != nil {
		_ = nc.Close()
		return nil, err
	}
	s.mu.Lock()
	s.connects++
	s.visits = append(s.visits, Visit{Addr: addr})
	if s.connects > 1 && !ack.SessionPresent {
		s.noSessionResume++
	}
	s.mu.Unlock()
	return conn, nil
}

// loop receives on conn, hopping or reconnecting as needed, until ctx ends.
func (s *Subscriber) loop(ctx context.Context, conn *mqttconn.Conn, hopEvery time.Duration, hop <-chan struct{}) {
	next := 0
	hopping := hop != nil && hopEvery > 0
	for {
		var hopAt time.Time
		if hopping {
			hopAt = time.Now().Add(hopEvery)
		}
		err := s.receive(ctx, conn, hopAt)
		if ctx.Err() != nil {
			_ = conn.NC.Close()
			return
		}
		if hopping {
			select {
			case <-hop:
				hopping = false
			default:
			}
		}
		if err == nil { // time to hop: leave cleanly, then go to the next replica
			conn.Close()
			next = (next + 1) % len(s.addrs)
		} else {
			// The connection broke: try the next address (a load balancer,
			// when the first is a replica that may have died).
			s.mu.Lock()
			s.lastErr = err
			s.mu.Unlock()
			next = (next + 1) % len(s.addrs)
		}
		_ = conn.NC.Close()
		for {
			conn, err = s.connect(s.addrs[next])
			if err == nil {
				break
			}
			s.mu.Lock()
			s.lastErr = err
			s.mu.Unlock()
			next = (next + 1) % len(s.addrs)
			select {
			case <-ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
}

// receive reads and acknowledges PUBLISH packets until hopAt (nil error),
// ctx ends, or the connection fails (the error).
func (s *Subscriber) receive(ctx context.Context, conn *mqttconn.Conn, hopAt time.Time) error {
	for {
		deadline := time.Now().Add(200 * time.Millisecond)
		if !hopAt.IsZero() && hopAt.Before(deadline) {
			deadline = hopAt
		}
		_ = conn.NC.SetReadDeadline(deadline)
		pk, err := conn.ReadPacket()
		if err != nil {
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				return fmt.Errorf("read: %w", err)
			}
			if ctx.Err() != nil || (!hopAt.IsZero() && !time.Now().Before(hopAt)) {
				return nil
			}
			continue
		}
		p, ok := pk.(*packets.Publish)
		if !ok {
			continue
		}
		key := PayloadKey(p.Payload)
		if p.QoS > 0 {
			_ = conn.NC.SetWriteDeadline(time.Now().Add(mqtttest.WaitTimeout))
			err := conn.QueueAck(packets.TypePuback, p.PacketID)
			if err == nil {
				err = conn.Flush()
			}
			if err != nil {
				return fmt.Errorf("write PUBACK: %w", err)
			}
		}
		s.mu.Lock()
		v := &s.visits[len(s.visits)-1]
		v.Received++
		if p.Dup {
			v.Dup1++
		}
		if s.acked[key] {
			s.dupAfterAck++
			v.Dups++
			if v.FirstDup == "" {
				v.FirstDup = key
			}
			v.LastDup = key
		}
		if p.QoS > 0 {
			s.acked[key] = true
		}
		s.mu.Unlock()
		s.tally.Add(key)
	}
}

// Summary is what a fault test reports.
type Summary struct {
	Sent, Acked, Resent, Delivered, Duplicates, Lost int
	FirstLost                                        []string // the first ten lost keys
}

func (f Summary) String() string {
	return fmt.Sprintf("sent=%d acked=%d delivered=%d duplicates=%d lost=%d resent=%d",
		f.Sent, f.Acked, f.Delivered, f.Duplicates, f.Lost, f.Resent)
}

// Summarize counts the publishers' messages against what tally received.
func Summarize(pubs []*Publisher, tally *Tally) Summary {
	var f Summary
	for _, p := range pubs {
		p.mu.Lock()
		f.Sent += p.sent
		f.Resent += p.resent
		p.mu.Unlock()
		for _, k := range p.AckedKeys() {
			f.Acked++
			if !tally.Has(k) {
				f.Lost++
				if len(f.FirstLost) < 10 {
					f.FirstLost = append(f.FirstLost, k)
				}
			}
		}
	}
	f.Delivered, f.Duplicates = tally.Counts()
	return f
}

// AwaitDelivery waits up to d for every acknowledged message to reach
// tally, then a quiet window more for late duplicates, and returns the
// summary.
func AwaitDelivery(pubs []*Publisher, tally *Tally, d, quiet time.Duration) Summary {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) && Summarize(pubs, tally).Lost > 0 {
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(quiet)
	return Summarize(pubs, tally)
}

// RunPublishers runs pubs concurrently and returns their errors.
func RunPublishers(ctx context.Context, pubs []*Publisher, n, rate int, stopNew time.Time) []error {
	errs := make([]error, len(pubs))
	var wg sync.WaitGroup
	for i, p := range pubs {
		wg.Go(func() { errs[i] = p.Run(ctx, n, rate, stopNew) })
	}
	wg.Wait()
	return errs
}

// Counts returns how many distinct messages p sent, how many it sent
// again, and how many connections it opened.
func (p *Publisher) Counts() (sent, resent, connects int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.sent, p.resent, p.reconnects
}

// SubscriberReport is what a Subscriber saw.
type SubscriberReport struct {
	Connects        int
	NoSessionResume int // reconnects whose CONNACK said no session present
	DupAfterAck     int // deliveries of a key already acknowledged
	LastErr         error
	Visits          []Visit // one per connection
}

// Report returns what s has seen so far.
func (s *Subscriber) Report() SubscriberReport {
	s.mu.Lock()
	defer s.mu.Unlock()
	return SubscriberReport{Connects: s.connects, NoSessionResume: s.noSessionResume, DupAfterAck: s.dupAfterAck,
		LastErr: s.lastErr, Visits: append([]Visit(nil), s.visits...)}
}

// ID returns the subscriber's client id.
func (s *Subscriber) ID() string { return s.id }

// Resume connects s to addr again, with its session, and receives there
// until ctx ends (the returned channel closes then): for a subscriber
// whose Start ended with its context, brought back after a fault.
func (s *Subscriber) Resume(ctx context.Context, addr string) (<-chan struct{}, error) {
	conn, err := s.connect(addr)
	if err != nil {
		return nil, err
	}
	ch := make(chan struct{})
	go func() {
		defer close(ch)
		s.loop(ctx, conn, 0, nil)
	}()
	return ch, nil
}
