package pattern

import (
	"strings"

	"github.com/bridgemq/server/topics"
)

// RedisSubscription translates an MQTT filter into what a replica subscribes
// to in Redis, where every message is published to the channel
// prefix+topic. A filter without wildcards is the channel prefix+filter
// (isPattern false, for SUBSCRIBE). A filter with wildcards becomes a glob
// for PSUBSCRIBE (isPattern true) that matches prefix+topic for every topic
// the filter matches:
//
//   - glob metacharacters * ? [ ] \ in the prefix and in literal levels are
//     escaped with a backslash;
//   - '+' and '#' become '*', which also crosses '/': Redis over-delivers
//     and the receiver re-matches with Match;
//   - "a/#" becomes "a*" so that it also matches the parent "a";
//   - a first-level wildcard must not match '$' topics [MQTT-4.7.2-1], so
//     the first byte is "[^$]". For "+/x" the separator after it is dropped
//     ("[^$]*x"): the topic "/x" has an empty first level, and "[^$]" then
//     matches its '/'.
//
// filter must be valid (ValidateFilter).
func RedisSubscription(prefix, filter string) (name string, isPattern bool) {
	if !topics.HasWildcard(filter) {
		return prefix + filter, false
	}
	return filterGlob(prefix, filter).String(), true
}

// Kinds of glob token.
const (
	tokLit       = iota // one literal byte
	tokStar             // '*'
	tokNotDollar        // "[^$]"
)

// globTok is one element of the glob subset RedisSubscription produces.
type globTok struct {
	kind uint8
	c    byte // for tokLit
}

// glob is a Redis glob pattern from RedisSubscription, as tokens.
type glob []globTok

// filterGlob builds the glob for a filter with wildcards; see
// RedisSubscription.
func filterGlob(prefix, filter string) glob {
	g := make(glob, 0, len(prefix)+len(filter)+2)
	g = g.appendLit(prefix)
	sep := false // a '/' is owed before the next level
	for start, first := 0, true; start <= len(filter); first = false {
		end := levelEnd(filter, start)
		switch level := filter[start:end]; level {
		case "#":
			if first {
				return g.appendNotDollar().appendStar() // [MQTT-4.7.2-1]
			}
			// The owed '/' is dropped so that "a/#" matches "a"; "/#" keeps
			// it, its parent being the empty (invalid) topic.
			if start == 1 {
				g = append(g, globTok{tokLit, '/'})
			}
			return g.appendStar()
		case "+":
			if first {
				// [^$] takes the first byte, which is the '/' when the
				// first level is empty, so no separator is owed.
				g, sep = g.appendNotDollar().appendStar(), false
				break
			}
			if sep {
				g = append(g, globTok{tokLit, '/'})
			}
			g, sep = g.appendStar(), true
		default:
			if sep {
				g = append(g, globTok{tokLit, '/'})
			}
			g, sep = g.appendLit(level), true
		}
		start = end + 1
	}
	return g
}

func (g glob) appendLit(s string) glob {
	for i := 0; i < len(s); i++ {
		g = append(g, globTok{tokLit, s[i]})
	}
	return g
}

func (g glob) appendNotDollar() glob {
	return append(g, globTok{kind: tokNotDollar})
}

// appendStar adds '*' unless g already ends with one ("**" is "*").
func (g glob) appendStar() glob {
	if len(g) > 0 && g[len(g)-1].kind == tokStar {
		return g
	}
	return append(g, globTok{kind: tokStar})
}

