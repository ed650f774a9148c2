package broker

import (
	"fmt"
	"testing"
)

// TestMatchSet_OnceEachAtTheHighestGrant_MQTT_3_3_5_1: a client matched
// through several subscriptions is listed once, at the highest QoS among
// them, below and above the count where the set builds its index, and a
// reset set starts empty.
func TestMatchSet_OnceEachAtTheHighestGrant_MQTT_3_3_5_1(t *testing.T) {
	clients := make([]*client, 3*linearMatches)
	for i := range clients {
		clients[i] = &client{id: fmt.Sprint(i)}
	}
	type add struct {
		c int
		q byte
	}
	tests := []struct {
		name string
		adds []add
		want map[int]byte
	}{
		{"one", []add{{0, 1}}, map[int]byte{0: 1}},
		{"repeat, higher later", []add{{0, 0}, {1, 1}, {0, 2}}, map[int]byte{0: 2, 1: 1}},
		{"repeat, lower later", []add{{0, 2}, {0, 1}, {0, 0}}, map[int]byte{0: 2}},
	}
	many := []add{}
	wantMany := map[int]byte{}
	for i := range clients {
		many = append(many, add{i, 0})
		wantMany[i] = 0
	}
	for i := range clients { // each again, higher: through the index
		many = append(many, add{i, byte(i % 3)})
		wantMany[i] = byte(i % 3)
	}
	tests = append(tests, struct {
		name string
		adds []add
		want map[int]byte
	}{"past the index threshold", many, wantMany})

	var m matchSet // reused across cases, as the pool reuses it
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, a := range tt.adds {
				m.add(clients[a.c], a.q)
			}
			if len(m.list) != len(tt.want) {
				t.Fatalf("%d entries, want %d", len(m.list), len(tt.want))
			}
			for _, e := range m.list {
				var i int
				fmt.Sscan(e.c.id, &i)
				if q, ok := tt.want[i]; !ok || q != e.granted {
					t.Errorf("client %d granted %d, want %d (listed: %v)", i, e.granted, q, ok)
				}
			}
			m.reset()
			if len(m.list) != 0 || m.indexed {
				t.Fatalf("after reset: %d entries, indexed %v", len(m.list), m.indexed)
			}
		})
	}
}
