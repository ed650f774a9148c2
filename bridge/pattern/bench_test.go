package pattern

import (
	"fmt"
	"testing"
)

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
