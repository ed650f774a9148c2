package mqtttest

import (
	"testing"
	"time"

	"github.com/bridgemq/server/packets"
)

// Watcher is a subscriber that counts the PUBLISH packets it receives by
// topic, acknowledging QoS 1: enough to check that a will arrived once and
// another never did.
type Watcher struct {
	c   *Client
	got map[string]int
}

// NewWatcher counts what c, already connected and subscribed, receives.
func NewWatcher(c *Client) *Watcher { return &Watcher{c: c, got: map[string]int{}} }

// Watch connects a clean session as clientID to addr, subscribes it to
// filter at QoS 1 and returns its Watcher.
func Watch(t testing.TB, addr, clientID, filter string) *Watcher {
	t.Helper()
	c := Dial(t, addr)
	c.MustConnect(&packets.Connect{ClientID: clientID, CleanSession: true, KeepAlive: 60})
	c.Subscribe(1, packets.Subscription{Filter: filter, QoS: 1})
	return NewWatcher(c)
}

// ReadFor reads for d, or until the connection ends, and returns the counts
// so far (the Watcher's own map).
func (w *Watcher) ReadFor(d time.Duration) map[string]int {
	until := time.Now().Add(d)
	for time.Now().Before(until) {
		pk, err := w.c.Read(time.Until(until))
		if err != nil {
			break
		}
		if p, ok := pk.(*packets.Publish); ok {
			w.got[p.Topic]++
			if p.QoS == 1 {
				w.c.Send(&packets.Puback{PacketID: p.PacketID})
			}
		}
	}
	return w.got
}

// WaitTopic reads until a message on topic has arrived, and fails the test
// if none has within d.
func (w *Watcher) WaitTopic(t testing.TB, topic string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for w.got[topic] == 0 && time.Now().Before(deadline) {
		w.ReadFor(100 * time.Millisecond)
	}
	if w.got[topic] == 0 {
		t.Fatalf("no %s within %s (got %v)", topic, d, w.got)
	}
}
