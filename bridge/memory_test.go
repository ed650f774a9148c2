package bridge

import (
	"context"
	"testing"
	"time"

	"github.com/bridgemq/server/broker"
	"github.com/bridgemq/server/internal/brokertest"
)

// topicsOf returns the topics of ds, in order.
func topicsOf(ds []brokertest.Delivery[Message]) []string {
	var out []string
	for _, d := range ds {
		out = append(out, d.Message.Topic)
	}
	return out
}

func msg(topic string, qos byte) *Message {
	return &Message{Topic: topic, Payload: []byte(topic), QoS: qos, Time: time.Now()}
}

func TestMemory_DeliversOnceAtHighestGrantedQoS_MQTT_3_3_5_1(t *testing.T) {
	tests := []struct {
		name    string
		subs    map[string]byte
		publish *Message
		wantQoS []byte
	}{
		{"single filter caps QoS", map[string]byte{"a/b": 1}, msg("a/b", 2), []byte{1}},
		{"message QoS caps grant", map[string]byte{"a/b": 2}, msg("a/b", 0), []byte{0}},
		{"overlapping filters: one copy at the highest", map[string]byte{"a/+": 1, "a/#": 2, "#": 0}, msg("a/b", 2), []byte{2}},
		{"no match", map[string]byte{"b/#": 2}, msg("a/b", 1), nil},
		{"dollar topic not matched by #", map[string]byte{"#": 2}, msg("$SYS/x", 1), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := broker.NewMemory(broker.MemoryOptions{})
			ctx := context.Background()
			r := &sink{}
			if _, err := m.Attach(ctx, "c", "", r, broker.CleanSession(true), nil); err != nil {
				t.Fatal(err)
			}
			for f, q := range tt.subs {
				if err := m.Subscribe(ctx, "c", f, q); err != nil {
					t.Fatal(err)
				}
			}
			if err := m.Publish(ctx, tt.publish); err != nil {
				t.Fatal(err)
			}
			var got []byte
			for _, d := range r.Deliveries() {
				got = append(got, d.QoS)
			}
			if string(got) != string(tt.wantQoS) {
				t.Fatalf("delivered QoS %v, want %v", got, tt.wantQoS)
			}
		})
	}
}

func TestMemory_PersistentSessionQueuesWhileOffline_MQTT_3_1_2_4(t *testing.T) {
	ctx := context.Background()
	m := broker.NewMemory(broker.MemoryOptions{MaxQueued: 3})
	r := &sink{}
	if _, err := m.Attach(ctx, "p", "", r, broker.CleanSession(false), nil); err != nil {
		t.Fatal(err)
	}
	if err := m.Subscribe(ctx, "p", "t/#", 2); err != nil {
		t.Fatal(err)
	}
	if err := m.Detach(ctx, "p", r, &StoredSession{}); err != nil {
		t.Fatal(err)
	}
	_ = m.Publish(ctx, msg("t/0", 0)) // QoS 0 is not queued for an offline session
	for _, topic := range []string{"t/1", "t/2", "t/3", "t/4"} {
		_ = m.Publish(ctx, msg(topic, 1))
	}
	r2 := &sink{}
	st, err := m.Attach(ctx, "p", "", r2, broker.CleanSession(false), nil)
	if err != nil {
		t.Fatal(err)
	}
	if st == nil {
		t.Fatal("no stored session returned for a persistent client")
	}
	if q, ok := st.Subscriptions["t/#"]; !ok || q != 2 {
		t.Errorf("subscriptions %v, want t/# at QoS 2", st.Subscriptions)
	}
	var topics []string
	for _, d := range st.Queued {
		topics = append(topics, d.Message.Topic)
	}
	if want := []string{"t/2", "t/3", "t/4"}; !equal(topics, want) {
		t.Errorf("queued %v, want %v (bounded at 3, the oldest dropped)", topics, want)
	}
	if got := m.Stats()["offline_queue_dropped"]; got != 1 {
		t.Errorf("offline_queue_dropped = %d, want 1", got)
	}
	_ = m.Publish(ctx, msg("t/live", 1))
	if got := topicsOf(r2.Deliveries()); !equal(got, []string{"t/live"}) {
		t.Errorf("live delivery after reattach %v", got)
	}
}

