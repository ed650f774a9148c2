package session

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/bridgemq/server/broker"
	"github.com/bridgemq/server/packets"
)

// newTestSession builds a session over one end of a pipe, without serving it.
func newTestSession(t *testing.T, maxInflight, maxQueued int) *Session {
	t.Helper()
	a, b := net.Pipe()
	t.Cleanup(func() { _ = a.Close(); _ = b.Close() })
	env := &Env{
		Broker: broker.NewMemory(broker.MemoryOptions{}),
		Auth:   AllowAll{},
		Stats:  &Stats{},
		Log:    slog.New(slog.NewTextHandler(io.Discard, nil)),
		Config: Config{MaxInflight: maxInflight, MaxQueued: maxQueued, WriteTimeout: time.Second, ConnectTimeout: time.Second},
	}
	return New(a, env)
}

func message(topic string, qos byte) *broker.Message {
	return &broker.Message{Topic: topic, Payload: []byte("p"), QoS: qos}
}

// decodeAll decodes every packet in buf.
func decodeAll(t *testing.T, buf []byte) []packets.Packet {
	t.Helper()
	r := packets.NewReader(bytes.NewReader(buf), 0)
	var out []packets.Packet
	for {
		p, err := r.ReadPacket()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("decode written bytes: %v", err)
		}
		out = append(out, p)
	}
}

func TestAllocateID_NeverZeroNeverInUse_MQTT_2_3_1_1(t *testing.T) {
	tests := []struct {
		name   string
		next   uint16
		inUse  []uint16
		wantID uint16
	}{
		{"first id is 1", 0, nil, 1},
		{"skips ids in flight", 3, []uint16{4, 5}, 6},
		{"wraps past 65535 without using 0", 65535, nil, 1},
		{"wraps and skips ids in flight", 65534, []uint16{65535, 1, 2}, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestSession(t, 10, 10)
			s.nextID = tt.next
			s.allocMaps()
			for _, id := range tt.inUse {
				s.inflight[id] = inflight{}
			}
			if got := s.allocateID(); got != tt.wantID {
				t.Fatalf("allocateID() = %d, want %d", got, tt.wantID)
			}
		})
	}
}

func TestFill_InflightWindowBoundsQoS1AndLetsQoS0Through(t *testing.T) {
	tests := []struct {
		name        string
		maxInflight int
		qos         []byte
		wantSent    int
		wantPending int
	}{
		{"window of 2 holds back the third QoS 1", 2, []byte{1, 1, 1}, 2, 1},
		{"QoS 0 needs no slot but keeps order behind a blocked QoS 1", 1, []byte{0, 1, 1, 0}, 2, 2},
		{"all QoS 0", 1, []byte{0, 0, 0}, 3, 0},
		{"QoS 2 counts against the window", 2, []byte{2, 1, 2}, 2, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestSession(t, tt.maxInflight, 100)
			for i, q := range tt.qos {
				s.enqueue(outgoing{msg: message(string(rune('a'+i)), q), qos: q})
			}
			got := decodeAll(t, s.fill(nil, false))
			if len(got) != tt.wantSent {
				t.Fatalf("sent %d packets, want %d", len(got), tt.wantSent)
			}
			if len(s.pending) != tt.wantPending {
				t.Fatalf("%d still pending, want %d", len(s.pending), tt.wantPending)
			}
			for i, p := range got {
				pub := p.(*packets.Publish)
				if pub.Topic != string(rune('a'+i)) {
					t.Errorf("packet %d has topic %q: order not kept [MQTT-4.6.0-6]", i, pub.Topic)
				}
				if (pub.QoS > 0) != (pub.PacketID != 0) {
					t.Errorf("packet %d: QoS %d with packet id %d", i, pub.QoS, pub.PacketID)
				}
			}
		})
	}
}

func TestEnqueue_BoundedQueueDropsAndCounts(t *testing.T) {
	s := newTestSession(t, 10, 3)
	for i := 0; i < 5; i++ {
		s.enqueue(outgoing{msg: message("t", 1), qos: 1})
	}
	s.enqueue(outgoing{msg: message("t", 0), qos: 0})
	if len(s.pending) != 3 {
		t.Fatalf("pending %d, want 3", len(s.pending))
	}
	if got := s.env.Stats.DroppedQueueFull.Load(); got != 2 {
		t.Errorf("DroppedQueueFull = %d, want 2", got)
	}
	if got := s.env.Stats.DroppedQoS0.Load(); got != 1 {
		t.Errorf("DroppedQoS0 = %d, want 1", got)
	}
}

