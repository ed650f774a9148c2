package main

// End-to-end tests of retained messages for new subscriptions: every
// matching one is sent however many there are [MQTT-3.3.1-6], and a topic
// never goes back in time after its retained message.

import (
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bridgemq/server/internal/mqtttest"
	"github.com/bridgemq/server/packets"
)

// publishRetainedBulk publishes one retained QoS 1 message on each topic
// through a raw connection to ts, many PUBLISH packets per write, and waits
// for every PUBACK.
func publishRetainedBulk(t testing.TB, ts endpoint, topicNames []string) {
	t.Helper()
	c := mqtttest.Dial(t, ts.Addr())
	c.MustConnect(&packets.Connect{ClientID: unique(t, "bulk"), CleanSession: true, KeepAlive: 60})
	const chunk = 200
	var buf []byte
	for start := 0; start < len(topicNames); start += chunk {
		buf = buf[:0]
		end := min(start+chunk, len(topicNames))
		for i := start; i < end; i++ {
			var err error
			buf, err = packets.Append(buf, &packets.Publish{QoS: 1, Retain: true, PacketID: uint16(i-start) + 1,
				Topic: topicNames[i], Payload: []byte(strconv.Itoa(i))})
			if err != nil {
				t.Fatalf("encode: %v", err)
			}
		}
		c.Write(buf)
		for range end - start {
			mqtttest.Expect[*packets.Puback](c)
		}
	}
}

// fenceOn returns a function that publishes a live message through pub on a
// fresh topic and waits until a subscriber on sub has it: everything pub
// accepted before has then reached sub's replica (the retained index
// included).
func fenceOn(t testing.TB, pub, sub endpoint) func() {
	topic := unique(t, "fence")
	watcher := mqtttest.Dial(t, sub.Addr())
	watcher.MustConnect(&packets.Connect{ClientID: unique(t, "watch"), CleanSession: true, KeepAlive: 60})
	watcher.Subscribe(1, packets.Subscription{Filter: topic, QoS: 0})
	p := mqtttest.Dial(t, pub.Addr())
	p.MustConnect(&packets.Connect{ClientID: unique(t, "fencepub"), CleanSession: true, KeepAlive: 60})
	return func() {
		t.Helper()
		p.PublishQoS1(1, topic, "fence")
		if m := mqtttest.Expect[*packets.Publish](watcher); m.Topic != topic {
			t.Fatalf("fence: got %q", m.Topic)
		}
	}
}

// Issue 5: with more retained messages than -max-queued-messages, a new
// subscription to a filter matching all of them gets every one, each with
// RETAIN=1 [MQTT-3.3.1-6] [MQTT-3.3.1-8], none counted as dropped for a full
// queue. (Before, a single node delivered a third of them and a replica
// -max-queued-messages.)
func TestRetained_AllSentBeyondMaxQueued_MQTT_3_3_1_6(t *testing.T) {
	const n = 20_000
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		base := unique(t, "t")
		names := make([]string, n)
		for i := range names {
			names[i] = fmt.Sprintf("%s/%d/%d", base, i%100, i)
		}
		fence := fenceOn(t, d.pub(), d.sub())
		publishRetainedBulk(t, d.pub(), names)
		fence()

		c := mqtttest.Dial(t, d.sub().Addr())
		c.MustConnect(&packets.Connect{ClientID: unique(t, "sub"), CleanSession: true, KeepAlive: 60})
		c.Subscribe(1, packets.Subscription{Filter: base + "/#", QoS: 1})
		seen := make(map[string]bool, n)
		deadline := time.Now().Add(30 * time.Second)
		for len(seen) < n && time.Now().Before(deadline) {
			p, err := c.Read(waitTimeout)
			if err != nil {
				break
			}
			m, ok := p.(*packets.Publish)
			if !ok {
				t.Fatalf("got %T, want PUBLISH", p)
			}
			if !m.Retain {
				t.Fatalf("message on %q without RETAIN=1 [MQTT-3.3.1-8]", m.Topic)
			}
			if seen[m.Topic] {
				t.Fatalf("retained message on %q sent twice", m.Topic)
			}
			seen[m.Topic] = true
			c.Send(&packets.Puback{PacketID: m.PacketID})
		}
		if len(seen) != n {
			t.Fatalf("received %d of %d retained messages [MQTT-3.3.1-6]", len(seen), n)
		}
		c.ExpectSilent(quietWindow)
		for _, ts := range d.servers {
			if got := ts.Stats()["dropped_qos12_queue_full"]; got != 0 {
				t.Errorf("%d messages counted as dropped for a full queue", got)
			}
		}
	}, "-max-queued-messages", "100")
}

