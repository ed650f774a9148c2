package topics

import (
	"fmt"
	"testing"
)

// benchTrie holds 100k filters: a third exact, a third with '+', a third
// with '#'.
func benchTrie() *Trie[int] {
	tr := NewTrie[int]()
	for i := range 100_000 {
		switch i % 3 {
		case 0:
			tr.Subscribe(fmt.Sprintf("site/%d/dev/%d/temp", i%1000, i), i, 1)
		case 1:
			tr.Subscribe(fmt.Sprintf("site/%d/dev/+/%d", i%1000, i), i, 1)
		default:
			tr.Subscribe(fmt.Sprintf("site/%d/dev/%d/#", i%1000, i), i, 2)
		}
	}
	tr.Subscribe("site/+/dev/+/temp", -1, 0)
	tr.Subscribe("#", -2, 0)
	return tr
}

func BenchmarkTrieMatch_100kFilters(b *testing.B) {
	tr := benchTrie()
	topic := "site/42/dev/42042/temp"
	n := 0
	b.ReportAllocs()
	for b.Loop() {
		tr.Match(topic, func(int, byte) { n++ })
	}
	if n == 0 {
		b.Fatal("no match")
	}
}

func BenchmarkTrieSubscribers(b *testing.B) {
	tr := benchTrie()
	dst := make(map[int]byte)
	b.ReportAllocs()
	for b.Loop() {
		clear(dst)
		tr.Subscribers("site/42/dev/42042/temp", dst)
	}
	if len(dst) == 0 {
		b.Fatal("no subscriber")
	}
}

func BenchmarkRetainedMatch(b *testing.B) {
	r := NewRetained[int]()
	for i := range 100_000 {
		r.Set(fmt.Sprintf("site/%d/sensor/%d/temp", i%1000, i), i)
	}
	n := 0
	b.ReportAllocs()
	for b.Loop() {
		r.Match("site/7/sensor/+/temp", func(string, int) { n++ })
	}
	if n == 0 {
		b.Fatal("no match")
	}
}

func BenchmarkRedisSubscription(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		RedisSubscription("mqtt:msg:", "site/+/dev/+/temp/#")
	}
}

// BenchmarkPatternSetAdd_1000Wildcards measures adding 1,000 distinct
// filters sensors/<i>/+/temp to a fresh set, with and without a budget.
func BenchmarkPatternSetAdd_1000Wildcards(b *testing.B) {
	filters := make([]string, 1000)
	for i := range filters {
		filters[i] = fmt.Sprintf("sensors/%d/+/temp", i)
	}
	for _, budget := range []int{64, 10000} {
		b.Run(fmt.Sprintf("budget=%d", budget), func(b *testing.B) {
			var s *PatternSet
			b.ReportAllocs()
			for b.Loop() {
				s = NewPatternSet("mqtt:msg:", budget)
				for _, f := range filters {
					s.Add(f)
				}
			}
			b.ReportMetric(float64(len(s.Patterns())), "patterns")
		})
	}
}