// -max-queued-bytes counts a message's 5.0 properties as well as its topic
// and payload (issue 8): messages of a 10-byte payload and 1,000 User
// Properties are queued only while their size, properties included, fits.
func TestEnqueue_QueuedBytesCountProperties(t *testing.T) {
	props := &broker.Properties{UserProperties: make([]broker.UserProperty, 1000)}
	for i := range props.UserProperties {
		props.UserProperties[i] = broker.UserProperty{Name: "k", Value: "v"}
	}
	m := &broker.Message{Topic: "t", Payload: []byte("0123456789"), QoS: 1, Properties: props}
	s := newTestSession(t, 10, 1000)
	s.env.Config.MaxQueuedBytes = 5 * m.Size()
	for range 20 {
		s.enqueue(outgoing{msg: m, qos: 1})
	}
	if len(s.pending) != 5 {
		t.Fatalf("pending %d, want 5 (%d bytes each against a bound of %d)", len(s.pending), m.Size(), s.env.Config.MaxQueuedBytes)
	}
	if got := s.env.Stats.DroppedQueueFull.Load(); got != 15 {
		t.Errorf("DroppedQueueFull = %d, want 15", got)
	}
}

// A message arriving after the connection ended, before its state was
// taken for Detach, is refused rather than dropped as queue-full: it belongs
// to the stored session, whose offline queue keeps the newest messages.
// (CI once saw a persistent session find the oldest five of ten messages
// instead of the newest: the first five had joined the closed connection's
// queue and filled it.)
func TestDeliver_AfterConnectionEndedLeavesMessageToStoredSession(t *testing.T) {
	s := newTestSession(t, 10, 3)
	for range 3 {
		if !s.Deliver(message("t", 1), 1) {
			t.Fatal("Deliver refused a message on an open connection")
		}
	}
	s.stop(errClientDisconnect)
	for _, qos := range []byte{1, 0} {
		if s.Deliver(message("t", qos), qos) {
			t.Errorf("QoS %d: Deliver accepted a message after the connection ended", qos)
		}
	}
	if got := s.env.Stats.DroppedQueueFull.Load() + s.env.Stats.DroppedQoS0.Load(); got != 0 {
		t.Errorf("%d messages dropped as queue-full after the connection ended; want them left to the stored session", got)
	}
	if st, _ := s.snapshot(); len(st.Queued) != 3 {
		t.Errorf("snapshot holds %d queued messages, want the 3 accepted before the end", len(st.Queued))
	}
}

func TestSnapshot_KeepsSendOrderAndRefusesLaterDeliveries(t *testing.T) {
	s := newTestSession(t, 10, 100)
	for _, topic := range []string{"a", "b", "c"} {
		s.enqueue(outgoing{msg: message(topic, 1), qos: 1})
	}
	_ = s.fill(nil, false) // a, b, c in flight with ids 1, 2, 3
	s.onPuback(2)
	s.enqueue(outgoing{msg: message("d", 1), qos: 1})
	s.enqueue(outgoing{msg: message("q0", 0), qos: 0})
	st, _ := s.snapshot()
	var inflight []string
	for _, in := range st.Inflight {
		inflight = append(inflight, in.Message.Topic)
	}
	if len(inflight) != 2 || inflight[0] != "a" || inflight[1] != "c" {
		t.Errorf("inflight %v, want [a c] in send order", inflight)
	}
	if len(st.Queued) != 1 || st.Queued[0].Message.Topic != "d" {
		t.Errorf("queued %+v, want only d (QoS 0 is not kept)", st.Queued)
	}
	if s.Deliver(message("late", 1), 1) {
		t.Error("Deliver accepted a message after the snapshot; the bridge would not keep it")
	}
}

func TestRestore_ResendsInflightWithDupAndQueuesStoredAheadOfLive_MQTT_4_4_0_1(t *testing.T) {
	s := newTestSession(t, 10, 100)
	s.enqueue(outgoing{msg: message("live", 1), qos: 1}) // delivered between Attach and restore
	s.restore(&broker.StoredSession{
		Subscriptions: map[string]byte{"#": 1},
		Inflight: []broker.Inflight{
			{PacketID: 7, Delivery: broker.Delivery{Message: message("unacked", 1), QoS: 1}},
			{PacketID: 9, Delivery: broker.Delivery{Message: message("released", 2), QoS: 2}, Released: true},
		},
		Queued:          []broker.Delivery{{Message: message("queued", 1), QoS: 1}},
		AwaitingRelease: []uint16{42},
	})
	got := decodeAll(t, s.fill(nil, false))
	if len(got) != 4 {
		t.Fatalf("wrote %d packets, want 4: %#v", len(got), got)
	}
	if p, ok := got[0].(*packets.Publish); !ok || !p.Dup || p.PacketID != 7 || p.Topic != "unacked" {
		t.Errorf("first packet %#v, want PUBLISH id 7 with DUP=1", got[0])
	}
	if p, ok := got[1].(*packets.Pubrel); !ok || p.PacketID != 9 {
		t.Errorf("second packet %#v, want PUBREL 9 [MQTT-4.3.3-1]", got[1])
	}
	for i, want := range []string{"queued", "live"} {
		p, ok := got[2+i].(*packets.Publish)
		if !ok || p.Topic != want || p.Dup {
			t.Errorf("packet %d %#v, want fresh PUBLISH %q", 2+i, got[2+i], want)
		} else if p.PacketID == 7 || p.PacketID == 9 {
			t.Errorf("packet id %d reused while in flight [MQTT-2.3.1-2]", p.PacketID)
		}
	}
	if _, ok := s.awaitingRel[42]; !ok {
		t.Error("inbound QoS 2 id awaiting PUBREL was not restored [MQTT-4.3.3-2]")
	}
}

