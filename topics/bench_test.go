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
	var dst Matches[int]
	b.ReportAllocs()
	for b.Loop() {
		dst.Reset()
		tr.Subscribers("site/42/dev/42042/temp", &dst)
	}
	if len(dst.List()) == 0 {
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
