package pattern

import (
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// TestOrdered_AgainstMap checks the treap's get, put, del and prefix
// against a map and a sorted scan on random operations.
func TestOrdered_AgainstMap(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	var o ordered[int]
	m := map[string]int{}
	key := func() string {
		const alphabet = "ab/$*"
		b := make([]byte, r.IntN(5))
		for i := range b {
			b[i] = alphabet[r.IntN(len(alphabet))]
		}
		return string(b)
	}
	for step := range 20000 {
		k := key()
		switch r.IntN(3) {
		case 0, 1:
			o.put(k, step)
			m[k] = step
		default:
			o.del(k)
			delete(m, k)
		}
		if o.n != len(m) {
			t.Fatalf("step %d: n = %d, map has %d", step, o.n, len(m))
		}
		p := key()
		var got, want []string
		o.prefix(p, func(k string, v int) bool {
			if m[k] != v {
				t.Fatalf("step %d: %q = %d, map %d", step, k, v, m[k])
			}
			got = append(got, k)
			return true
		})
		for k := range m {
			if strings.HasPrefix(k, p) {
				want = append(want, k)
			}
		}
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Fatalf("step %d: prefix %q = %q, want %q", step, p, got, want)
		}
		if v, ok := o.get(k); ok != (m[k] != 0 || func() bool { _, in := m[k]; return in }()) || ok && v != m[k] {
			t.Fatalf("step %d: get(%q) = %d, %v", step, k, v, ok)
		}
	}
}