// panicAuth is an Authorizer with a bug: it panics on every CONNECT.
type panicAuth struct{ AllowAll }

func (panicAuth) Authenticate(bool, string, bool, []byte) packets.ReasonCode { panic("authorizer bug") }

func TestServe_PanicClosesThatConnectionOnly(t *testing.T) {
	client, server := net.Pipe()
	defer client.Close()
	env := &Env{
		Broker: broker.NewMemory(broker.MemoryOptions{}),
		Auth:   panicAuth{},
		Stats:  &Stats{},
		Log:    slog.New(slog.NewTextHandler(io.Discard, nil)),
		Config: Config{MaxInflight: 10, MaxQueued: 10, WriteTimeout: time.Second, ConnectTimeout: time.Second},
	}
	done := make(chan struct{})
	s := New(server, env)
	go s.Serve(context.Background(), func() { close(done) })
	connect, _ := packets.Append(nil, &packets.Connect{ProtocolVersion: packets.Version311, CleanSession: true, ClientID: "p"})
	if _, err := client.Write(connect); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("a panicking connection did not end")
	}
	if _, err := client.Read(make([]byte, 1)); err == nil {
		t.Error("connection still open after a panic")
	}
	if n := env.Stats.Connections.Load(); n != 0 {
		t.Errorf("%d connections counted after the panic, want 0", n)
	}
}

// denyTopics is an Authorizer whose read rules refuse the listed topics.
type denyTopics struct {
	AllowAll
	denied map[string]bool
}

func (a denyTopics) CanRead(_, _, topic string) bool { return !a.denied[topic] }
func (denyTopics) ChecksReads() bool                 { return true }

// Issue 1: messages reaching the queue without Deliver (a stored session's
// queue, a replay, messages held back during it) and unacknowledged
// messages re-sent on reconnect meet the read ACL when they are written.
func TestFill_ReadACLAppliesToRestoredAndQueuedMessages_Issue1(t *testing.T) {
	s := newTestSession(t, 10, 100)
	s.env.Auth = denyTopics{denied: map[string]bool{"public/secret": true}}
	s.restore(&broker.StoredSession{
		Subscriptions: map[string]byte{"public/#": 1},
		Inflight: []broker.Inflight{
			{PacketID: 3, Delivery: broker.Delivery{Message: message("public/secret", 1), QoS: 1}},
			{PacketID: 4, Delivery: broker.Delivery{Message: message("public/ok", 1), QoS: 1}},
			{PacketID: 5, Delivery: broker.Delivery{Message: message("public/secret", 2), QoS: 2}, Released: true},
		},
		Queued: []broker.Delivery{
			{Message: message("public/secret", 1), QoS: 1},
			{Message: message("public/ok", 1), QoS: 1},
		},
	})
	// A message put in the queue directly, as the retained feeder and a
	// replay do, is filtered as well.
	s.enqueue(outgoing{msg: message("public/secret", 0), qos: 0})
	var sent []string
	for _, p := range decodeAll(t, s.fill(nil, false)) {
		switch p := p.(type) {
		case *packets.Publish:
			sent = append(sent, p.Topic)
		case *packets.Pubrel:
			sent = append(sent, "PUBREL")
		}
	}
	want := []string{"public/ok", "PUBREL", "public/ok"}
	if fmt.Sprint(sent) != fmt.Sprint(want) {
		t.Fatalf("sent %v, want %v: a denied topic went out", sent, want)
	}
	if _, ok := s.inflight[3]; ok {
		t.Error("denied unacknowledged message kept in flight")
	}
	if got := s.env.Stats.DeliveryDenied.Load(); got != 3 {
		t.Errorf("DeliveryDenied = %d, want 3", got)
	}
}
