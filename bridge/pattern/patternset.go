package pattern

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
// filters costs O(N log N) when their literal prefixes differ or, sharing
// one, they end in a literal level ("L/+/x1", "L/+/x2", …: see anchor).
// Wildcard filters that share a literal prefix and end in a wildcard
// ("L/+/x1/#", "L/+/x2/#", …) are still compared with one another when one
// of them is added.
type PatternSet struct {
	prefix string
	max    int

	filters  map[string]int          // filter → local uses
	channels map[string]int          // needed channel → active patterns matching it
	chNames  ordered[struct{}]       // the keys of channels, in order
	needed   map[string]*patternNeed // needed pattern → state
	maximal  map[string]*globPattern // needed patterns no other needed pattern covers
	maxIdx   litIndex                // maximal, by literal prefix and anchor
	maxLits  ordered[*litGroup]      // maximal, by literal prefix, in order
	maxAnch  ordered[*litGroup]      // anchored maximal, by anchor+"\x00"+literal prefix
	active   map[string]*globPattern // patterns subscribed in Redis
	actIdx   litIndex                // active, by literal prefix
	activeCh map[string]struct{}     // channels subscribed in Redis

	genRoot     *genNode                // maximal, grouped for generalise
	generalised bool                    // active differs from maximal
	added       map[string]*globPattern // maximal's net changes in this call
	removed     map[string]*globPattern
	chWas       map[string]bool         // channels touched in this call → subscribed before it
	genOut      map[string]*globPattern // generalise's result, reused
}

type globPattern struct {
	name  string
	g     glob
	lit   string         // g.literal()
	enc   string         // g.encode()
	chain []*globPattern // coarsenings, set once p enters the maximal set
	inMax bool           // p is in the maximal set

	// anchor is "\x00" (no topic has it [MQTT-4.7.3-2]) unless the
	// text after p's last '*' holds a '/': it is then the literal last
	// level after that '/'. Such a p covers only patterns that end with the
	// same "/" + anchor, anchored alike, and is covered only by unanchored
	// patterns or those with its anchor: filters like L/+/x1, L/+/x2 that
	// share a literal prefix are never compared with one another.
	anchor string
	ah     uint64 // hash of anchor

	// by is, for a needed pattern outside the maximal set, a maximal
	// pattern covering it; deps are the needed patterns whose by is p.
	// Removing p re-homes exactly its deps, however many patterns share
	// its literal prefix.
	by   *globPattern
	deps map[*globPattern]struct{}
}

const unanchored = "\x00"

func newGlobPattern(g glob) *globPattern {
	p := &globPattern{name: g.String(), g: g, lit: g.literal(), enc: g.encode(), anchor: unanchored}
	for i := len(g) - 1; i >= 0 && g[i].kind == tokLit; i-- {
		if g[i].c == '/' {
			p.anchor = p.enc[i+1:]
			break
		}
	}
	p.ah = keyOf(p.anchor).h
	return p
}

// anchorKey is p's key in maxAnch.
func (p *globPattern) anchorKey() string { return p.anchor + "\x00" + p.lit }

type patternNeed struct {
	p    *globPattern
	refs int // distinct filters translating to the pattern
}

// litGroup holds the patterns sharing one key of an ordered index.
type litGroup struct {
	all map[*globPattern]struct{}
}

func groupAdd(o *ordered[*litGroup], key string, p *globPattern) {
	g, ok := o.get(key)
	if !ok {
		g = &litGroup{all: make(map[*globPattern]struct{}, 1)}
		o.put(key, g)
	}
	g.all[p] = struct{}{}
}

func groupRemove(o *ordered[*litGroup], key string, p *globPattern) {
	if g, ok := o.get(key); ok {
		delete(g.all, p)
		if len(g.all) == 0 {
			o.del(key)
		}
	}
}

// litKey identifies a literal prefix by its length and an FNV-1a hash, so
// that every prefix of a string is looked up in O(1) after the one before,
// and, for the maximal set, the hash of a pattern's anchor.
type litKey struct {
	h  uint64
	n  int
	ah uint64
}

const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

// litIndex finds, among its patterns, those whose literal prefix is a
// prefix of a given string (and, when it keys by anchor, whose anchor is
// one of those given), in O(len(string) + matches).
type litIndex struct {
	m        map[litKey]map[*globPattern]struct{}
	byAnchor bool
}

func newLitIndex(byAnchor bool) litIndex {
	return litIndex{m: make(map[litKey]map[*globPattern]struct{}), byAnchor: byAnchor}
}

func keyOf(s string) litKey {
	h := uint64(fnvOffset)
	for i := 0; i < len(s); i++ {
		h = (h ^ uint64(s[i])) * fnvPrime
	}
	return litKey{h: h, n: len(s)}
}

func (x litIndex) key(p *globPattern) litKey {
	k := keyOf(p.lit)
	if x.byAnchor {
		k.ah = p.ah
	}
	return k
}

func (x litIndex) add(p *globPattern) {
	k := x.key(p)
	m := x.m[k]
	if m == nil {
		m = make(map[*globPattern]struct{}, 1)
		x.m[k] = m
	}
	m[p] = struct{}{}
}

func (x litIndex) remove(p *globPattern) {
	k := x.key(p)
	if m := x.m[k]; m != nil {
		delete(m, p)
		if len(m) == 0 {
			delete(x.m, k)
		}
	}
}

