package session

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/bridgemq/server/broker"
	"github.com/bridgemq/server/packets"
)

// pagingBridge is the in-process bridge with its RetainedMessages observed:
// the largest page read, and optionally a gate each read waits at.
type pagingBridge struct {
	*broker.Broker
	mu      sync.Mutex
	maxPage int
	// maxPageBytes is the largest sum of payloads one read returned.
	maxPageBytes int
	reads        int
	entered      chan struct{} // receives once per read, when set
	release      chan struct{} // each read waits for it, when set
	// free is how many reads go through without entered and release: the
	// first page is read before the SUBACK, synchronously.
	free int
}

func (b *pagingBridge) RetainedMessages(ctx context.Context, topics []string, maxBytes int) ([]*broker.Message, int, error) {
	b.mu.Lock()
	free := b.free > 0
	b.free--
	b.mu.Unlock()
	if b.entered != nil && !free {
		b.entered <- struct{}{}
	}
	if b.release != nil && !free {
		<-b.release
	}
	msgs, n, err := b.Broker.RetainedMessages(ctx, topics, maxBytes)
	size := 0
	for _, m := range msgs {
		size += len(m.Payload)
	}
	b.mu.Lock()
	b.maxPage = max(b.maxPage, len(msgs))
	b.maxPageBytes = max(b.maxPageBytes, size)
	b.reads++
	b.mu.Unlock()
	return msgs, n, err
}

// idOf returns a message id as newMessageID makes them: an 8-byte process
// prefix, then a counter.
func idOf(prefix byte, counter uint64) broker.ID {
	var id broker.ID
	id[0] = prefix
	binary.BigEndian.PutUint64(id[8:], counter)
	return id
}

// subscribeRetained starts the retained messages of a new subscription as
// onSubscribe does.
func subscribeRetained(ctx context.Context, s *Session, g packets.Subscription) {
	s.sendSubackAndRetained(ctx, 1, []packets.ReasonCode{packets.GrantedQoS(g.QoS)}, []packets.Subscription{g}, 0, "")
}

// servedSession is a started session on one end of a pipe, attached to br
// as clientID, whose other end the test reads.
func servedSession(t *testing.T, br Broker, maxInflight, maxQueued int) (*Session, net.Conn) {
	t.Helper()
	a, b := net.Pipe()
	t.Cleanup(func() { _ = a.Close(); _ = b.Close() })
	env := &Env{
		Broker: br,
		Auth:   AllowAll{},
		Stats:  &Stats{},
		Log:    slog.New(slog.NewTextHandler(io.Discard, nil)),
		Config: Config{MaxInflight: maxInflight, MaxQueued: maxQueued, WriteTimeout: 10 * time.Second},
	}
	s := New(a, env)
	s.clientID = "sub"
	if _, err := br.Attach(context.Background(), s.clientID, "", s, broker.CleanSession(true), nil); err != nil {
		t.Fatal(err)
	}
	s.started = true
	t.Cleanup(func() {
		s.stop(nil)
		s.writers.Wait()
		s.feeders.Wait()
	})
	return s, b
}

