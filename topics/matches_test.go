package topics

import "testing"

// matchMap returns m's keys and their QoS as a map.
func matchMap[K comparable](m *Matches[K]) map[K]byte {
	out := make(map[K]byte, len(m.List()))
	for _, e := range m.List() {
		out[e.Key] = e.QoS
	}
	return out
}

// TestMatches_OnceEachAtTheHighestQoS_MQTT_3_3_5_1: a key matched through
// several subscriptions is listed once, at the highest QoS among them,
// below and above the count where Matches builds its index, and a reset
// Matches starts empty.
func TestMatches_OnceEachAtTheHighestQoS_MQTT_3_3_5_1(t *testing.T) {
	type add struct {
		k int
		q byte
	}
	var many []add
	wantMany := map[int]byte{}
	for i := range 3 * linearMatches {
		many = append(many, add{i, 0})
	}
	for i := range 3 * linearMatches { // each again, higher: through the index
		many = append(many, add{i, byte(i % 3)})
		wantMany[i] = byte(i % 3)
	}
	tests := []struct {
		name string
		adds []add
		want map[int]byte
	}{
		{"one", []add{{0, 1}}, map[int]byte{0: 1}},
		{"repeat, higher later", []add{{0, 0}, {1, 1}, {0, 2}}, map[int]byte{0: 2, 1: 1}},
		{"repeat, lower later", []add{{0, 2}, {0, 1}, {0, 0}}, map[int]byte{0: 2}},
		{"past the index threshold", many, wantMany},
		{"after the index, small again", []add{{5, 1}, {5, 0}}, map[int]byte{5: 1}},
	}
	var m Matches[int] // reused across cases, as the broker's pool reuses it
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, a := range tt.adds {
				m.add(a.k, a.q)
			}
			if got := matchMap(&m); len(m.List()) != len(tt.want) || len(got) != len(tt.want) {
				t.Fatalf("%d entries (%d distinct), want %d", len(m.List()), len(got), len(tt.want))
			}
			for _, e := range m.List() {
				if q, ok := tt.want[e.Key]; !ok || q != e.QoS {
					t.Errorf("key %d at QoS %d, want %d (listed: %v)", e.Key, e.QoS, q, ok)
				}
			}
			m.Reset()
			if len(m.List()) != 0 || m.indexed {
				t.Fatalf("after Reset: %d entries, indexed %v", len(m.List()), m.indexed)
			}
		})
	}
}
