package pattern

import (
	"math/rand/v2"
	"testing"

	"github.com/bridgemq/server/internal/topicgen"
)

// TestGlobMatch pins the port to Redis's stringmatchlen behaviour.
func TestGlobMatch(t *testing.T) {
	tests := []struct {
		pattern, s string
		want       bool
	}{
		{"hello", "hello", true},
		{"hello", "hell", false},
		{"h?llo", "hello", true},
		{"h?llo", "hllo", false},
		{"h*llo", "hllo", true},
		{"h*llo", "heeeello", true},
		{"h*", "h/a/b", true},
		{"a**", "a", true},
		{"a*b*", "ab", true},
		{"a*b", "abc", false},
		{"h[ae]llo", "hallo", true},
		{"h[ae]llo", "hillo", false},
		{"h[^e]llo", "hello", false},
		{"h[^e]llo", "hallo", true},
		{"h[a-b]llo", "hbllo", true},
		{"h[b-a]llo", "hallo", true},
		{"h[a-b]llo", "hcllo", false},
		{`h\*llo`, "h*llo", true},
		{`h\*llo`, "hxllo", false},
		{`a\[b`, "a[b", true},
		{`a\\`, `a\`, true},
		{`[\]]`, "]", true},
		{`[\^]`, "^", true},
		{"[ab", "a", true},
		{"[ab", "b", true},
		{"[ab", "c", false},
		{"[^$]*", "$x", false},
		{"[^$]*", "/", true},
		{"[^$]*", "x/y", true},
		{"p:[^$]*x", "p:/x", true},
		{"p:[^$]*x", "p:$a/x", false},
	}
	for _, tt := range tests {
		if got := GlobMatch(tt.pattern, tt.s); got != tt.want {
			t.Errorf("GlobMatch(%q, %q) = %v, want %v", tt.pattern, tt.s, got, tt.want)
		}
	}
}

// randGlobString returns a string g matches, drawing '*' and "[^$]" bytes
// from an alphabet that includes '$', '/' and glob metacharacters.
func randGlobString(r *rand.Rand, g glob) string {
	const alphabet = "ab$/*?[]\\"
	var b []byte
	for _, t := range g {
		switch t.kind {
		case tokLit:
			b = append(b, t.c)
		case tokNotDollar:
			for {
				if c := alphabet[r.IntN(len(alphabet))]; c != '$' {
					b = append(b, c)
					break
				}
			}
		case tokStar:
			for n := r.IntN(4); n > 0; n-- {
				b = append(b, alphabet[r.IntN(len(alphabet))])
			}
		}
	}
	return string(b)
}

func TestGlobString_RoundTripsThroughGlobMatch(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for range 5000 {
		g := filterGlob(`m*[?]\:`, topicgen.RandFilter(r))
		s := randGlobString(r, g)
		if !GlobMatch(g.String(), s) {
			t.Fatalf("rendered %q does not match %q drawn from its tokens", g.String(), s)
		}
	}
}

func TestCovers(t *testing.T) {
	tests := []struct {
		p, q string // filters, translated with prefix "p:"
		want bool
	}{
		{"a/+", "a/+/b", true},
		{"a/#", "a/+/b", true},
		{"a/+/b", "a/+/+/b", true},
		{"a/+/+/b", "a/+/b", false},
		{"a/+", "a/#", false}, // a/# also matches "a"
		{"#", "a/+", true},
		{"#", "$SYS/+", false},
		{"+", "+/x", true}, // both are [^$]*...
		{"+/x", "+", false},
		{"a/+/b", "a/x/+/b", true},
		{"a/+/c", "a/+/b", false},
		{"$SYS/#", "$SYS/+/x", true},
		{"+/x", "a/+/x", true},
	}
	for _, tt := range tests {
		p, q := filterGlob("p:", tt.p), filterGlob("p:", tt.q)
		if got := covers(p, q); got != tt.want {
			t.Errorf("covers(%s, %s) = %v, want %v", p, q, got, tt.want)
		}
	}
}

// TestCovers_Sound checks on random pairs that whenever covers claims p
// covers q, every string drawn from q matches p.
func TestCovers_Sound(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	claims := 0
	for range 20000 {
		p, q := filterGlob("x:", topicgen.RandFilter(r)), filterGlob("x:", topicgen.RandFilter(r))
		if r.IntN(4) == 0 {
			p = filterGlob("x:", "#")
		}
		if !covers(p, q) {
			continue
		}
		claims++
		for range 20 {
			if s := randGlobString(r, q); !GlobMatch(p.String(), s) {
				t.Fatalf("covers(%s, %s) but %q matches only the second", p, q, s)
			}
		}
	}
	if claims < 100 {
		t.Fatalf("only %d cover claims tested", claims)
	}
}
