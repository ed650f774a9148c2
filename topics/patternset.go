package topics

import (
	"slices"
	"sort"
	"strings"
)

// Change lists the Redis commands that move a replica's subscriptions from
// the previous state of a PatternSet to the current one. A name never
// appears both in a subscribe and an unsubscribe list. Issue the
// subscriptions before the unsubscriptions so that no message falls between
// them; a message then delivered twice is deduplicated by message id.
type Change struct {
	Subscribe    []string // channels to SUBSCRIBE
	Unsubscribe  []string // channels to UNSUBSCRIBE
	PSubscribe   []string // patterns to PSUBSCRIBE
	PUnsubscribe []string // patterns to PUNSUBSCRIBE
}

// Empty reports whether c asks for no command.
func (c Change) Empty() bool {
	return len(c.Subscribe)+len(c.Unsubscribe)+len(c.PSubscribe)+len(c.PUnsubscribe) == 0
}

// PatternSet tracks the filters a replica's local clients use, reference
// counted, and the small set of Redis channels and patterns that covers
// them. It is not safe for concurrent use: the caller serialises calls
// (it holds the lock that orders its SUBSCRIBE commands anyway).
//
// Redis pays, on every PUBLISH, a cost proportional to the number of
// distinct patterns in the whole server, so the set is kept small:
//   - filters with the same glob share it;
//   - a pattern another needed pattern covers (a/* covers a/*/b) is not
//     subscribed, and neither is a channel an active pattern matches;
//   - when more than maxPatterns patterns remain, they are generalised by
//     cutting their literal prefix back at level boundaries
//     (a/b/*/c → a/b/* → a/* → [^$]* → *): small groups stay precise,
//     crowded ones merge under one coarser pattern, until the budget
//     holds. Receivers re-match every message against their local trie, so
//     over-delivery costs bandwidth, never correctness.
//
// A channel or pattern is subscribed once however many filters need it.
type PatternSet struct {
	prefix string
	max    int

	filters  map[string]int            // filter → local uses
	channels map[string]int            // needed channel → active patterns matching it
	needed   map[string]*patternNeed   // needed pattern → state
	maximal  map[string]*globPattern   // needed patterns no other needed pattern covers
	byLit    map[string][]*globPattern // maximal, indexed by literal prefix
	active   map[string]*globPattern   // patterns subscribed in Redis
	activeCh map[string]struct{}       // channels subscribed in Redis

	genRoot     *genNode                // maximal, grouped for generalise
	generalised bool                    // active differs from maximal
	added       map[string]*globPattern // maximal's net changes in this call
	removed     map[string]*globPattern
}

type globPattern struct {
	name  string
	g     glob
	lit   string         // g.literal()
	chain []*globPattern // coarsenings, set once p enters the maximal set
}

func newGlobPattern(g glob) *globPattern {
	return &globPattern{name: g.String(), g: g, lit: g.literal()}
}

// covers reports whether p covers q; see covers.
func (p *globPattern) covers(q *globPattern) bool {
	return strings.HasPrefix(q.lit, p.lit) && covers(p.g, q.g)
}

type patternNeed struct {
	p    *globPattern
	refs int // distinct filters translating to the pattern
}

// NewPatternSet returns an empty PatternSet for channels named prefix+topic,
// holding at most maxPatterns patterns; maxPatterns ≤ 0 means no budget.
func NewPatternSet(prefix string, maxPatterns int) *PatternSet {
	root := newGlobPattern(glob(nil).appendLit(prefix).appendStar())
	return &PatternSet{
		genRoot:  &genNode{p: root},
		prefix:   prefix,
		max:      maxPatterns,
		filters:  make(map[string]int),
		channels: make(map[string]int),
		needed:   make(map[string]*patternNeed),
		maximal:  make(map[string]*globPattern),
		byLit:    make(map[string][]*globPattern),
		active:   make(map[string]*globPattern),
		activeCh: make(map[string]struct{}),
		added:    make(map[string]*globPattern),
		removed:  make(map[string]*globPattern),
	}
}

// Add records one more local use of filter, which must be valid
// (ValidateFilter), and returns the commands to issue.
func (s *PatternSet) Add(filter string) Change {
	s.filters[filter]++
	if s.filters[filter] > 1 {
		return Change{}
	}
	name, isPattern := RedisSubscription(s.prefix, filter)
	if !isPattern {
		covered := 0
		for _, p := range s.active {
			if GlobMatch(p.name, name) {
				covered++
			}
		}
		s.channels[name] = covered
		if covered > 0 {
			return Change{}
		}
		s.activeCh[name] = struct{}{}
		return Change{Subscribe: []string{name}}
	}
	if pn := s.needed[name]; pn != nil {
		pn.refs++
		return Change{}
	}
	p := newGlobPattern(filterGlob(s.prefix, filter))
	s.needed[name] = &patternNeed{p: p, refs: 1}
	s.insertMaximal(p)
	return s.sync()
}

