package topics

import (
	"slices"
	"sort"
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
//
// Cost: a filter is compared only with the patterns its literal prefix
// relates to (found through indexes, never by scanning the whole set), each
// comparison is linear in the two patterns' lengths, and Update applies any
// number of filters with one reconciliation, so adding or removing N
// filters with distinct literal prefixes costs O(N log N). Wildcard filters
// sharing one literal prefix ("L/+/x1", "L/+/x2", …) are still compared with
// each other.
type PatternSet struct {
	prefix string
	max    int

	filters  map[string]int          // filter → local uses
	channels map[string]int          // needed channel → active patterns matching it
	chNames  ordered[struct{}]       // the keys of channels, in order
	needed   map[string]*patternNeed // needed pattern → state
	maximal  map[string]*globPattern // needed patterns no other needed pattern covers
	maxIdx   litIndex                // maximal, by literal prefix
	lits     ordered[*litGroup]      // needed patterns, by literal prefix, in order
	active   map[string]*globPattern // patterns subscribed in Redis
	actIdx   litIndex                // active, by literal prefix
	activeCh map[string]struct{}     // channels subscribed in Redis

	genRoot     *genNode                // maximal, grouped for generalise
	generalised bool                    // active differs from maximal
	added       map[string]*globPattern // maximal's net changes in this call
	removed     map[string]*globPattern
	chWas       map[string]bool // channels touched in this call → subscribed before it
}

type globPattern struct {
	name  string
	g     glob
	lit   string         // g.literal()
	enc   string         // g.encode()
	chain []*globPattern // coarsenings, set once p enters the maximal set
	inMax bool           // p is in the maximal set
}

func newGlobPattern(g glob) *globPattern {
	return &globPattern{name: g.String(), g: g, lit: g.literal(), enc: g.encode()}
}

type patternNeed struct {
	p    *globPattern
	refs int // distinct filters translating to the pattern
}

// litGroup holds the needed patterns sharing one literal prefix.
type litGroup struct {
	all map[*globPattern]struct{}
}

// litKey identifies a literal prefix by its length and an FNV-1a hash, so
// that every prefix of a string is looked up in O(1) after the one before.
type litKey struct {
	h uint64
	n int
}

const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

// litIndex finds, among its patterns, those whose literal prefix is a
// prefix of a given string, in O(len(string) + matches).
type litIndex map[litKey]map[*globPattern]struct{}

func keyOf(s string) litKey {
	h := uint64(fnvOffset)
	for i := 0; i < len(s); i++ {
		h = (h ^ uint64(s[i])) * fnvPrime
	}
	return litKey{h, len(s)}
}

func (x litIndex) add(p *globPattern) {
	k := keyOf(p.lit)
	m := x[k]
	if m == nil {
		m = make(map[*globPattern]struct{}, 1)
		x[k] = m
	}
	m[p] = struct{}{}
}

func (x litIndex) remove(p *globPattern) {
	k := keyOf(p.lit)
	if m := x[k]; m != nil {
		delete(m, p)
		if len(m) == 0 {
			delete(x, k)
		}
	}
}

// under calls fn for every pattern whose literal prefix is a prefix of s,
// until fn returns false.
func (x litIndex) under(s string, fn func(*globPattern) bool) {
	h := uint64(fnvOffset)
	for k := 0; ; k++ {
		for p := range x[litKey{h, k}] {
			if p.lit == s[:k] && !fn(p) {
				return
			}
		}
		if k == len(s) {
			return
		}
		h = (h ^ uint64(s[k])) * fnvPrime
	}
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
		maxIdx:   make(litIndex),
		active:   make(map[string]*globPattern),
		actIdx:   make(litIndex),
		activeCh: make(map[string]struct{}),
		added:    make(map[string]*globPattern),
		removed:  make(map[string]*globPattern),
		chWas:    make(map[string]bool),
	}
}

// Add records one more local use of filter, which must be valid
// (ValidateFilter), and returns the commands to issue.
func (s *PatternSet) Add(filter string) Change {
	s.add(filter)
	return s.sync()
}

// Remove records one fewer local use of filter and returns the commands to
// issue. At zero uses the filter leaves the set; removing a filter not in
// the set changes nothing.
func (s *PatternSet) Remove(filter string) Change {
	s.remove(filter)
	return s.sync()
}

// Update records one more use of each filter in add, then one fewer of
// each in remove, and returns the commands that take Redis from the state
// before the call to the state after it, as one Change: a name both
// subscribed and unsubscribed along the way appears in neither list. It
// costs what the Adds and Removes would, but reconciles the active set and
// the budget once, not once per filter.
func (s *PatternSet) Update(add, remove []string) Change {
	for _, f := range add {
		s.add(f)
	}
	for _, f := range remove {
		s.remove(f)
	}
	return s.sync()
}