// [MQTT-3.3.1-6] every matching retained message is sent, however many
// there are, while the pending queue never holds more than half of
// MaxQueued of them, reads of the bridge never exceed that either, and none
// is counted as dropped for a full queue (issue 5).
func TestSendRetained_AllSentInBoundedPages_MQTT_3_3_1_6(t *testing.T) {
	const n, maxQueued = 3000, 40
	br := &pagingBridge{Broker: broker.NewMemory(broker.MemoryOptions{})}
	ctx := context.Background()
	for i := range n {
		if err := br.Publish(ctx, &broker.Message{Topic: fmt.Sprintf("r/%d", i), Payload: []byte("v"), QoS: 1, Retain: true}); err != nil {
			t.Fatal(err)
		}
	}
	s, client := servedSession(t, br, 5, maxQueued)
	subscribeRetained(ctx, s, packets.Subscription{Filter: "r/#", QoS: 1})

	seen := make(map[string]bool, n)
	maxPending := 0
	r := packets.NewReader(client, 0)
	_ = client.SetReadDeadline(time.Now().Add(10 * time.Second))
	for len(seen) < n {
		p, err := r.ReadPacket()
		if err != nil {
			t.Fatalf("after %d messages: %v", len(seen), err)
		}
		if _, ok := p.(*packets.Suback); ok {
			continue
		}
		m := p.(*packets.Publish)
		if !m.Retain || seen[m.Topic] {
			t.Fatalf("got %q retain=%v (seen before: %v)", m.Topic, m.Retain, seen[m.Topic])
		}
		seen[m.Topic] = true
		s.mu.Lock()
		maxPending = max(maxPending, len(s.pending))
		s.mu.Unlock()
		s.onPuback(m.PacketID) // the inflight window paces the feed
	}
	if maxPending > maxQueued/2 {
		t.Errorf("pending queue reached %d retained messages, want at most %d", maxPending, maxQueued/2)
	}
	br.mu.Lock()
	defer br.mu.Unlock()
	if br.maxPage > maxQueued/2 || br.reads < n/(maxQueued/2) {
		t.Errorf("%d reads, the largest of %d topics: want pages of at most %d", br.reads, br.maxPage, maxQueued/2)
	}
	if d := s.env.Stats.DroppedQueueFull.Load() + s.env.Stats.DroppedQoS0.Load(); d != 0 {
		t.Errorf("%d retained messages counted as dropped for a full queue", d)
	}
}

// Issue 6: after a recently published retained message is queued, live
// messages on its topic that are not newer (its own live copy, an older
// message still on its way) are dropped; newer ones and other topics pass.
// Ids from one process compare by counter, others by publish time.
func TestEnqueue_DropsLiveNotNewerThanRetained_Issue6(t *testing.T) {
	s := newTestSession(t, 10, 100)
	now := time.Now()
	retained := &broker.Message{ID: idOf(1, 10), Topic: "t", Payload: []byte("r"), QoS: 1, Retain: true, Time: now}
	s.mu.Lock()
	s.queueRetainedLocked(&feed{qos: 1}, []*broker.Message{retained})
	s.mu.Unlock()

	live := func(id broker.ID, topic string, at time.Time) *broker.Message {
		return &broker.Message{ID: id, Topic: topic, Payload: []byte("l"), QoS: 1, Time: at}
	}
	tests := []struct {
		name string
		msg  *broker.Message
		kept bool
	}{
		// [MQTT-3.3.1-9]: it matched an established subscription.
		{"its own live copy", live(idOf(1, 10), "t", now), true},
		{"older, same process", live(idOf(1, 9), "t", now.Add(time.Second)), false},
		{"newer, same process", live(idOf(1, 11), "t", now.Add(-time.Second)), true},
		{"older, other process", live(idOf(2, 99), "t", now.Add(-time.Millisecond)), false},
		{"same millisecond, other process", live(idOf(2, 1), "t", now), true},
		{"newer, other process", live(idOf(2, 1), "t", now.Add(time.Millisecond)), true},
		{"older, other topic", live(idOf(1, 1), "u", now.Add(-time.Hour)), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s.mu.Lock()
			before := len(s.pending)
			s.mu.Unlock()
			s.Deliver(tt.msg, 1)
			s.mu.Lock()
			kept := len(s.pending) > before
			s.mu.Unlock()
			if kept != tt.kept {
				t.Errorf("queued = %v, want %v", kept, tt.kept)
			}
		})
	}
	if got := s.env.Stats.DroppedStale.Load(); got != 2 {
		t.Errorf("DroppedStale = %d, want 2", got)
	}

	// Past retainedGuard the mark is forgotten.
	s.mu.Lock()
	mk := s.retainedMarks["t"]
	mk.queued = now.Add(-2 * retainedGuard)
	s.retainedMarks["t"] = mk
	s.marksSweep = now.Add(-time.Second)
	s.mu.Unlock()
	if s.Deliver(live(idOf(1, 8), "t", now), 1); s.retainedMarks != nil || s.env.Stats.DroppedStale.Load() != 2 {
		t.Errorf("a mark past retainedGuard still dropped a live message, or was kept")
	}

	// A retained message published long ago has nothing older on its way:
	// it sets no guard.
	s2 := newTestSession(t, 10, 100)
	old := &broker.Message{ID: idOf(1, 10), Topic: "t", Payload: []byte("r"), Retain: true, Time: now.Add(-2 * retainedFresh)}
	s2.mu.Lock()
	s2.queueRetainedLocked(&feed{qos: 1}, []*broker.Message{old})
	s2.mu.Unlock()
	if s2.retainedMarks != nil {
		t.Error("a retained message published long ago was marked")
	}
}

