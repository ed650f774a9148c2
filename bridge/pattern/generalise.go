package pattern

import "sort"

// The generalisation tree groups the maximal patterns under their
// coarsenings: the root is prefix+"*", below it prefix+"[^$]*" (or
// prefix+"$*" for '$' topics), then the literal prefix cut after each '/'
// (a/*, a/b/*), then the pattern itself as a leaf. Each node's pattern
// covers every leaf below it, so any set of nodes that meets every
// root-to-leaf path covers all the needed patterns. The tree is kept up to
// date as the maximal set changes, so generalising costs O(budget), not
// O(patterns).
type genNode struct {
	p        *globPattern
	parent   *genNode
	children map[string]*genNode
	leaf     bool // p is in the maximal set
}

func (n *genNode) child(p *globPattern) *genNode {
	if c := n.children[p.name]; c != nil {
		return c
	}
	if n.children == nil {
		n.children = make(map[string]*genNode)
	}
	c := &genNode{p: p, parent: n}
	n.children[p.name] = c
	return c
}

// genInsert adds the maximal pattern p to the tree.
func (s *PatternSet) genInsert(p *globPattern) {
	if p.chain == nil {
		p.chain = s.coarsenings(p)
	}
	n := s.genRoot
	for _, a := range p.chain {
		n = n.child(a)
	}
	n.child(p).leaf = true
}

// genRemove takes p, which left the maximal set, out of the tree and prunes
// the branches left without leaves.
func (s *PatternSet) genRemove(p *globPattern) {
	n := s.genRoot
	for _, a := range p.chain {
		if n = n.children[a.name]; n == nil {
			return
		}
	}
	if n = n.children[p.name]; n == nil {
		return
	}
	n.leaf = false
	for n != s.genRoot && !n.leaf && len(n.children) == 0 {
		delete(n.parent.children, n.p.name)
		n = n.parent
	}
}

// generalise returns at most s.max patterns covering the maximal set. It
// expands the tree from the root breadth first, within a depth the nodes
// with the fewest children first, for as long as the budget allows: groups
// that fit stay precise, crowded ones are merged under a coarser pattern.
func (s *PatternSet) generalise() map[string]*globPattern {
	if s.genOut == nil {
		s.genOut = make(map[string]*globPattern, s.max)
	}
	out := s.genOut // reused: the caller only diffs against it
	clear(out)
	count := 1
	for level := []*genNode{s.genRoot}; len(level) > 0; {
		sort.Slice(level, func(i, j int) bool {
			if a, b := len(level[i].children), len(level[j].children); a != b {
				return a < b
			}
			return level[i].p.name < level[j].p.name
		})
		var next []*genNode
		for _, n := range level {
			if n.leaf || len(n.children) == 0 || count-1+len(n.children) > s.max {
				out[n.p.name] = n.p
				continue
			}
			count += len(n.children) - 1
			for _, c := range n.children {
				next = append(next, c)
			}
		}
		level = next
	}
	return out
}

// coarsenings returns the patterns that cover p by construction, coarsest
// first, without the root and without p itself: prefix+"[^$]*" (when p's
// first byte after the prefix cannot be '$') or prefix+"$*", then p's
// literal prefix cut after each '/', followed by '*'.
func (s *PatternSet) coarsenings(p *globPattern) []*globPattern {
	base := glob(nil).appendLit(s.prefix)
	rest := p.g[len(base):]
	out := []*globPattern{} // non-nil: computed
	add := func(g glob) {
		q := newGlobPattern(g)
		if q.name != p.name && (len(out) == 0 || out[len(out)-1].name != q.name) {
			out = append(out, q)
		}
	}
	switch {
	case len(rest) == 0 || rest[0].kind == tokStar:
		return out // only the root covers p
	case rest[0].kind == tokLit && rest[0].c == '$':
		add(glob(nil).appendLit(s.prefix + "$").appendStar())
	default:
		add(glob(nil).appendLit(s.prefix).appendNotDollar().appendStar())
	}
	lit := p.lit[len(s.prefix):]
	for i := 0; i < len(lit); i++ {
		if lit[i] == '/' {
			add(glob(nil).appendLit(s.prefix + lit[:i+1]).appendStar())
		}
	}
	return out
}
