package broker

// linearMatches is how many matched clients a matchSet dedupes by a
// linear scan before it builds an index: a message matches one or a few
// clients far more often than many.
const linearMatches = 16

// matched is one local client a message matches, at the highest QoS
// among its matching subscriptions.
type matched struct {
	c       *client
	granted byte
}

// matchSet collects the local clients a message matches, each once with
// its highest grant [MQTT-3.3.5-1], in the order the trie found them. It
// replaced a map: iterating a map starts at a random place, which costs a
// call to the runtime's random generator per message, and hashing every
// client costs more than scanning a handful. Receive pools them.
type matchSet struct {
	list    []matched
	index   map[*client]int // positions in list, once it outgrew linearMatches
	indexed bool
}

// add records c, matched through a subscription granting q.
func (m *matchSet) add(c *client, q byte) {
	if m.indexed {
		if i, ok := m.index[c]; ok {
			m.list[i].granted = max(m.list[i].granted, q)
			return
		}
		m.index[c] = len(m.list)
		m.list = append(m.list, matched{c, q})
		return
	}
	for i := range m.list {
		if m.list[i].c == c {
			m.list[i].granted = max(m.list[i].granted, q)
			return
		}
	}
	m.list = append(m.list, matched{c, q})
	if len(m.list) > linearMatches {
		if m.index == nil {
			m.index = make(map[*client]int, 2*len(m.list))
		}
		for i, e := range m.list {
			m.index[e.c] = i
		}
		m.indexed = true
	}
}

// reset empties m for the next message, keeping its storage.
func (m *matchSet) reset() {
	clear(m.list)
	m.list = m.list[:0]
	if m.indexed {
		clear(m.index)
		m.indexed = false
	}
}