// Issue 6, the other direction: a live message that arrives while the page
// holding its topic's retained message is being read waits, and goes after
// the retained message; an older one that arrives meanwhile is dropped.
func TestSendRetained_LiveDuringPageReadGoesAfterRetained_Issue6(t *testing.T) {
	br := &pagingBridge{Broker: broker.NewMemory(broker.MemoryOptions{}),
		entered: make(chan struct{}), release: make(chan struct{})}
	ctx := context.Background()
	now := time.Now()
	retained := &broker.Message{ID: idOf(1, 10), Topic: "t", Payload: []byte("10"), QoS: 1, Retain: true, Time: now}
	if err := br.Publish(ctx, retained); err != nil {
		t.Fatal(err)
	}
	s := newTestSession(t, 10, 100) // not started: the queue stays observable
	s.env.Broker = br
	// The first page is read before the SUBACK, by the SUBSCRIBE's own
	// goroutine; live messages arrive while it reads.
	subscribed := make(chan struct{})
	go func() {
		defer close(subscribed)
		subscribeRetained(ctx, s, packets.Subscription{Filter: "t", QoS: 1})
	}()
	<-br.entered
	s.Deliver(&broker.Message{ID: idOf(1, 11), Topic: "t", Payload: []byte("11"), QoS: 1, Time: now}, 1)
	s.Deliver(&broker.Message{ID: idOf(1, 9), Topic: "t", Payload: []byte("9"), QoS: 1, Time: now}, 1)
	s.mu.Lock()
	early := len(s.pending)
	s.mu.Unlock()
	if early != 0 {
		t.Fatalf("%d live messages queued during the read, want them held", early)
	}
	close(br.release)
	<-subscribed
	var got []string
	for _, o := range queueWhenFed(t, s) {
		got = append(got, fmt.Sprintf("%s/retain=%v", o.msg.Payload, o.retain))
	}
	if want := "[10/retain=true 11/retain=false]"; fmt.Sprint(got) != want {
		t.Fatalf("queue %v, want %s", got, want)
	}
}

// queueWhenFed waits until s's feeder has finished and returns the pending
// queue.
func queueWhenFed(t *testing.T, s *Session) []outgoing {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		s.mu.Lock()
		feeding := s.feeding
		pending := append([]outgoing(nil), s.pending...)
		s.mu.Unlock()
		if !feeding {
			return pending
		}
		if time.Now().After(deadline) {
			t.Fatal("the feeder did not finish")
		}
		time.Sleep(time.Millisecond)
	}
}

