package topics

// linearMatches is how many keys a Matches dedupes by a linear scan before
// it builds an index: a topic matches one or a few subscribers far more
// often than many.
const linearMatches = 16

// Matched is one key a topic matches, at the highest QoS among its matching
// subscriptions.
type Matched[K comparable] struct {
	Key K
	QoS byte
}

// Matches collects the keys Trie.Subscribers finds, each once with its
// highest QoS [MQTT-3.3.5-1], in the order the trie found them. It is a
// slice, not a map: ranging over a map starts at a random place (a call to
// the runtime's random generator per message on the delivery path), and
// hashing every key costs more than scanning a handful. Reset it to reuse
// its storage.
type Matches[K comparable] struct {
	list    []Matched[K]
	index   map[K]int // positions in list, once it outgrew linearMatches
	indexed bool
}

// add records k, matched through a subscription granting q.
func (m *Matches[K]) add(k K, q byte) {
	if m.indexed {
		if i, ok := m.index[k]; ok {
			m.list[i].QoS = max(m.list[i].QoS, q)
			return
		}
		m.index[k] = len(m.list)
		m.list = append(m.list, Matched[K]{k, q})
		return
	}
	for i := range m.list {
		if m.list[i].Key == k {
			m.list[i].QoS = max(m.list[i].QoS, q)
			return
		}
	}
	m.list = append(m.list, Matched[K]{k, q})
	if len(m.list) > linearMatches {
		if m.index == nil {
			m.index = make(map[K]int, 2*len(m.list))
		}
		for i, e := range m.list {
			m.index[e.Key] = i
		}
		m.indexed = true
	}
}

// List returns the keys collected, each once.
func (m *Matches[K]) List() []Matched[K] { return m.list }

// Reset empties m, keeping its storage.
func (m *Matches[K]) Reset() {
	clear(m.list)
	m.list = m.list[:0]
	if m.indexed {
		clear(m.index)
		m.indexed = false
	}
}