func (s *PatternSet) add(filter string) {
	s.filters[filter]++
	if s.filters[filter] > 1 {
		return
	}
	name, isPattern := RedisSubscription(s.prefix, filter)
	if !isPattern {
		covered := 0
		s.actIdx.under(name, func(p *globPattern) bool {
			if GlobMatch(p.name, name) {
				covered++
			}
			return true
		})
		s.touch(name)
		s.channels[name] = covered
		s.chNames.put(name, struct{}{})
		if covered == 0 {
			s.activeCh[name] = struct{}{}
		}
		return
	}
	if pn := s.needed[name]; pn != nil {
		pn.refs++
		return
	}
	p := newGlobPattern(filterGlob(s.prefix, filter))
	s.needed[name] = &patternNeed{p: p, refs: 1}
	g, ok := s.lits.get(p.lit)
	if !ok {
		g = &litGroup{all: make(map[*globPattern]struct{}, 1)}
		s.lits.put(p.lit, g)
	}
	g.all[p] = struct{}{}
	s.insertMaximal(p)
}

func (s *PatternSet) remove(filter string) {
	n, ok := s.filters[filter]
	if !ok {
		return
	}
	if n > 1 {
		s.filters[filter] = n - 1
		return
	}
	delete(s.filters, filter)
	name, isPattern := RedisSubscription(s.prefix, filter)
	if !isPattern {
		s.touch(name)
		delete(s.channels, name)
		s.chNames.del(name)
		delete(s.activeCh, name)
		return
	}
	pn := s.needed[name]
	if pn.refs--; pn.refs > 0 {
		return
	}
	delete(s.needed, name)
	if g, ok := s.lits.get(pn.p.lit); ok {
		delete(g.all, pn.p)
		if len(g.all) == 0 {
			s.lits.del(pn.p.lit)
		}
	}
	if pn.p.inMax {
		s.removeMaximal(pn.p)
	}
}

// touch notes whether channel name was subscribed before this call, the
// first time the call touches it.
func (s *PatternSet) touch(name string) {
	if _, seen := s.chWas[name]; !seen {
		_, s.chWas[name] = s.activeCh[name]
	}
}

// insertMaximal adds p to the maximal set unless a member covers it, and
// drops the members p covers.
func (s *PatternSet) insertMaximal(p *globPattern) {
	if p.inMax {
		return
	}
	// A coverer's literal prefix is a prefix of p's: its literals must meet
	// p's literals.
	covered := false
	s.maxIdx.under(p.lit, func(q *globPattern) bool {
		covered = coversEnc(q.g, p.g, p.enc)
		return !covered
	})
	if covered {
		return
	}
	// p's literal prefix is a prefix of whatever it covers.
	var drop []*globPattern
	s.lits.prefix(p.lit, func(_ string, g *litGroup) bool {
		for q := range g.all {
			if q.inMax && coversEnc(p.g, q.g, q.enc) {
				drop = append(drop, q)
			}
		}
		return true
	})
	for _, q := range drop {
		s.dropMaximal(q)
	}
	p.inMax = true
	s.maximal[p.name] = p
	s.maxIdx.add(p)
	s.genInsert(p)
	if _, ok := s.removed[p.name]; ok {
		delete(s.removed, p.name)
	} else {
		s.added[p.name] = p
	}
}

func (s *PatternSet) dropMaximal(p *globPattern) {
	p.inMax = false
	delete(s.maximal, p.name)
	s.maxIdx.remove(p)
	s.genRemove(p)
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
	s.lits.prefix(p.lit, func(_ string, g *litGroup) bool {
		for q := range g.all {
			if !q.inMax && coversEnc(p.g, q.g, q.enc) {
				orphans = append(orphans, q)
			}
		}
		return true
	})
	sort.Slice(orphans, func(i, j int) bool { return orphans[i].name < orphans[j].name })
	for _, q := range orphans {
		s.insertMaximal(q)
	}
}

// sync brings the active patterns and channels in line with the maximal set
// and the budget, and returns the difference since the last sync as
// commands.
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
	for _, p := range add {
		s.active[p.name] = p
		s.actIdx.add(p)
		c.PSubscribe = append(c.PSubscribe, p.name)
		s.coverChannels(p, 1)
	}
	for _, p := range del {
		delete(s.active, p.name)
		s.actIdx.remove(p)
		c.PUnsubscribe = append(c.PUnsubscribe, p.name)
		s.coverChannels(p, -1)
	}
	for name, before := range s.chWas {
		n, needed := s.channels[name]
		now := needed && n == 0
		if now {
			s.activeCh[name] = struct{}{}
		} else {
			delete(s.activeCh, name)
		}
		switch {
		case now && !before:
			c.Subscribe = append(c.Subscribe, name)
		case !now && before:
			c.Unsubscribe = append(c.Unsubscribe, name)
		}
	}
	clear(s.chWas)
	slices.Sort(c.Subscribe)
	slices.Sort(c.Unsubscribe)
	slices.Sort(c.PSubscribe)
	slices.Sort(c.PUnsubscribe)
	return c
}

// coverChannels adds delta to the cover count of every needed channel p
// matches; only the channels starting with p's literal prefix can.
func (s *PatternSet) coverChannels(p *globPattern, delta int) {
	s.chNames.prefix(p.lit, func(name string, _ struct{}) bool {
		if GlobMatch(p.name, name) {
			s.touch(name)
			s.channels[name] += delta
		}
		return true
	})
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
