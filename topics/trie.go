package topics

import "sync"

// Trie holds subscriptions: per filter, the subscribers and their granted
// QoS. It is safe for concurrent use; lookups share a read lock.
//
// Filters are stored level by level, so a lookup walks only the branches a
// topic can match: the literal child for each topic level, the '+' child,
// and the '#' child.
type Trie[K comparable] struct {
	mu      sync.RWMutex
	root    trieNode[K]
	filters int
	subs    int // (filter, key) pairs
}

type trieNode[K comparable] struct {
	children map[string]*trieNode[K] // literal levels
	plus     *trieNode[K]            // '+'
	hash     *trieNode[K]            // '#'; always a leaf
	subs     map[K]byte              // subscribers of the filter ending here
}

// NewTrie returns an empty Trie.
func NewTrie[K comparable]() *Trie[K] {
	return &Trie[K]{}
}

// Subscribe records that key subscribes to filter with the granted qos,
// replacing an existing subscription of key to the same filter
// [MQTT-3.8.4-3]. newFilter reports that filter had no subscriber before.
// filter must be valid (ValidateFilter).
func (t *Trie[K]) Subscribe(filter string, key K, qos byte) (newFilter bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := &t.root
	for start := 0; start <= len(filter); {
		end := levelEnd(filter, start)
		n = n.child(filter[start:end])
		start = end + 1
	}
	if n.subs == nil {
		n.subs = make(map[K]byte, 1)
	}
	newFilter = len(n.subs) == 0
	if newFilter {
		t.filters++
	}
	if _, had := n.subs[key]; !had {
		t.subs++
	}
	n.subs[key] = qos
	return newFilter
}

// child returns the child of n for level, creating it.
func (n *trieNode[K]) child(level string) *trieNode[K] {
	switch level {
	case "+":
		if n.plus == nil {
			n.plus = &trieNode[K]{}
		}
		return n.plus
	case "#":
		if n.hash == nil {
			n.hash = &trieNode[K]{}
		}
		return n.hash
	}
	c := n.children[level]
	if c == nil {
		if n.children == nil {
			n.children = make(map[string]*trieNode[K])
		}
		c = &trieNode[K]{}
		n.children[level] = c
	}
	return c
}

// lookup returns the child of n for level, or nil.
func (n *trieNode[K]) lookup(level string) *trieNode[K] {
	switch level {
	case "+":
		return n.plus
	case "#":
		return n.hash
	}
	return n.children[level]
}

// detach removes the child for level from n.
func (n *trieNode[K]) detach(level string) {
	switch level {
	case "+":
		n.plus = nil
	case "#":
		n.hash = nil
	default:
		delete(n.children, level)
		if len(n.children) == 0 {
			n.children = nil
		}
	}
}

func (n *trieNode[K]) empty() bool {
	return len(n.subs) == 0 && len(n.children) == 0 && n.plus == nil && n.hash == nil
}

// Unsubscribe removes the subscription of key to filter. removed reports
// that there was one; filterEmpty reports that it was the filter's last
// subscriber (so filterEmpty implies removed). Nodes left without
// subscribers or children are pruned, so memory follows the live
// subscriptions, not their history.
func (t *Trie[K]) Unsubscribe(filter string, key K) (removed, filterEmpty bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	type step struct {
		parent *trieNode[K]
		level  string
	}
	var pathBuf [16]step
	path := pathBuf[:0]
	n := &t.root
	for start := 0; start <= len(filter); {
		end := levelEnd(filter, start)
		level := filter[start:end]
		c := n.lookup(level)
		if c == nil {
			return false, false
		}
		path = append(path, step{n, level})
		n = c
		start = end + 1
	}
	if _, ok := n.subs[key]; !ok {
		return false, false
	}
	delete(n.subs, key)
	t.subs--
	if len(n.subs) > 0 {
		return true, false
	}
	n.subs = nil
	t.filters--
	for i := len(path) - 1; i >= 0 && n.empty(); i-- {
		path[i].parent.detach(path[i].level)
		n = path[i].parent
	}
	return true, true
}

// Match calls fn once per subscription (filter, key) whose filter matches
// topic, with the granted QoS. A key subscribed through several matching
// filters is reported once per filter. fn runs under the read lock and must
// not call the Trie. Match does not allocate.
func (t *Trie[K]) Match(topic string, fn func(key K, qos byte)) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	// Wildcards at the first level never match '$' topics [MQTT-4.7.2-1].
	wild := topic == "" || topic[0] != '$'
	t.root.match(topic, 0, wild, fn)
}

// match visits the subscriptions below n matching the topic levels from
// start on; start > len(topic) means no level is left.
func (n *trieNode[K]) match(topic string, start int, wild bool, fn func(K, byte)) {
	if wild && n.hash != nil {
		// '#' matches the remaining levels, or none: "a/#" matches "a".
		n.hash.emit(fn)
	}
	if start > len(topic) {
		n.emit(fn)
		return
	}
	end := levelEnd(topic, start)
	if c := n.children[topic[start:end]]; c != nil {
		c.match(topic, end+1, true, fn)
	}
	if wild && n.plus != nil {
		n.plus.match(topic, end+1, true, fn)
	}
}

func (n *trieNode[K]) emit(fn func(K, byte)) {
	for k, q := range n.subs {
		fn(k, q)
	}
}

// Subscribers adds to dst every key with a subscription matching topic, once,
// with the highest QoS among its matching subscriptions. dst is not reset:
// the caller reuses and resets it.
func (t *Trie[K]) Subscribers(topic string, dst *Matches[K]) {
	t.Match(topic, dst.add)
}

// Subscriptions returns the number of subscriptions: (filter, key) pairs.
func (t *Trie[K]) Subscriptions() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.subs
}

// Filters returns the number of distinct filters with at least one
// subscriber.
func (t *Trie[K]) Filters() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.filters
}
