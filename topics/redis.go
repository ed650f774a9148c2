package topics

import "strings"

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
	if !HasWildcard(filter) {
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
func covers(p, q glob) bool {
	// ok[i*(len(q)+1)+j]: p[i:] covers q[j:].
	w := len(q) + 1
	ok := make([]bool, (len(p)+1)*w)
	ok[len(p)*w+len(q)] = true
	for i := len(p) - 1; i >= 0; i-- {
		for j := len(q); j >= 0; j-- {
			var v bool
			switch p[i].kind {
			case tokStar:
				v = ok[(i+1)*w+j] || j < len(q) && ok[i*w+j+1]
			case tokNotDollar:
				v = j < len(q) && (q[j].kind == tokNotDollar || q[j].kind == tokLit && q[j].c != '$') && ok[(i+1)*w+j+1]
			default:
				v = j < len(q) && q[j] == p[i] && ok[(i+1)*w+j+1]
			}
			ok[i*w+j] = v
		}
	}
	return ok[0]
}