// counterPublisher publishes an increasing counter (from 1), retained, at QoS 1 on
// topic through its own connection to ts, chunk PUBLISH packets per write,
// until stop is called; stop returns how many it published and the first
// error it met.
func counterPublisher(t testing.TB, ts endpoint, topic string, chunk int) (stop func() (int, error)) {
	t.Helper()
	c := mqtttest.Dial(t, ts.Addr())
	conn := c.Conn
	c.MustConnect(&packets.Connect{ClientID: unique(t, "counter"), CleanSession: true, KeepAlive: 60})
	var quit atomic.Bool
	done := make(chan struct{})
	var sent int
	var runErr error
	go func() {
		defer close(done)
		var buf []byte
		for !quit.Load() {
			buf = buf[:0]
			for i := range chunk {
				buf, _ = packets.Append(buf, &packets.Publish{QoS: 1, Retain: true, PacketID: uint16(i + 1),
					Topic: topic, Payload: []byte(strconv.Itoa(sent + i + 1))})
			}
			_ = conn.SetDeadline(time.Now().Add(waitTimeout))
			if _, err := conn.Write(buf); err != nil {
				runErr = fmt.Errorf("publish: %w", err)
				return
			}
			for range chunk {
				p, err := c.ReadPacket()
				if err != nil {
					runErr = fmt.Errorf("read PUBACK: %w", err)
					return
				}
				if _, ok := p.(*packets.Puback); !ok {
					runErr = fmt.Errorf("got %T, want PUBACK", p)
					return
				}
			}
			sent += chunk
		}
	}()
	return func() (int, error) {
		quit.Store(true)
		<-done
		return sent, runErr
	}
}

// Issue 6: while a publisher keeps replacing the retained message of a topic
// with an increasing counter, a new subscriber (on the other replica) gets
// the retained message [MQTT-3.3.1-6] and then only live messages newer than
// it; live messages that arrive before it are not newer than it either: the
// topic never goes back in time for one publisher [MQTT-4.6.0-5]. Before the
// fix, with the publisher pipelining 32 messages, about one round in four
// on two replicas got a live message older than the retained one, and on a
// single node about one in four got the retained message's live copy after
// it and a few percent a newer live message before it.
func TestRetained_LiveNeverOlderThanRetained_MQTT_3_3_1_6(t *testing.T) {
	const rounds = 300
	const liveAfter = 3 // live messages read after the retained one, per round
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		topic := unique(t, "t")
		// The topic has a retained message on the subscribers' replica
		// before the rounds start.
		fence := fenceOn(t, d.pub(), d.sub())
		publishRetainedBulk(t, d.pub(), []string{topic})
		fence()
		stop := counterPublisher(t, d.pub(), topic, 32)
		var older, repeated, before int
		var examples []string
		start := time.Now()
		for round := range rounds {
			c := mqtttest.Dial(t, d.sub().Addr())
			c.MustConnect(&packets.Connect{ClientID: unique(t, "sub"), CleanSession: true, KeepAlive: 60})
			// The server may send matching PUBLISH packets before the SUBACK
			// (MQTT 3.1.1 section 3.8.4).
			c.Send(&packets.Subscribe{PacketID: 1, Subscriptions: []packets.Subscription{{Filter: topic, QoS: 0}}})
			retained := -1
			var seq []string
			last := -1
			var isOlder, isRepeated bool
			for n := 0; n < liveAfter; {
				p := c.Next()
				if _, ok := p.(*packets.Suback); ok {
					continue
				}
				m, ok := p.(*packets.Publish)
				if !ok {
					t.Fatalf("got %T, want PUBLISH or SUBACK", p)
				}
				v, err := strconv.Atoi(string(m.Payload))
				if err != nil {
					t.Fatalf("payload %q: %v", m.Payload, err)
				}
				seq = append(seq, fmt.Sprintf("%d%s", v, map[bool]string{true: "r", false: ""}[m.Retain]))
				if len(seq) > 10_000 {
					t.Fatalf("round %d: no retained message among %d", round, len(seq))
				}
				switch {
				case m.Retain && retained >= 0:
					t.Fatalf("round %d: a second retained message %v", round, seq)
				case m.Retain:
					retained = v
					if last > v {
						before++ // a live message newer than the retained one went first
						examples = append(examples, fmt.Sprint(seq))
					}
				case retained < 0:
					last = v
				default:
					n++
					isOlder = isOlder || v < retained
					isRepeated = isRepeated || v == retained
				}
			}
			if isOlder {
				examples = append(examples, fmt.Sprint(seq))
			}
			if isOlder {
				older++
			}
			if isRepeated {
				repeated++
			}
			_ = c.Conn.Close()
		}
		sent, err := stop()
		if err != nil {
			t.Fatalf("publisher: %v", err)
		}
		t.Logf("%d rounds in %v while %d messages were published: %d with a live message older than the retained one, %d with its live copy after it, %d with a newer live message before it",
			rounds, time.Since(start).Round(time.Millisecond), sent, older, repeated, before)
		if len(examples) > 5 {
			examples = examples[:5]
		}
		// The retained message's own live copy after it is not going back
		// in time, and it is owed: it matched a subscription established
		// before it was published [MQTT-3.3.1-9].
		if older+before > 0 {
			t.Errorf("topic went back in time in %d of %d rounds (older %d, newer first %d), e.g. %v",
				older+before, rounds, older, before, examples)
		}
	})
}