// under calls fn for every pattern whose literal prefix is a prefix of s
// and, for an index by anchor, whose anchor is unanchored or anchor (when
// anchor is not unanchored itself), until fn returns false.
func (x litIndex) under(s, anchor string, fn func(*globPattern) bool) {
	ahs := []uint64{0}
	if x.byAnchor {
		ahs[0] = keyOf(unanchored).h
		if anchor != unanchored {
			ahs = append(ahs, keyOf(anchor).h)
		}
	}
	h := uint64(fnvOffset)
	for k := 0; ; k++ {
		for _, ah := range ahs {
			for p := range x.m[litKey{h, k, ah}] {
				if p.lit == s[:k] && (!x.byAnchor || p.anchor == unanchored || p.anchor == anchor) && !fn(p) {
					return
				}
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
		maxIdx:   newLitIndex(true),
		active:   make(map[string]*globPattern),
		actIdx:   newLitIndex(false),
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
		s.actIdx.under(name, unanchored, func(p *globPattern) bool {
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
	if p := pn.p; p.inMax {
		s.removeMaximal(p)
	} else if p.by != nil {
		delete(p.by.deps, p)
		p.by = nil
	}
}

// touch notes whether channel name was subscribed before this call, the
// first time the call touches it.
func (s *PatternSet) touch(name string) {
	if _, seen := s.chWas[name]; !seen {
		_, s.chWas[name] = s.activeCh[name]
	}
}

// maxCoverChecks bounds the members one insertMaximal compares p with, in
// each direction. Patterns that share a literal prefix and an anchor (the
// filters L/+/x1/+/y, L/+/x2/+/y, …, or L/+/x1/#, L/+/x2/#, …) would
// otherwise each be compared with all the others, a cost quadratic in their
// number under the lock every SUBSCRIBE of the replica takes (a hostile
// client made 20,000 of them cost 37-107 s). Past the bound p joins the
// maximal set without a coverer, and members it covers beyond the bound
// stay: the Redis subscriptions are then not minimal, only redundant (a
// message matching two patterns arrives twice, and the reader drops the
// repeat).
const maxCoverChecks = 256

// insertMaximal adds p to the maximal set unless a member covers it, and
// drops the members p covers (their dependants become p's), comparing p
// with at most maxCoverChecks members each way.
func (s *PatternSet) insertMaximal(p *globPattern) {
	if p.inMax {
		return
	}
	// A coverer's literal prefix is a prefix of p's: its literals must meet
	// p's literals; and its anchor, if any, is p's.
	var coverer *globPattern
	checks := 0
	s.maxIdx.under(p.lit, p.anchor, func(q *globPattern) bool {
		if coversEnc(q.g, p.g, p.enc) {
			coverer = q
		}
		checks++
		return coverer == nil && checks < maxCoverChecks
	})
	if coverer != nil {
		s.depend(p, coverer)
		return
	}
	// p's literal prefix is a prefix of whatever it covers, and p's anchor,
	// if any, is theirs.
	var drop []*globPattern
	checks = 0
	collect := func(_ string, g *litGroup) bool {
		for q := range g.all {
			if checks++; checks > maxCoverChecks {
				return false
			}
			if coversEnc(p.g, q.g, q.enc) {
				drop = append(drop, q)
			}
		}
		return true
	}
	if p.anchor == unanchored {
		s.maxLits.prefix(p.lit, collect)
	} else {
		s.maxAnch.prefix(p.anchorKey(), collect)
	}
	for _, q := range drop {
		s.dropMaximal(q)
		for d := range q.deps {
			s.depend(d, p)
		}
		q.deps = nil
		s.depend(q, p)
	}
	p.inMax = true
	s.maximal[p.name] = p
	s.maxIdx.add(p)
	groupAdd(&s.maxLits, p.lit, p)
	if p.anchor != unanchored {
		groupAdd(&s.maxAnch, p.anchorKey(), p)
	}
	s.genInsert(p)
	if _, ok := s.removed[p.name]; ok {
		delete(s.removed, p.name)
	} else {
		s.added[p.name] = p
	}
}

// depend records that the maximal pattern by covers the needed pattern p.
func (s *PatternSet) depend(p, by *globPattern) {
	p.by = by
	if by.deps == nil {
		by.deps = make(map[*globPattern]struct{})
	}
	by.deps[p] = struct{}{}
}

func (s *PatternSet) dropMaximal(p *globPattern) {
	p.inMax = false
	delete(s.maximal, p.name)
	s.maxIdx.remove(p)
	groupRemove(&s.maxLits, p.lit, p)
	if p.anchor != unanchored {
		groupRemove(&s.maxAnch, p.anchorKey(), p)
	}
	s.genRemove(p)
	if _, ok := s.added[p.name]; ok {
		delete(s.added, p.name)
	} else {
		s.removed[p.name] = p
	}
}

// removeMaximal drops p, which left the needed set, and places again the
// needed patterns it covered: each finds another coverer or joins the
// maximal set.
func (s *PatternSet) removeMaximal(p *globPattern) {
	s.dropMaximal(p)
	orphans := make([]*globPattern, 0, len(p.deps))
	for q := range p.deps {
		q.by = nil
		orphans = append(orphans, q)
	}
	p.deps = nil
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
	case len(s.added)+len(s.removed) == 0:
		// The maximal set is as it was: so is its generalisation. Only
		// channels changed.
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
		// The object held may differ from p: a coarsening and a needed
		// pattern can share a name ("$/#" and the node above "$a/+").
		s.actIdx.remove(s.active[p.name])
		delete(s.active, p.name)
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
