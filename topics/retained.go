package topics

import "sync"

// Retained is an index of retained topic names to values, mirrored on every
// replica so that a wildcard SUBSCRIBE finds its retained messages without
// scanning a keyspace: a lookup visits only the branches its filter can
// match. It is safe for concurrent use.
type Retained[V any] struct {
	mu   sync.RWMutex
	root retainedNode[V]
	n    int
}

type retainedNode[V any] struct {
	children map[string]*retainedNode[V]
	topic    string // full topic name, set while has is true
	value    V
	has      bool
}

// NewRetained returns an empty Retained.
func NewRetained[V any]() *Retained[V] {
	return &Retained[V]{}
}

// Set stores v for topic, replacing any previous value [MQTT-3.3.1-5]. topic
// must be a valid topic name.
func (r *Retained[V]) Set(topic string, v V) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := &r.root
	for start := 0; start <= len(topic); {
		end := levelEnd(topic, start)
		level := topic[start:end]
		c := n.children[level]
		if c == nil {
			if n.children == nil {
				n.children = make(map[string]*retainedNode[V])
			}
			c = &retainedNode[V]{}
			n.children[level] = c
		}
		n = c
		start = end + 1
	}
	if !n.has {
		r.n++
	}
	n.topic, n.value, n.has = topic, v, true
}

// Delete removes the value for topic, as a retained message with an empty
// payload asks [MQTT-3.3.1-10], and reports whether there was one. Branches
// left empty are pruned.
func (r *Retained[V]) Delete(topic string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	type step struct {
		parent *retainedNode[V]
		level  string
	}
	var pathBuf [16]step
	path := pathBuf[:0]
	n := &r.root
	for start := 0; start <= len(topic); {
		end := levelEnd(topic, start)
		level := topic[start:end]
		c := n.children[level]
		if c == nil {
			return false
		}
		path = append(path, step{n, level})
		n = c
		start = end + 1
	}
	if !n.has {
		return false
	}
	var zero V
	n.topic, n.value, n.has = "", zero, false
	r.n--
	for i := len(path) - 1; i >= 0 && !n.has && len(n.children) == 0; i-- {
		p := path[i].parent
		delete(p.children, path[i].level)
		if len(p.children) == 0 {
			p.children = nil
		}
		n = p
	}
	return true
}

// Get returns the value stored for topic.
func (r *Retained[V]) Get(topic string) (V, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	n := &r.root
	for start := 0; start <= len(topic); {
		end := levelEnd(topic, start)
		if n = n.children[topic[start:end]]; n == nil {
			var zero V
			return zero, false
		}
		start = end + 1
	}
	return n.value, n.has
}

// Match calls fn for every stored topic that filter matches, visiting only
// the branches that can match. Wildcards at the first level skip topics
// starting with '$' [MQTT-4.7.2-1]; a trailing '#' matches the parent level
// too. fn runs under the read lock and must not call r. filter must be
// valid (ValidateFilter).
func (r *Retained[V]) Match(filter string, fn func(topic string, v V)) {
	r.match(filter, fn)
}

// match is Match, returning the number of nodes visited (for tests that
// prove a lookup does not walk the whole store).
func (r *Retained[V]) match(filter string, fn func(string, V)) int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if filter == "" {
		return 0
	}
	return r.root.match(filter, 0, true, fn)
}

// match visits the nodes below n matching the filter levels from start on.
func (n *retainedNode[V]) match(filter string, start int, root bool, fn func(string, V)) int {
	end := levelEnd(filter, start)
	level := filter[start:end]
	last := end == len(filter)
	visited := 0
	switch level {
	case "#":
		if n.has {
			fn(n.topic, n.value) // "a/#" matches "a"
		}
		for key, c := range n.children {
			if root && key != "" && key[0] == '$' {
				continue // [MQTT-4.7.2-1]
			}
			visited += c.all(fn)
		}
	case "+":
		for key, c := range n.children {
			if root && key != "" && key[0] == '$' {
				continue // [MQTT-4.7.2-1]
			}
			visited += c.step(filter, end, last, fn)
		}
	default:
		if c := n.children[level]; c != nil {
			visited += c.step(filter, end, last, fn)
		}
	}
	return visited
}

// step handles arriving at n through the filter level ending at end.
func (n *retainedNode[V]) step(filter string, end int, last bool, fn func(string, V)) int {
	if last {
		if n.has {
			fn(n.topic, n.value)
		}
		return 1
	}
	return 1 + n.match(filter, end+1, false, fn)
}

// all visits n and every node below it.
func (n *retainedNode[V]) all(fn func(string, V)) int {
	if n.has {
		fn(n.topic, n.value)
	}
	visited := 1
	for _, c := range n.children {
		visited += c.all(fn)
	}
	return visited
}

// Len returns the number of stored topics.
func (r *Retained[V]) Len() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.n
}