// Retained messages owed to a persistent session's new subscription and
// not yet sent when it disconnects are pending transmission
// [MQTT-3.1.2-5]: they arrive on its return, with RETAIN=1 [MQTT-3.3.1-8].
func TestRetained_OwedToSessionThatLeftSurviveWithRetainFlag_MQTT_3_3_1_8(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		const n = 300
		prefix := unique(t, "owed")
		pub := mqtttest.Dial(t, d.pub().Addr())
		pub.MustConnect(&packets.Connect{ClientID: unique(t, "pub"), CleanSession: true, KeepAlive: 30})
		for i := range n {
			pub.Send(&packets.Publish{QoS: 1, PacketID: uint16(i + 1), Retain: true, Topic: fmt.Sprintf("%s/%d", prefix, i), Payload: []byte("r")})
		}
		for range n {
			mqtttest.Expect[*packets.Puback](pub)
		}
		id := unique(t, "sub")
		s := mqtttest.Dial(t, d.sub().Addr())
		s.MustConnect(&packets.Connect{ClientID: id, KeepAlive: 30})
		// SUBSCRIBE and DISCONNECT in one write: the retained messages
		// cannot all have been sent when the connection ends.
		sub, err := packets.Append(nil, &packets.Subscribe{PacketID: 1, Subscriptions: []packets.Subscription{{Filter: prefix + "/#", QoS: 1}}})
		if err != nil {
			t.Fatal(err)
		}
		s.Write(append(sub, 0xe0, 0)) // DISCONNECT
		_, before := s.ExpectClosed(waitTimeout)
		got := map[string]bool{}
		for _, p := range before {
			if pp, ok := p.(*packets.Publish); ok {
				got[pp.Topic] = true
			}
		}
		s = mqtttest.Dial(t, d.sub().Addr())
		if ack := s.MustConnect(&packets.Connect{ClientID: id, KeepAlive: 30}); !ack.SessionPresent {
			t.Fatal("session not present")
		}
		// A live message on the session's own filter comes after every
		// message its stored state held.
		pub.PublishQoS1(uint16(n+1), prefix+"/fence", "fence")
		for _, p := range s.PublishesUntil("fence") {
			if !p.Retain {
				t.Fatalf("%s arrived with RETAIN=0 after the session's return, want 1 [MQTT-3.3.1-8]", p.Topic)
			}
			got[p.Topic] = true
		}
		if len(got) != n {
			t.Fatalf("%d of %d retained messages arrived across the disconnect (%d before it)", len(got), n, len(before))
		}
	})
}