// String renders g as a Redis glob, escaping literal metacharacters.
func (g glob) String() string {
	var b strings.Builder
	b.Grow(len(g) + 8)
	for _, t := range g {
		switch t.kind {
		case tokStar:
			b.WriteByte('*')
		case tokNotDollar:
			b.WriteString("[^$]")
		default:
			if strings.IndexByte(`*?[]\`, t.c) >= 0 {
				b.WriteByte('\\')
			}
			b.WriteByte(t.c)
		}
	}
	return b.String()
}

// literal returns the bytes of g's leading run of literal tokens.
func (g glob) literal() string {
	var b []byte
	for _, t := range g {
		if t.kind != tokLit {
			break
		}
		b = append(b, t.c)
	}
	return string(b)
}

// covers reports whether every string matching q also matches p. It is
// sound, never claiming a cover that does not hold: it looks for an
// alignment in which each '*' of p absorbs a run of q's tokens, each literal
// of p meets the same literal in q, and each "[^$]" of p meets "[^$]" or a
// literal other than '$'. Any string q matches then matches p token by
// token. q's '*' can only be absorbed by a '*' of p.
//
// p is a glob over q's tokens whose only wildcard is '*', so the alignment
// is found greedily: p's text before its first '*' must match q's start,
// its text after its last '*' q's end, and each run between two '*' is
// placed at its leftmost place after the previous one (a later place never
// helps the runs that follow). The cost is O(len(p) + len(q)), not their
// product: a filter of 30,000 bytes is compared in microseconds.
func covers(p, q glob) bool {
	return coversEnc(p, q, q.encode())
}

// encode returns g's literal bytes with every other token as NUL, which no
// topic contains [MQTT-4.7.3-2]: a search for a run of p's literals in it
// never lands on one of q's wildcards.
func (g glob) encode() string {
	b := make([]byte, len(g))
	for i, t := range g {
		if t.kind == tokLit {
			b[i] = t.c
		}
	}
	return string(b)
}

// tokCovers reports whether p's token t covers q's token u; t is not '*'.
func tokCovers(t, u globTok) bool {
	switch t.kind {
	case tokNotDollar:
		return u.kind == tokNotDollar || u.kind == tokLit && u.c != '$'
	default:
		return u.kind == tokLit && u.c == t.c
	}
}

// runCovers reports whether the star-free run p covers q token by token.
func runCovers(p, q glob) bool {
	if len(p) != len(q) {
		return false
	}
	for i := range p {
		if !tokCovers(p[i], q[i]) {
			return false
		}
	}
	return true
}

// coversEnc is covers with q.encode() given.
func coversEnc(p, q glob, qenc string) bool {
	first := -1
	last := -1
	for i, t := range p {
		if t.kind == tokStar {
			if first < 0 {
				first = i
			}
			last = i
		}
	}
	if first < 0 {
		return runCovers(p, q)
	}
	head, tail := p[:first], p[last+1:]
	if len(head)+len(tail) > len(q) || !runCovers(head, q[:len(head)]) || !runCovers(tail, q[len(q)-len(tail):]) {
		return false
	}
	lo, hi := len(head), len(q)-len(tail)
	for i := first + 1; i < last; {
		if p[i].kind == tokStar {
			i++
			continue
		}
		j := i
		for j < last && p[j].kind != tokStar {
			j++
		}
		// A run between two '*' holds only literals: "[^$]" can only
		// come first, right after the prefix.
		run := p[i:j]
		at := -1
		lit := make([]byte, len(run))
		for k, t := range run {
			if t.kind != tokLit {
				lit = nil
				break
			}
			lit[k] = t.c
		}
		if lit != nil {
			if k := strings.Index(qenc[lo:hi], string(lit)); k >= 0 {
				at = lo + k
			}
		} else {
			// Not a plain literal run (never produced by filterGlob):
			// search token by token.
			for k := lo; k+len(run) <= hi; k++ {
				if runCovers(run, q[k:k+len(run)]) {
					at = k
					break
				}
			}
		}
		if at < 0 {
			return false
		}
		lo = at + len(run)
		i = j
	}
	return true
}

// levelEnd returns the index of the '/' ending the level that starts at
// start, or len(s).
func levelEnd(s string, start int) int {
	if i := strings.IndexByte(s[start:], '/'); i >= 0 {
		return start + i
	}
	return len(s)
}
