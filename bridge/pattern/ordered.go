package pattern

import (
	"math/rand/v2"
	"strings"
)

// ordered is a map from strings to V kept in key order (a treap), so that
// every key with a given prefix is found in O(log n + matches): PatternSet
// uses it to find the channels a pattern's literal prefix can match and
// the patterns a new pattern may cover, without scanning them all.
type ordered[V any] struct {
	root *orderedNode[V]
	n    int
}

type orderedNode[V any] struct {
	key         string
	val         V
	prio        uint64
	left, right *orderedNode[V]
}

// get returns the value of key.
func (o *ordered[V]) get(key string) (V, bool) {
	for n := o.root; n != nil; {
		switch {
		case key < n.key:
			n = n.left
		case key > n.key:
			n = n.right
		default:
			return n.val, true
		}
	}
	var zero V
	return zero, false
}

// put sets the value of key.
func (o *ordered[V]) put(key string, val V) {
	var added bool
	o.root, added = o.insert(o.root, key, val)
	if added {
		o.n++
	}
}

func (o *ordered[V]) insert(n *orderedNode[V], key string, val V) (*orderedNode[V], bool) {
	if n == nil {
		return &orderedNode[V]{key: key, val: val, prio: rand.Uint64()}, true
	}
	var added bool
	switch {
	case key < n.key:
		n.left, added = o.insert(n.left, key, val)
		if n.left.prio > n.prio {
			l := n.left
			n.left, l.right = l.right, n
			return l, added
		}
	case key > n.key:
		n.right, added = o.insert(n.right, key, val)
		if n.right.prio > n.prio {
			r := n.right
			n.right, r.left = r.left, n
			return r, added
		}
	default:
		n.val = val
	}
	return n, added
}

// del removes key.
func (o *ordered[V]) del(key string) {
	var removed bool
	o.root, removed = o.remove(o.root, key)
	if removed {
		o.n--
	}
}

func (o *ordered[V]) remove(n *orderedNode[V], key string) (*orderedNode[V], bool) {
	if n == nil {
		return nil, false
	}
	var removed bool
	switch {
	case key < n.key:
		n.left, removed = o.remove(n.left, key)
	case key > n.key:
		n.right, removed = o.remove(n.right, key)
	default:
		return merge(n.left, n.right), true
	}
	return n, removed
}

// merge joins two treaps whose keys are all ordered a < b.
func merge[V any](a, b *orderedNode[V]) *orderedNode[V] {
	switch {
	case a == nil:
		return b
	case b == nil:
		return a
	case a.prio > b.prio:
		a.right = merge(a.right, b)
		return a
	default:
		b.left = merge(a, b.left)
		return b
	}
}

// prefix calls fn for every key starting with p, in key order, until fn
// returns false. fn must not change o.
func (o *ordered[V]) prefix(p string, fn func(key string, val V) bool) {
	o.root.prefix(p, fn)
}

func (n *orderedNode[V]) prefix(p string, fn func(string, V) bool) bool {
	if n == nil {
		return true
	}
	if n.key >= p && !n.left.prefix(p, fn) {
		return false
	}
	if strings.HasPrefix(n.key, p) && !fn(n.key, n.val) {
		return false
	}
	// Keys above n.key can still start with p only if n.key is below
	// every key that does not.
	if n.key < p || strings.HasPrefix(n.key, p) {
		return n.right.prefix(p, fn)
	}
	return true
}
