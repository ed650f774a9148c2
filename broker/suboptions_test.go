package broker

import (
	"context"
	"maps"
	"testing"
)

// The core keeps each subscription's 5.0 options with the client's
// subscriptions: a plain resubscribe or an UNSUBSCRIBE removes them, a
// SUBSCRIBE undone restores them, and the stored session hands them back
// on reconnect (section 3.8.3.1, [MQTT-3.3.4-3]).
func TestSubscribe_OptionsKeptWithTheSession(t *testing.T) {
	ctx := context.Background()
	nl := SubOptions{NoLocal: true, ID: 3}
	rap := SubOptions{RetainAsPublished: true, RetainHandling: 2, ID: 9}
	tests := []struct {
		name  string
		steps func(t *testing.T, b *Broker, fc *failingCluster)
		want  map[string]SubOptions
	}{
		{"options recorded", func(t *testing.T, b *Broker, _ *failingCluster) {
			mustSubscribe(t, b, Subscription{Filter: "a", QoS: 1, Options: nl}, Subscription{Filter: "b", QoS: 1})
		}, map[string]SubOptions{"a": nl}},
		{"a plain resubscribe drops them", func(t *testing.T, b *Broker, _ *failingCluster) {
			mustSubscribe(t, b, Subscription{Filter: "a", QoS: 1, Options: nl})
			mustSubscribe(t, b, Subscription{Filter: "a", QoS: 1})
		}, nil},
		{"unsubscribe drops them", func(t *testing.T, b *Broker, _ *failingCluster) {
			mustSubscribe(t, b, Subscription{Filter: "a", QoS: 1, Options: nl}, Subscription{Filter: "b", QoS: 1, Options: rap})
			if err := b.Unsubscribe(ctx, "c", "a"); err != nil {
				t.Fatal(err)
			}
		}, map[string]SubOptions{"b": rap}},
		{"an undone subscribe restores them", func(t *testing.T, b *Broker, fc *failingCluster) {
			mustSubscribe(t, b, Subscription{Filter: "a", QoS: 1, Options: nl})
			fc.fail = true
			if err := b.SubscribeMany(ctx, "c", []Subscription{{Filter: "a", QoS: 2, Options: rap}, {Filter: "new", QoS: 1, Options: rap}}); err == nil {
				t.Fatal("subscribe routed through a failing cluster")
			}
			fc.fail = false
		}, map[string]SubOptions{"a": nl}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := &memStore{sessions: make(map[string]*memSession), retained: make(map[string]*Message)}
			fc := &failingCluster{loopback: loopback{store: st}}
			b := New(st, fc, Options{})
			st.queue = b.queue
			s := &sink{}
			mustAttach(t, b, "c", "", s, false)
			tt.steps(t, b, fc)
			if err := b.Detach(ctx, "c", s, &StoredSession{}); err != nil {
				t.Fatal(err)
			}
			got := mustAttach(t, b, "c", "", &sink{}, false)
			if got == nil || !maps.Equal(got.Options, tt.want) {
				t.Fatalf("stored session options %+v, want %v", got, tt.want)
			}
		})
	}
}

func mustSubscribe(t *testing.T, b *Broker, subs ...Subscription) {
	t.Helper()
	if err := b.SubscribeMany(context.Background(), "c", subs); err != nil {
		t.Fatal(err)
	}
}