func TestMemory_CleanSessionDiscardsStoredState_MQTT_3_1_2_6(t *testing.T) {
	ctx := context.Background()
	m := broker.NewMemory(broker.MemoryOptions{})
	r := &sink{}
	_, _ = m.Attach(ctx, "c", "", r, broker.CleanSession(false), nil)
	_ = m.Subscribe(ctx, "c", "x", 1)
	_ = m.Detach(ctx, "c", r, &StoredSession{})
	r2 := &sink{}
	st, err := m.Attach(ctx, "c", "", r2, broker.CleanSession(true), nil)
	if err != nil || st != nil {
		t.Fatalf("clean attach returned %v, %v; want nil, nil", st, err)
	}
	_ = m.Publish(ctx, msg("x", 1))
	if len(topicsOf(r2.Deliveries())) != 0 {
		t.Errorf("clean session still subscribed to x: %v", topicsOf(r2.Deliveries()))
	}
}

func TestMemory_TakeOverEndsPreviousConnection_MQTT_3_1_4_2(t *testing.T) {
	ctx := context.Background()
	m := broker.NewMemory(broker.MemoryOptions{})
	old := &sink{}
	old.OnTakeOver = func() { _ = m.Detach(ctx, "dup", old, &StoredSession{}) }
	if _, err := m.Attach(ctx, "dup", "", old, broker.CleanSession(false), nil); err != nil {
		t.Fatal(err)
	}
	_ = m.Subscribe(ctx, "dup", "x", 1)
	next := &sink{}
	st, err := m.Attach(ctx, "dup", "", next, broker.CleanSession(false), nil)
	if err != nil {
		t.Fatal(err)
	}
	if old.TakenOver() != 1 {
		t.Errorf("old connection taken over %d times, want 1", old.TakenOver())
	}
	if st == nil || st.Subscriptions["x"] != 1 {
		t.Errorf("session not handed over: %+v", st)
	}
	// A late Detach by the old connection must not disturb the new one.
	_ = m.Detach(ctx, "dup", old, nil)
	_ = m.Publish(ctx, msg("x", 1))
	if got := topicsOf(next.Deliveries()); !equal(got, []string{"x"}) {
		t.Errorf("new connection got %v, want [x]", got)
	}
}

func TestMemory_DeliveryRefusedDuringDetachIsKept(t *testing.T) {
	ctx := context.Background()
	m := broker.NewMemory(broker.MemoryOptions{})
	r := &sink{}
	_, _ = m.Attach(ctx, "c", "", r, broker.CleanSession(false), nil)
	_ = m.Subscribe(ctx, "c", "x", 1)
	r.Refuse() // the connection has snapshotted its state
	_ = m.Publish(ctx, msg("x", 1))
	_ = m.Detach(ctx, "c", r, &StoredSession{})
	st, _ := m.Attach(ctx, "c", "", &sink{}, broker.CleanSession(false), nil)
	if st == nil || len(st.Queued) != 1 || st.Queued[0].Message.Topic != "x" {
		t.Fatalf("message refused between snapshot and Detach was lost: %+v", st)
	}
}

func TestMemory_RetainedStoreAndClear_MQTT_3_3_1_10(t *testing.T) {
	ctx := context.Background()
	m := broker.NewMemory(broker.MemoryOptions{})
	for _, tp := range []string{"r/a", "r/b", "r/c/d", "other"} {
		mm := msg(tp, 1)
		mm.Retain = true
		_ = m.Publish(ctx, mm)
	}
	clear := &Message{Topic: "r/b", Retain: true}
	_ = m.Publish(ctx, clear)
	got, _ := m.Retained(ctx, "r/#")
	var topics []string
	for _, g := range got {
		topics = append(topics, g.Topic)
	}
	if len(topics) != 2 || !contains(topics, "r/a") || !contains(topics, "r/c/d") {
		t.Errorf("retained for r/# = %v, want r/a and r/c/d", topics)
	}
}

func TestMemory_QueuedMessagesExpire(t *testing.T) {
	ctx := context.Background()
	m := broker.NewMemory(broker.MemoryOptions{MessageExpiry: time.Minute})
	r := &sink{}
	_, _ = m.Attach(ctx, "c", "", r, broker.CleanSession(false), nil)
	_ = m.Subscribe(ctx, "c", "x", 1)
	_ = m.Detach(ctx, "c", r, &StoredSession{})
	old := msg("x", 1)
	old.Time = time.Now().Add(-2 * time.Minute)
	_ = m.Publish(ctx, old)
	_ = m.Publish(ctx, msg("x", 1))
	st, _ := m.Attach(ctx, "c", "", &sink{}, broker.CleanSession(false), nil)
	if st == nil || len(st.Queued) != 1 {
		t.Fatalf("want 1 unexpired queued message, got %+v", st)
	}
	if got := m.Stats()["offline_queue_expired"]; got != 1 {
		t.Errorf("offline_queue_expired = %d, want 1", got)
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
