package session

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/bridgemq/server/bridge"
	"github.com/bridgemq/server/packets"
)

// pagingBridge is the in-process bridge with its RetainedMessages observed:
// the largest page read, and optionally a gate each read waits at.
type pagingBridge struct {
	*bridge.Memory
	mu      sync.Mutex
	maxPage int
	reads   int
	entered chan struct{} // receives once per read, when set
	release chan struct{} // each read waits for it, when set
}

func (b *pagingBridge) RetainedMessages(ctx context.Context, topics []string) ([]*bridge.Message, error) {
	b.mu.Lock()
	b.maxPage = max(b.maxPage, len(topics))
	b.reads++
	b.mu.Unlock()
	if b.entered != nil {
		b.entered <- struct{}{}
	}
	if b.release != nil {
		<-b.release
	}
	return b.Memory.RetainedMessages(ctx, topics)
}

// servedSession is a started session on one end of a pipe, attached to br
// as clientID, whose other end the test reads.
func servedSession(t *testing.T, br bridge.Bridge, maxInflight, maxQueued int) (*Session, net.Conn) {
	t.Helper()
	a, b := net.Pipe()
	t.Cleanup(func() { _ = a.Close(); _ = b.Close() })
	env := &Env{
		Bridge: br,
		Auth:   AllowAll{},
		Stats:  &Stats{},
		Log:    slog.New(slog.NewTextHandler(io.Discard, nil)),
		Config: Config{MaxInflight: maxInflight, MaxQueued: maxQueued, WriteTimeout: 10 * time.Second},
	}
	s := New(a, env)
	s.clientID = "sub"
	if _, err := br.Attach(context.Background(), s.clientID, s, true, nil); err != nil {
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
	br := &pagingBridge{Memory: bridge.NewMemory(bridge.MemoryOptions{})}
	ctx := context.Background()
	for i := range n {
		if err := br.Publish(ctx, &bridge.Message{Topic: fmt.Sprintf("r/%d", i), Payload: []byte("v"), QoS: 1, Retain: true}); err != nil {
			t.Fatal(err)
		}
	}
	s, client := servedSession(t, br, 5, maxQueued)
	s.sendRetained(ctx, packets.Subscription{Filter: "r/#", QoS: 1})

	seen := make(map[string]bool, n)
	maxPending := 0
	r := packets.NewReader(client, 0)
	_ = client.SetReadDeadline(time.Now().Add(10 * time.Second))
	for len(seen) < n {
		p, err := r.ReadPacket()
		if err != nil {
			t.Fatalf("after %d messages: %v", len(seen), err)
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
