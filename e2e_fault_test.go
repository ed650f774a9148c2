package main

// Fault tests: replicas and Redis fail under QoS 1 load, and every message a
// publisher had acknowledged must still reach its subscribers. Every message
// carries "<publisher>/<sequence number>" at the start of its payload, so
// loss and duplication are counted exactly, not estimated from timings.
//
// Publishers and subscribers here are raw-packet clients with their own
// reconnect loops: a library's retries and in-memory stores would hide what
// the server itself did.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/bridgemq/server/internal/haproxytest"
	"github.com/bridgemq/server/internal/mqtttest"
	"github.com/bridgemq/server/internal/redistest"
	"github.com/bridgemq/server/internal/sequence"
	"github.com/bridgemq/server/packets"
)

// seqKey names one message: its publisher and sequence number.
func seqKey(publisher string, seq int) string { return publisher + "/" + strconv.Itoa(seq) }

// seqTally counts deliveries of sequence-numbered messages by key
// ("<publisher>/<seq>") with the load tool's sequence.Tracker, for
// subscribers on several goroutines.
type seqTally struct {
	mu   sync.Mutex
	pubs map[string]int // publisher name → its index in tr
	tr   *sequence.Tracker
}

func newSeqTally() *seqTally {
	return &seqTally{pubs: make(map[string]int), tr: sequence.NewTracker(0, 1024)}
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
func (s *seqTally) add(key string) {
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

func (s *seqTally) has(key string) bool {
	name, seq := splitKey(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	pub, ok := s.pubs[name]
	return ok && s.tr.Has(pub, seq)
}

// counts returns the distinct keys delivered and the deliveries beyond the
// first of each.
func (s *seqTally) counts() (distinct, duplicates int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return int(s.tr.Unique()), int(s.tr.Duplicates())
}

// payloadKey extracts the key from a payload: everything before the first
// space.
func payloadKey(payload []byte) string {
	s := string(payload)
	if i := strings.IndexByte(s, ' '); i >= 0 {
		return s[:i]
	}
	return s
}

// seqPublisher publishes sequence-numbered QoS 1 messages over a raw
// connection, keeps up to window of them unacknowledged, and re-sends
// (DUP=1) on a new connection whatever was not acknowledged when a
// connection broke or an acknowledgement took longer than ackTimeout. It
// reconnects with the same client id, as a device does.
type seqPublisher struct {
	name       string
	dial       func() (net.Conn, error)
	topic      string
	padding    int // payload bytes after the key
	window     int
	ackTimeout time.Duration

	mu         sync.Mutex
	sent       int // distinct sequence numbers sent at least once
	resent     int
	reconnects int
	acked      map[int]bool
	lastErr    error // last connection failure, for the report
}

func newSeqPublisher(name, topic string, dial func() (net.Conn, error)) *seqPublisher {
	return &seqPublisher{name: name, dial: dial, topic: topic, window: 32, ackTimeout: 3 * time.Second, acked: make(map[int]bool)}
}

// pubInflight is one PUBLISH awaiting its PUBACK.
type pubInflight struct {
	seq    int
	sentAt time.Time
}

// pubConn is one connection of a publisher and the reader of its PUBACKs.
type pubConn struct {
	conn net.Conn
	acks chan uint16   // closed when the reader stops
	done chan struct{} // closed when the publisher abandons the connection
}

// run publishes sequence numbers 0..n-1, about rate per second (0: as fast
// as the window allows), starts no new one after stopNew, and returns once
// every message it sent is acknowledged, or with an error when ctx ends
// first.
func (p *seqPublisher) run(ctx context.Context, n, rate int, stopNew time.Time) error {
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
		_ = pc.conn.Close()
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
			_ = pc.conn.Close()
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
		var buf []byte
		for len(inflight) < p.window && len(queue) > 0 {
			seq := queue[0]
			queue = queue[1:]
			for {
				nextID++
				if _, busy := inflight[nextID]; nextID != 0 && !busy {
					break
				}
			}
			payload := []byte(seqKey(p.name, seq))
			if p.padding > 0 {
				payload = append(append(payload, ' '), strings.Repeat("x", p.padding)...)
			}
			buf = packets.AppendPublish(buf, &packets.Publish{QoS: 1, PacketID: nextID, Topic: p.topic, Payload: payload, Dup: resend[seq]})
			inflight[nextID] = pubInflight{seq: seq, sentAt: now}
			p.mu.Lock()
			if resend[seq] {
				p.resent++
			} else {
				p.sent++
			}
			p.mu.Unlock()
		}
		if len(buf) > 0 {
			_ = pc.conn.SetWriteDeadline(now.Add(waitTimeout))
			if _, err := pc.conn.Write(buf); err != nil {
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
				if time.Since(f.sentAt) > p.ackTimeout {
					drop(fmt.Errorf("no PUBACK within %s", p.ackTimeout))
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
func (p *seqPublisher) connect(ctx context.Context) (*pubConn, error) {
	p.mu.Lock()
	p.reconnects++
	p.mu.Unlock()
	conn, err := p.dial()
	if err != nil {
		return nil, fmt.Errorf("dial: %w", err)
	}
	ack, r, err := handshake(conn, &packets.Connect{ClientID: p.name, CleanSession: true, KeepAlive: 60})
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	if ack.ReturnCode != packets.Accepted {
		_ = conn.Close()
		return nil, fmt.Errorf("CONNACK return code 0x%02x", ack.ReturnCode)
	}
	pc := &pubConn{conn: conn, acks: make(chan uint16, 256), done: make(chan struct{})}
	go func() {
		defer close(pc.acks)
		_ = conn.SetReadDeadline(time.Time{})
		for {
			pk, err := r.ReadPacket()
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

// handshake sends c and reads the CONNACK, bounded by waitTimeout.
func handshake(conn net.Conn, c *packets.Connect) (*packets.Connack, *packets.Reader, error) {
	if c.ProtocolVersion == 0 {
		c.ProtocolVersion = packets.Version311
	}
	b, err := packets.Append(nil, c)
	if err != nil {
		return nil, nil, fmt.Errorf("encode CONNECT: %w", err)
	}
	_ = conn.SetDeadline(time.Now().Add(waitTimeout))
	if _, err := conn.Write(b); err != nil {
		return nil, nil, fmt.Errorf("write CONNECT: %w", err)
	}
	r := packets.NewReader(conn, 0)
	pk, err := r.ReadPacket()
	if err != nil {
		return nil, nil, fmt.Errorf("read CONNACK: %w", err)
	}
	ack, ok := pk.(*packets.Connack)
	if !ok {
		return nil, nil, fmt.Errorf("got %T before CONNACK", pk)
	}
	_ = conn.SetDeadline(time.Time{})
	return ack, r, nil
}

// ackedKeys returns the keys of the messages the server acknowledged.
func (p *seqPublisher) ackedKeys() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	keys := make([]string, 0, len(p.acked))
	for seq := range p.acked {
		keys = append(keys, seqKey(p.name, seq))
	}
	return keys
}

// seqSubscriber is a persistent-session (clean=false) QoS 1 subscriber over
// raw connections. It acknowledges every PUBLISH as soon as it has read it
// and records the keys. With hopEvery > 0 it disconnects (DISCONNECT) and
// connects to the next of addrs that often, until the hop channel closes.
type seqSubscriber struct {
	id     string
	filter string
	qos    byte
	addrs  []string
	tally  *seqTally

	mu              sync.Mutex
	acked           map[string]bool // keys whose PUBACK was written
	dupAfterAck     int             // deliveries of a key already acknowledged
	connects        int
	noSessionResume int // reconnects whose CONNACK said no session present
	lastErr         error
	visits          []visit // one per connection, for the report
}

// visit is what a subscriber received over one connection.
type visit struct {
	addr                 string
	received, dups, dup1 int    // messages, re-deliveries of acknowledged ones, with DUP=1
	firstDup, lastDup    string // keys of the first and last re-delivery
}

func newSeqSubscriber(id, filter string, tally *seqTally, addrs ...string) *seqSubscriber {
	return &seqSubscriber{id: id, filter: filter, qos: 1, addrs: addrs, tally: tally, acked: make(map[string]bool)}
}

// start connects and subscribes once, synchronously, so that the
// subscription exists when it returns, then keeps receiving in the
// background until ctx ends; hop, when not nil, makes it move to the next
// address every hopEvery until hop is closed.
func (s *seqSubscriber) start(t testing.TB, ctx context.Context, hopEvery time.Duration, hop <-chan struct{}) (done <-chan struct{}) {
	t.Helper()
	conn, r, err := s.connect(s.addrs[0])
	if err != nil {
		t.Fatalf("subscriber %s: %v", s.id, err)
	}
	b, _ := packets.Append(nil, &packets.Subscribe{PacketID: 1, Subscriptions: []packets.Subscription{{Filter: s.filter, QoS: s.qos}}})
	if _, err := conn.Write(b); err != nil {
		t.Fatalf("subscriber %s: write SUBSCRIBE: %v", s.id, err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(waitTimeout))
	pk, err := r.ReadPacket()
	if err != nil {
		t.Fatalf("subscriber %s: read SUBACK: %v", s.id, err)
	}
	if ack, ok := pk.(*packets.Suback); !ok || len(ack.ReturnCodes) != 1 || ack.ReturnCodes[0] != packets.GrantedQoS(s.qos) {
		t.Fatalf("subscriber %s: got %T %+v, want SUBACK granting QoS %d", s.id, pk, pk, s.qos)
	}
	ch := make(chan struct{})
	go func() {
		defer close(ch)
		s.loop(ctx, conn, r, hopEvery, hop)
	}()
	return ch
}

func (s *seqSubscriber) connect(addr string) (net.Conn, *packets.Reader, error) {
	conn, err := net.DialTimeout("tcp", addr, waitTimeout)
	if err != nil {
		return nil, nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	ack, r, err := handshake(conn, &packets.Connect{ClientID: s.id, CleanSession: false, KeepAlive: 60})
	if err != nil {
		_ = conn.Close()
		return nil, nil, err
	}
	if ack.ReturnCode != packets.Accepted {
		_ = conn.Close()
		return nil, nil, fmt.Errorf("CONNACK return code 0x%02x", ack.ReturnCode)
	}
	s.mu.Lock()
	s.connects++
	s.visits = append(s.visits, visit{addr: addr})
	if s.connects > 1 && !ack.SessionPresent {
		s.noSessionResume++
	}
	s.mu.Unlock()
	return conn, r, nil
}

// loop receives on conn, hopping or reconnecting as needed, until ctx ends.
func (s *seqSubscriber) loop(ctx context.Context, conn net.Conn, r *packets.Reader, hopEvery time.Duration, hop <-chan struct{}) {
	next := 0
	hopping := hop != nil && hopEvery > 0
	for {
		var hopAt time.Time
		if hopping {
			hopAt = time.Now().Add(hopEvery)
		}
		err := s.receive(ctx, conn, r, hopAt)
		if ctx.Err() != nil {
			_ = conn.Close()
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
			b, _ := packets.Append(nil, &packets.Disconnect{})
			_, _ = conn.Write(b)
			next = (next + 1) % len(s.addrs)
		} else {
			// The connection broke: try the next address (a load balancer,
			// when the first is a replica that may have died).
			s.mu.Lock()
			s.lastErr = err
			s.mu.Unlock()
			next = (next + 1) % len(s.addrs)
		}
		_ = conn.Close()
		for {
			conn, r, err = s.connect(s.addrs[next])
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
func (s *seqSubscriber) receive(ctx context.Context, conn net.Conn, r *packets.Reader, hopAt time.Time) error {
	for {
		deadline := time.Now().Add(200 * time.Millisecond)
		if !hopAt.IsZero() && hopAt.Before(deadline) {
			deadline = hopAt
		}
		_ = conn.SetReadDeadline(deadline)
		pk, err := r.ReadPacket()
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
		key := payloadKey(p.Payload)
		if p.QoS > 0 {
			b, _ := packets.Append(nil, &packets.Puback{PacketID: p.PacketID})
			_ = conn.SetWriteDeadline(time.Now().Add(waitTimeout))
			if _, err := conn.Write(b); err != nil {
				return fmt.Errorf("write PUBACK: %w", err)
			}
		}
		s.mu.Lock()
		v := &s.visits[len(s.visits)-1]
		v.received++
		if p.Dup {
			v.dup1++
		}
		if s.acked[key] {
			s.dupAfterAck++
			v.dups++
			if v.firstDup == "" {
				v.firstDup = key
			}
			v.lastDup = key
		}
		if p.QoS > 0 {
			s.acked[key] = true
		}
		s.mu.Unlock()
		s.tally.add(key)
	}
}

// faultSummary is what a fault test reports.
type faultSummary struct {
	sent, acked, resent, delivered, duplicates, lost int
	firstLost                                        []string
}

func (f faultSummary) String() string {
	return fmt.Sprintf("sent=%d acked=%d delivered=%d duplicates=%d lost=%d resent=%d",
		f.sent, f.acked, f.delivered, f.duplicates, f.lost, f.resent)
}

// summarize counts the publishers' messages against what tally received.
func summarize(pubs []*seqPublisher, tally *seqTally) faultSummary {
	var f faultSummary
	for _, p := range pubs {
		p.mu.Lock()
		f.sent += p.sent
		f.resent += p.resent
		p.mu.Unlock()
		for _, k := range p.ackedKeys() {
			f.acked++
			if !tally.has(k) {
				f.lost++
				if len(f.firstLost) < 10 {
					f.firstLost = append(f.firstLost, k)
				}
			}
		}
	}
	f.delivered, f.duplicates = tally.counts()
	return f
}

// awaitDelivery waits up to d for every acknowledged message to reach
// tally, then a quiet window more for late duplicates, and returns the
// summary.
func awaitDelivery(pubs []*seqPublisher, tally *seqTally, d time.Duration) faultSummary {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) && summarize(pubs, tally).lost > 0 {
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(quietWindow)
	return summarize(pubs, tally)
}

// runPublishers runs pubs concurrently and returns their errors.
func runPublishers(ctx context.Context, pubs []*seqPublisher, n, rate int, stopNew time.Time) []error {
	errs := make([]error, len(pubs))
	var wg sync.WaitGroup
	for i, p := range pubs {
		wg.Go(func() { errs[i] = p.run(ctx, n, rate, stopNew) })
	}
	wg.Wait()
	return errs
}

// publishThroughFault runs n QoS 1 publishers on <prefix>/p<i> through dial,
// each at rate msg/s for publishFor, calls fault after faultAfter, and returns
// the publishers and what the tally received once deliveries settle.
func publishThroughFault(t *testing.T, ctx context.Context, tally *seqTally, n int, prefix string,
	dial func() (net.Conn, error), rate int, publishFor, faultAfter time.Duration, fault func()) ([]*seqPublisher, faultSummary) {
	t.Helper()
	var pubs []*seqPublisher
	for i := range n {
		pubs = append(pubs, newSeqPublisher(fmt.Sprintf("pub%d", i), fmt.Sprintf("%s/p%d", prefix, i), dial))
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		time.Sleep(faultAfter)
		fault()
	}()
	errs := runPublishers(ctx, pubs, 1<<30, rate, time.Now().Add(publishFor))
	<-done
	for _, err := range errs {
		if err != nil {
			t.Errorf("publisher: %v", err)
		}
	}
	return pubs, awaitDelivery(pubs, tally, 15*time.Second)
}

func dialer(addr string) func() (net.Conn, error) {
	return func() (net.Conn, error) { return net.DialTimeout("tcp", addr, waitTimeout) }
}

// pahoOptsAt is pahoOpts for a broker given by address.
func pahoOptsAt(addr, clientID string, clean bool) *mqtt.ClientOptions {
	return mqtt.NewClientOptions().
		AddBroker("tcp://" + addr).
		SetClientID(clientID).
		SetCleanSession(clean).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetProtocolVersion(4).
		SetConnectTimeout(waitTimeout).
		SetWriteTimeout(waitTimeout).
		SetKeepAlive(30 * time.Second)
}

// startProcCluster starts a redis-server, three replica processes on it
// (a, b, c) and HAProxy in front of them, and waits until all three are up.
func startProcCluster(t *testing.T) (a, b, c *mqtttest.Process, h *haproxytest.HAProxy) {
	t.Helper()
	cl := mqtttest.StartCluster(t, mqtttest.ClusterOptions{Nodes: []string{"node-a", "node-b", "node-c"}, HAProxy: true})
	return cl.Replicas[0], cl.Replicas[1], cl.Replicas[2], cl.Proxy
}

// TestFault_SIGKILLReplicaUnderQoS1Load kills one of three replica processes
// behind HAProxy while four publishers send QoS 1 messages through the
// proxy. No message a replica acknowledged may be lost [MQTT-4.3.2-2]: the
// server owns it once it has sent PUBACK. The will of a client on the killed
// replica is published exactly once by a survivor [MQTT-3.1.2-8].
func TestFault_SIGKILLReplicaUnderQoS1Load(t *testing.T) {
	a, b, c, h := startProcCluster(t)

	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	tally := newSeqTally()
	sub := newSeqSubscriber(unique(t, "sub"), "load/#", tally, c.Addr())
	subDone := sub.start(t, ctx, 0, nil)

	willTopic := unique(t, "will")
	wills := newCollector()
	watcher, _ := connectPaho(t, pahoOptsAt(b.Addr(), unique(t, "watch"), true))
	subscribe(t, watcher, willTopic, 1, wills)
	doomed := mqtttest.Dial(t, a.Addr())
	doomed.MustConnect(&packets.Connect{ClientID: unique(t, "doomed"), CleanSession: true, KeepAlive: 60,
		Will: &packets.Will{Topic: willTopic, Payload: []byte("a died"), QoS: 1}})

	pubs, sum := publishThroughFault(t, ctx, tally, 4, "load", dialer(h.Addr()), 125, 5*time.Second, 1500*time.Millisecond, func() { a.Kill(t) })

	// The will comes once the dead node's liveness key expires (node-ttl 2s)
	// and a survivor's reaper (every node-ttl/2) claims it; after the first
	// copy, wait longer than that again for a second one.
	willCount := 0
	select {
	case <-wills:
		willCount++
	case <-time.After(10 * time.Second):
	}
	extra := time.After(3500 * time.Millisecond)
	for waiting := true; waiting; {
		select {
		case <-wills:
			willCount++
		case <-extra:
			waiting = false
		}
	}
	cancel()
	<-subDone

	reconnects := 0
	for _, p := range pubs {
		reconnects += p.reconnects - 1
	}
	t.Logf("fault-sigkill: %s publisher_reconnects=%d wills=%d", sum, reconnects, willCount)
	if sum.lost != 0 {
		t.Errorf("%d acknowledged messages never delivered, first: %v", sum.lost, sum.firstLost)
	}
	if sum.acked == 0 || sum.sent != sum.acked {
		t.Errorf("sent %d distinct messages, acknowledged %d: the cluster stopped acknowledging", sum.sent, sum.acked)
	}
	if willCount != 1 {
		t.Errorf("will of the client on the killed replica published %d times, want exactly 1 [MQTT-3.1.2-8]", willCount)
	}
	if reconnects < 1 {
		t.Errorf("no publisher reconnected: none was on the killed replica, so the test proved nothing")
	}
}

// TestFault_SIGKILLSubscribersReplica kills the replica holding a
// persistent QoS 1 subscriber while publishers behind HAProxy keep sending.
// The replica cannot store the session: the subscriber reconnects through
// HAProxy and its session resumes from the last checkpoint of its stream
// position on another replica. Every acknowledged message arrives; what was
// delivered between the checkpoint and the kill may arrive twice (QoS 1).
func TestFault_SIGKILLSubscribersReplica(t *testing.T) {
	a, _, _, h := startProcCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	tally := newSeqTally()
	sub := newSeqSubscriber(unique(t, "sub"), "load/#", tally, a.Addr(), h.Addr())
	subDone := sub.start(t, ctx, 0, nil)

	// The kill comes after at least one checkpoint of the subscriber's session.
	_, sum := publishThroughFault(t, ctx, tally, 4, "load", dialer(h.Addr()), 125, 7*time.Second, 4500*time.Millisecond, func() { a.Kill(t) })
	cancel()
	<-subDone
	sub.mu.Lock()
	connects, fresh := sub.connects, sub.noSessionResume
	sub.mu.Unlock()
	t.Logf("fault-sigkill-subscriber: %s subscriber_connects=%d", sum, connects)
	if sum.lost != 0 {
		t.Errorf("%d acknowledged messages never delivered, first: %v", sum.lost, sum.firstLost)
	}
	if connects < 2 {
		t.Errorf("the subscriber never reconnected: the killed replica was not its own")
	}
	if fresh != 0 {
		t.Errorf("%d reconnects found no session: the persistent session was lost with its replica", fresh)
	}
}

// TestFault_RedisRestartUnderQoS1Load restarts Redis (a kill: every
// connection drops and the new server starts empty) while publishers on
// replica A send QoS 1 messages to a subscriber on replica B. Whatever was
// acknowledged before, during or after the restart must arrive
// [MQTT-4.3.2-2]; publishers re-send what was not acknowledged.
func TestFault_RedisRestartUnderQoS1Load(t *testing.T) {
	rs := redistest.Start(t)
	pubSrv := startRedisReplica(t, rs.URL(), "node-a")
	subSrv := startRedisReplica(t, rs.URL(), "node-b")

	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	tally := newSeqTally()
	sub := newSeqSubscriber(unique(t, "sub"), "blip/#", tally, subSrv.Addr())
	subDone := sub.start(t, ctx, 0, nil)

	_, sum := publishThroughFault(t, ctx, tally, 2, "blip", dialer(pubSrv.Addr()), 250, 6*time.Second, 2*time.Second, func() { rs.Restart(t) })
	cancel()
	<-subDone

	t.Logf("fault-redis-restart: %s", sum)
	if sum.lost != 0 {
		t.Errorf("%d acknowledged messages never delivered, first: %v", sum.lost, sum.firstLost)
	}
	if sum.acked == 0 || sum.sent != sum.acked {
		t.Errorf("sent %d distinct messages, acknowledged %d", sum.sent, sum.acked)
	}
}

// TestFault_PersistentSubscriberHopsReplicas moves a persistent-session
// subscriber to the next of three replicas every second while 10,000 QoS 1
// messages are published. Its session follows it: each reconnect finds the
// session present [MQTT-3.2.2-2], messages published while it moved are
// delivered [MQTT-3.1.2-5], and unacknowledged ones are re-sent
// [MQTT-4.4.0-1]. A message it had acknowledged must not come again.
func TestFault_PersistentSubscriberHopsReplicas(t *testing.T) {
	const total = 10000
	d := startReplicas(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	tally := newSeqTally()
	topic := unique(t, "hop")
	sub := newSeqSubscriber(unique(t, "sub"), topic+"/#", tally, d.servers[1].Addr(), d.servers[2].Addr(), d.servers[0].Addr())
	hop := make(chan struct{})
	subDone := sub.start(t, ctx, time.Second, hop)

	pub := newSeqPublisher("pub", topic+"/x", dialer(d.servers[0].Addr()))
	pub.window = 64
	start := time.Now()
	err := pub.run(ctx, total, 1100, start.Add(30*time.Second))
	elapsed := time.Since(start)
	close(hop)
	if err != nil {
		t.Errorf("publisher: %v", err)
	}
	sum := awaitDelivery([]*seqPublisher{pub}, tally, 20*time.Second)
	cancel()
	<-subDone

	sub.mu.Lock()
	hops, noResume, dupAfterAck, lastErr := sub.connects-1, sub.noSessionResume, sub.dupAfterAck, sub.lastErr
	sub.mu.Unlock()
	t.Logf("fault-hop: %s hops=%d duplicates_of_acknowledged=%d publish_seconds=%.1f", sum, hops, dupAfterAck, elapsed.Seconds())
	if sum.acked != total {
		t.Errorf("%d of %d messages acknowledged", sum.acked, total)
	}
	if sum.lost != 0 || sum.delivered != total {
		t.Errorf("delivered %d distinct of %d; %d acknowledged never delivered, first: %v", sum.delivered, total, sum.lost, sum.firstLost)
	}
	if hops < 5 {
		t.Errorf("subscriber hopped %d times, want at least 5 (last error: %v)", hops, lastErr)
	}
	if noResume != 0 {
		t.Errorf("%d of %d reconnects found no session (CONNACK session present 0) [MQTT-3.2.2-2]", noResume, hops)
	}
	if dupAfterAck != 0 || sum.lost != 0 {
		for _, ts := range d.servers {
			st := ts.Stats()
			t.Logf("replica %s: takeovers=%d offline_queue_dropped=%d replays=%d deduplicated=%d",
				ts.NodeID(), st["bridge_takeovers"], st["bridge_offline_queue_dropped"], st["bridge_replays"], st["bridge_deduplicated"])
		}
		sub.mu.Lock()
		for i, v := range sub.visits {
			t.Logf("connection %d to %s: received=%d redelivered_acknowledged=%d (first %s, last %s) dup_flag=%d",
				i, v.addr, v.received, v.dups, v.firstDup, v.lastDup, v.dup1)
		}
		sub.mu.Unlock()
	}
	if dupAfterAck != 0 {
		t.Errorf("%d messages delivered again after the subscriber had acknowledged them: QoS 1 re-sends only unacknowledged messages [MQTT-4.4.0-1]", dupAfterAck)
	}
}

// TestFault_RedisDownKeepsServing stops Redis under two replicas. They stay
// alive, report not-ready, and hold back the PUBACK of a QoS 1 PUBLISH they
// cannot store [MQTT-4.3.2-2]; once Redis is back on the same address they
// become ready again and carry messages without a restart.
func TestFault_RedisDownKeepsServing(t *testing.T) {
	rs := redistest.Start(t)
	a := startRedisReplica(t, rs.URL(), "node-a", "-http", "127.0.0.1:0")
	b := startRedisReplica(t, rs.URL(), "node-b", "-http", "127.0.0.1:0")
	replicas := []*testServer{a, b}
	topic := unique(t, "down")

	pub := mqtttest.Dial(t, a.Addr())
	pub.MustConnect(&packets.Connect{ClientID: unique(t, "pub"), CleanSession: true, KeepAlive: 60})

	rs.Stop()
	for _, ts := range replicas {
		waitHTTPStatus(t, ts.HTTPAddr(), "/readyz", http.StatusServiceUnavailable, 10*time.Second)
	}
	pub.Send(&packets.Publish{QoS: 1, PacketID: 7, Topic: topic, Payload: []byte("while down")})
	switch p, err := pub.Read(time.Second); {
	case err == nil:
		if _, ok := p.(*packets.Puback); ok {
			t.Fatalf("PUBACK for a QoS 1 PUBLISH while Redis is down: the message was not stored [MQTT-4.3.2-2]")
		}
		t.Fatalf("unexpected %T %+v while Redis is down", p, p)
	default:
		t.Logf("QoS 1 PUBLISH while Redis is down: no PUBACK within 1s (%v)", err)
	}
	for _, ts := range replicas {
		if code, err := httpStatus(ts.HTTPAddr(), "/healthz"); err != nil || code != http.StatusOK {
			t.Fatalf("/healthz of %s while Redis is down = %d, %v; want 200: a replica must stay alive", ts.NodeID(), code, err)
		}
	}

	rs.Restart(t)
	for _, ts := range replicas {
		waitHTTPStatus(t, ts.HTTPAddr(), "/readyz", http.StatusOK, 10*time.Second)
	}
	sub := mqtttest.Dial(t, b.Addr())
	sub.MustConnect(&packets.Connect{ClientID: unique(t, "sub"), CleanSession: true, KeepAlive: 60})
	sub.Send(&packets.Subscribe{PacketID: 1, Subscriptions: []packets.Subscription{{Filter: topic, QoS: 1}}})
	pub2 := mqtttest.Dial(t, a.Addr())
	pub2.MustConnect(&packets.Connect{ClientID: unique(t, "pub2"), CleanSession: true, KeepAlive: 60})
	// The PUBLISH held back during the outage may be accepted once Redis is
	// back and reach the subscriber at any point, even before its SUBACK,
	// which the server may send after matching PUBLISHes [MQTT-3.8.4].
	subacked, gotAfter, heldBack := false, false, 0
	for !subacked || !gotAfter {
		switch p := sub.Next().(type) {
		case *packets.Suback:
			if len(p.ReturnCodes) != 1 || p.ReturnCodes[0] != 1 {
				t.Fatalf("SUBACK after Redis returned = %v, want [1]", p.ReturnCodes)
			}
			subacked = true
			pub2.PublishQoS1(1, topic, "after")
		case *packets.Publish:
			if p.QoS > 0 {
				sub.Send(&packets.Puback{PacketID: p.PacketID})
			}
			switch string(p.Payload) {
			case "after":
				gotAfter = true
			case "while down":
				heldBack++
			default:
				t.Fatalf("unexpected message %q", p.Payload)
			}
		default:
			t.Fatalf("got %T %+v, want SUBACK or PUBLISH", p, p)
		}
	}
	t.Logf("message published while Redis was down delivered %d times after it returned", heldBack)
	t.Logf("fault-redis-down: readyz 503 while down, 200 after restart; QoS 1 round trip after restart ok")
}

// waitHTTPStatus polls GET addr+path until it answers want, failing after d.
func waitHTTPStatus(t testing.TB, addr, path string, want int, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	var code int
	var err error
	for time.Now().Before(deadline) {
		code, err = httpStatus(addr, path)
		if err == nil && code == want {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("GET %s%s = %d, %v after %s; want %d", addr, path, code, err, d, want)
}

// metricValue reads one counter from GET /metrics, summed over label sets.
func metricValue(t testing.TB, addr, name string) float64 {
	t.Helper()
	code, body, err := httpGet(addr, "/metrics")
	if err != nil || code != http.StatusOK {
		t.Fatalf("GET /metrics = %d, %v", code, err)
	}
	var sum float64
	found := false
	for _, line := range strings.Split(string(body), "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		sum += v
		found = true
	}
	if !found {
		t.Fatalf("no metric %s in /metrics", name)
	}
	return sum
}

// TestFault_SlowSubscriberDoesNotStallOthers has one subscriber stop reading
// its socket while 20,000 messages of 1 KiB flow to it and to a normal
// subscriber on the same replica. The normal one gets every message; the
// slow one's QoS 0 copies overflow its bounded queue and are dropped and
// counted. Publishes are QoS 1 so the count at the normal subscriber is
// exact; the slow subscriber asked for QoS 0, so its copies are QoS 0
// [MQTT-3.8.4-6] and may be dropped.
func TestFault_SlowSubscriberDoesNotStallOthers(t *testing.T) {
	const total = 20000
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
		defer cancel()
		slow := mqtttest.Dial(t, d.sub().Addr())
		slow.MustConnect(&packets.Connect{ClientID: unique(t, "slow"), CleanSession: true, KeepAlive: 0})
		if codes := slow.Subscribe(1, packets.Subscription{Filter: "slow/#", QoS: 0}); len(codes) != 1 || codes[0] != 0 {
			t.Fatalf("slow SUBACK = %v, want [0]", codes)
		}
		// From here on the slow subscriber never reads again.

		tally := newSeqTally()
		normal := newSeqSubscriber(unique(t, "normal"), "slow/#", tally, d.sub().Addr())
		normalDone := normal.start(t, ctx, 0, nil)

		pub := newSeqPublisher(unique(t, "pub"), "slow/x", dialer(d.pub().Addr()))
		pub.padding = 1024
		pub.window = 64
		start := time.Now()
		// A bounded rate: the normal subscriber must keep up by itself, or
		// its own queue overflows, which would say nothing about the
		// stalled one. Its bound is the byte bound (8 MiB, about 8,000 of
		// these messages), not the default 1,000 messages: on a loaded
		// machine (two cores, -race, other tests) the test's own client
		// was seen starved for the quarter second 1,000 messages take to
		// arrive, so the count bound measured the machine. The stalled
		// subscriber's 20 MiB still overflows the byte bound.
		if err := pub.run(ctx, total, 4000, start.Add(time.Minute)); err != nil {
			t.Errorf("publisher: %v", err)
		}
		sum := awaitDelivery([]*seqPublisher{pub}, tally, 20*time.Second)
		elapsed := time.Since(start)
		cancel()
		<-normalDone
		dropped := metricValue(t, d.subServer(t).HTTPAddr(), "mqtt_dropped_qos0_queue_full_total")
		droppedQoS12 := metricValue(t, d.subServer(t).HTTPAddr(), "mqtt_dropped_qos12_queue_full_total")
		t.Logf("fault-slow-subscriber(%s): %s dropped_qos0_queue_full=%.0f dropped_qos12_queue_full=%.0f seconds=%.1f",
			d.name, sum, dropped, droppedQoS12, elapsed.Seconds())
		if sum.acked != total || sum.lost != 0 || sum.delivered != total {
			t.Errorf("normal subscriber got %d distinct of %d (acked %d, lost %d, first lost %v, QoS 1/2 queue drops %.0f) while another subscriber stalled",
				sum.delivered, total, sum.acked, sum.lost, sum.firstLost, droppedQoS12)
		}
		if dropped <= 0 {
			t.Errorf("mqtt_dropped_qos0_queue_full_total = %v, want > 0: the stalled subscriber's queue must be bounded", dropped)
		}
	}, "-http", "127.0.0.1:0", "-max-queued-messages", "20000")
}