// [MQTT-3.10.4-2] once a subscription is removed, no more of its retained
// messages are added, and live messages held during the read go out.
func TestOnUnsubscribe_StopsRetainedFeed_MQTT_3_10_4_2(t *testing.T) {
	br := &pagingBridge{Broker: broker.NewMemory(broker.MemoryOptions{}),
		entered: make(chan struct{}), release: make(chan struct{}), free: 1}
	ctx := context.Background()
	// 300 retained messages: the first page (retainedPage, 256) is read
	// with the SUBACK; the feeder is in the middle of reading the rest.
	for i := range 300 {
		if err := br.Publish(ctx, &broker.Message{Topic: fmt.Sprintf("t/%d", i), Payload: []byte("r"), QoS: 1, Retain: true}); err != nil {
			t.Fatal(err)
		}
	}
	s := newTestSession(t, 10, 2000) // not started: the queue stays observable
	s.env.Broker = br
	s.mu.Lock()
	s.allocMaps()
	s.subs["t/#"] = 1
	s.mu.Unlock()
	subscribeRetained(ctx, s, packets.Subscription{Filter: "t/#", QoS: 1})
	<-br.entered
	s.Deliver(&broker.Message{Topic: "other", Payload: []byte("live"), QoS: 1}, 1)
	if err := s.onUnsubscribe(ctx, &packets.Unsubscribe{PacketID: 1, Filters: []string{"t/#"}}); err != nil {
		t.Fatal(err)
	}
	close(br.release)
	retained, live := 0, 0
	for _, o := range queueWhenFed(t, s) {
		if o.retain {
			retained++
		} else if string(o.msg.Payload) == "live" {
			live++
		}
	}
	if retained != retainedPage || live != 1 {
		t.Fatalf("queue holds %d retained and %d live, want the first page's %d and 1: no retained message after UNSUBSCRIBE", retained, live, retainedPage)
	}
}

// Issue "Bounded under abuse" item 3: a page of retained messages is
// bounded by bytes as well as by count, so a subscription over many large
// retained messages holds about two pages of payload at once, however many
// messages -max-queued-messages allows; every one is still sent
// [MQTT-3.3.1-6].
func TestSendRetained_PagesBoundedByBytes_MQTT_3_3_1_6(t *testing.T) {
	const n, size, maxQueued = 60, 300 << 10, 1000
	br := &pagingBridge{Broker: broker.NewMemory(broker.MemoryOptions{})}
	ctx := context.Background()
	payload := make([]byte, size)
	for i := range n {
		if err := br.Publish(ctx, &broker.Message{Topic: fmt.Sprintf("big/%d", i), Payload: payload, QoS: 0, Retain: true}); err != nil {
			t.Fatal(err)
		}
	}
	s, client := servedSession(t, br, 20, maxQueued)
	subscribeRetained(ctx, s, packets.Subscription{Filter: "big/#", QoS: 0})

	r := packets.NewReader(client, 0)
	_ = client.SetReadDeadline(time.Now().Add(10 * time.Second))
	maxPendingBytes := 0
	for got := 0; got < n; got++ {
		p, err := r.ReadPacket()
		if err != nil {
			t.Fatalf("after %d messages: %v", got, err)
		}
		if _, ok := p.(*packets.Suback); ok {
			got--
			continue
		}
		if m := p.(*packets.Publish); !m.Retain || len(m.Payload) != size {
			t.Fatalf("got %q retain=%v, %d bytes", m.Topic, m.Retain, len(m.Payload))
		}
		s.mu.Lock()
		b := 0
		for _, o := range s.pending {
			b += len(o.msg.Payload)
		}
		s.mu.Unlock()
		maxPendingBytes = max(maxPendingBytes, b)
	}
	br.mu.Lock()
	defer br.mu.Unlock()
	if br.maxPageBytes > retainedPageBytes {
		t.Errorf("a page held %d payload bytes, want at most %d", br.maxPageBytes, retainedPageBytes)
	}
	if limit := 2*retainedPageBytes + size; maxPendingBytes > limit {
		t.Errorf("pending queue held %d payload bytes, want at most %d", maxPendingBytes, limit)
	}
	t.Logf("%d reads, largest page %d bytes, pending at most %d bytes", br.reads, br.maxPageBytes, maxPendingBytes)
}
