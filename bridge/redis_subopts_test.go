package bridge

import (
	"context"
	"maps"
	"testing"

	"github.com/bridgemq/server/internal/redistest"
)

// The stored value of a subscription: its QoS alone when it has no
// options, as every earlier version wrote, else the 5.0 options byte and
// the Subscription Identifier.
func TestSubscriptionEncoding_PlainQoSUnchanged(t *testing.T) {
	tests := []struct {
		value string
		qos   byte
		opts  SubOptions
	}{
		{"0", 0, SubOptions{}},
		{"1", 1, SubOptions{}},
		{"2", 2, SubOptions{}},
		{"5", 1, SubOptions{NoLocal: true}},
		{"10", 2, SubOptions{RetainAsPublished: true}},
		{"32", 0, SubOptions{RetainHandling: 2}},
		{"29:7", 1, SubOptions{NoLocal: true, RetainAsPublished: true, RetainHandling: 1, ID: 7}},
		{"1:268435455", 1, SubOptions{ID: 268435455}},
	}
	for _, tt := range tests {
		t.Run(tt.value, func(t *testing.T) {
			if got := encodeSubscription(tt.qos, tt.opts); got != tt.value {
				t.Fatalf("encode = %q, want %q", got, tt.value)
			}
			qos, opts, err := decodeSubscription(tt.value)
			if err != nil || qos != tt.qos || opts != tt.opts {
				t.Fatalf("decode = %d %+v %v, want %d %+v", qos, opts, err, tt.qos, tt.opts)
			}
		})
	}
	for _, bad := range []string{"", "3", "-1", "x", "48", "64", "1:", "1:0", "1:x", "256"} {
		if _, _, err := decodeSubscription(bad); err == nil {
			t.Errorf("decode(%q) accepted", bad)
		}
	}
}

// [MQTT-3.3.4-3] a persistent session's subscription options and
// identifiers are stored in Redis with its subscriptions and come back
// with the session on another replica; a subscription without options is
// stored as its QoS alone.
func TestRedis_SubscriptionOptionsResumeOnAnotherReplica(t *testing.T) {
	srv := redistest.Start(t)
	a := newTestRedis(t, srv, "a")
	b := newTestRedis(t, srv, "b")
	s1 := &sink{}
	attach(t, a, "o1", s1, false)
	opts := SubOptions{NoLocal: true, RetainHandling: 1, ID: 42}
	if err := a.SubscribeMany(context.Background(), "o1", []Subscription{
		{Filter: "x/#", QoS: 1, Options: opts}, {Filter: "plain", QoS: 2}}); err != nil {
		t.Fatal(err)
	}
	stored, err := newClient(t, srv).HGetAll(context.Background(), a.Redis.subKey("o1")).Result()
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]string{"x/#": "21:42", "plain": "2"}; !maps.Equal(stored, want) {
		t.Fatalf("stored %v, want %v", stored, want)
	}
	detach(t, a, "o1", s1, &StoredSession{})
	got := attach(t, b, "o1", &sink{}, false)
	if got == nil {
		t.Fatal("session not found on the other replica")
	}
	if want := map[string]SubOptions{"x/#": opts}; !maps.Equal(got.Options, want) || got.Subscriptions["plain"] != 2 {
		t.Fatalf("options %v subscriptions %v, want %v and plain at QoS 2", got.Options, got.Subscriptions, want)
	}
}