// Remove records one fewer local use of filter and returns the commands to
// issue. At zero uses the filter leaves the set; removing a filter not in
// the set changes nothing.
func (s *PatternSet) Remove(filter string) Change {
	n, ok := s.filters[filter]
	if !ok {
		return Change{}
	}
	if n > 1 {
		s.filters[filter] = n - 1
		return Change{}
	}
	delete(s.filters, filter)
	name, isPattern := RedisSubscription(s.prefix, filter)
	if !isPattern {
		delete(s.channels, name)
		if _, ok := s.activeCh[name]; !ok {
			return Change{}
		}
		delete(s.activeCh, name)
		return Change{Unsubscribe: []string{name}}
	}
	pn := s.needed[name]
	if pn.refs--; pn.refs > 0 {
		return Change{}
	}
	delete(s.needed, name)
	if _, ok := s.maximal[name]; ok {
		s.removeMaximal(pn.p)
	}
	return s.sync()
}

// insertMaximal adds p to the maximal set unless a member covers it, and
// drops the members p covers.
func (s *PatternSet) insertMaximal(p *globPattern) {
	if _, ok := s.maximal[p.name]; ok {
		return
	}
	// A coverer's literal prefix is a prefix of p's: its literals must meet
	// p's literals.
	for k := 0; k <= len(p.lit); k++ {
		for _, q := range s.byLit[p.lit[:k]] {
			if covers(q.g, p.g) {
				return
			}
		}
	}
	for _, q := range s.maximal {
		if p.covers(q) {
			s.dropMaximal(q)
		}
	}
	s.maximal[p.name] = p
	s.byLit[p.lit] = append(s.byLit[p.lit], p)
	s.genInsert(p)
	if _, ok := s.removed[p.name]; ok {
		delete(s.removed, p.name)
	} else {
		s.added[p.name] = p
	}
}

func (s *PatternSet) dropMaximal(p *globPattern) {
	delete(s.maximal, p.name)
	s.genRemove(p)
	list := slices.DeleteFunc(s.byLit[p.lit], func(q *globPattern) bool { return q == p })
	if len(list) == 0 {
		delete(s.byLit, p.lit)
	} else {
		s.byLit[p.lit] = list
	}
	if _, ok := s.added[p.name]; ok {
		delete(s.added, p.name)
	} else {
		s.removed[p.name] = p
	}
}

// removeMaximal drops p, which left the needed set, and promotes the needed
// patterns only p covered.
func (s *PatternSet) removeMaximal(p *globPattern) {
	s.dropMaximal(p)
	var orphans []*globPattern
	for _, pn := range s.needed {
		if p.covers(pn.p) {
			orphans = append(orphans, pn.p)
		}
	}
	sort.Slice(orphans, func(i, j int) bool { return orphans[i].name < orphans[j].name })
	for _, q := range orphans {
		s.insertMaximal(q)
	}
}

// sync brings the active patterns and channels in line with the maximal set
// and the budget, and returns the difference as commands.
func (s *PatternSet) sync() Change {
	var add, del []*globPattern
	switch {
	case s.max > 0 && len(s.maximal) > s.max:
		next := s.generalise()
		add, del = diff(s.active, next)
		s.generalised = true
	case s.generalised:
		add, del = diff(s.active, s.maximal)
		s.generalised = false
	default:
		for _, p := range s.added {
			add = append(add, p)
		}
		for _, p := range s.removed {
			del = append(del, p)
		}
	}
	clear(s.added)
	clear(s.removed)

	var c Change
	was := make(map[string]bool) // channels touched → subscribed before
	for _, p := range add {
		s.active[p.name] = p
		c.PSubscribe = append(c.PSubscribe, p.name)
		s.coverChannels(p, 1, was)
	}
	for _, p := range del {
		delete(s.active, p.name)
		c.PUnsubscribe = append(c.PUnsubscribe, p.name)
		s.coverChannels(p, -1, was)
	}
	for name, before := range was {
		switch now := s.channels[name] == 0; {
		case now && !before:
			s.activeCh[name] = struct{}{}
			c.Subscribe = append(c.Subscribe, name)
		case !now && before:
			delete(s.activeCh, name)
			c.Unsubscribe = append(c.Unsubscribe, name)
		}
	}
	slices.Sort(c.Subscribe)
	slices.Sort(c.Unsubscribe)
	slices.Sort(c.PSubscribe)
	slices.Sort(c.PUnsubscribe)
	return c
}

// coverChannels adds delta to the cover count of every needed channel p
// matches, noting in was whether each was subscribed before this call.
func (s *PatternSet) coverChannels(p *globPattern, delta int, was map[string]bool) {
	for name := range s.channels {
		if !strings.HasPrefix(name, p.lit) || !GlobMatch(p.name, name) {
			continue
		}
		if _, seen := was[name]; !seen {
			_, was[name] = s.activeCh[name]
		}
		s.channels[name] += delta
	}
}

// diff returns the patterns in next but not in cur, and in cur but not next.
func diff(cur, next map[string]*globPattern) (add, del []*globPattern) {
	for name, p := range next {
		if _, ok := cur[name]; !ok {
			add = append(add, p)
		}
	}
	for name, p := range cur {
		if _, ok := next[name]; !ok {
			del = append(del, p)
		}
	}
	return add, del
}

// Channels returns the channels to be subscribed, sorted.
func (s *PatternSet) Channels() []string {
	out := make([]string, 0, len(s.activeCh))
	for name := range s.activeCh {
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}

// Patterns returns the patterns to be subscribed, sorted.
func (s *PatternSet) Patterns() []string {
	out := make([]string, 0, len(s.active))
	for name := range s.active {
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}

// Filters returns the number of distinct filters in the set.
func (s *PatternSet) Filters() int {
	return len(s.filters)
}
