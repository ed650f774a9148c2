package main

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// relErr is the largest relative error a bucket's upper bound may have.
const relErr = 1.0 / subBuckets

func TestBucket_UpperBoundsContainValue(t *testing.T) {
	values := []int64{0, 1, 63, 127, 128, 129, 255, 256, 1000, 999_999, 1 << 40, math.MaxInt64}
	for _, v := range values {
		i := bucketOf(v)
		if i < 0 || i >= histBuckets {
			t.Fatalf("bucketOf(%d) = %d, outside 0..%d", v, i, histBuckets-1)
		}
		up := bucketUpper(i)
		if up < v {
			t.Errorf("bucketUpper(bucketOf(%d)) = %d, below the value", v, up)
		}
		if float64(up-v) > relErr*float64(v) {
			t.Errorf("bucketUpper(bucketOf(%d)) = %d, more than %.1f%% above", v, up, relErr*100)
		}
		if i > 0 && bucketUpper(i-1) >= v {
			t.Errorf("value %d also fits the bucket below (upper %d)", v, bucketUpper(i-1))
		}
	}
}

func TestBucket_Monotonic(t *testing.T) {
	prev := int64(-1)
	for i := range histBuckets {
		up := bucketUpper(i)
		if up <= prev {
			t.Fatalf("bucketUpper(%d) = %d, not above bucketUpper(%d) = %d", i, up, i-1, prev)
		}
		prev = up
	}
}

func TestHistogram_Quantiles(t *testing.T) {
	tests := []struct {
		name   string
		values []int64
		q      float64
		want   int64 // exact answer; the histogram may exceed it by relErr
	}{
		{"single", []int64{42}, 0.5, 42},
		{"small exact p50", []int64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, 0.5, 5},
		{"small exact p90", []int64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, 0.9, 9},
		{"max is exact", []int64{100, 5_000_123}, 1, 5_000_123},
		{"p99 of 1..100000", seq(1, 100_000), 0.99, 99_000},
		{"p99.9 of 1..100000", seq(1, 100_000), 0.999, 99_900},
		{"p50 with outlier", append(repeat(1000, 999), 1e9), 0.5, 1000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var h Histogram
			for _, v := range tt.values {
				h.Record(v)
			}
			got := h.Quantile(tt.q)
			if got < tt.want || float64(got-tt.want) > relErr*float64(tt.want) {
				t.Errorf("Quantile(%v) = %d, want %d (+%.1f%%)", tt.q, got, tt.want, relErr*100)
			}
		})
	}
}

func seq(from, n int64) []int64 {
	out := make([]int64, n)
	for i := range out {
		out[i] = from + int64(i)
	}
	return out
}

func repeat(v int64, n int) []int64 {
	out := make([]int64, n)
	for i := range out {
		out[i] = v
	}
	return out
}

func TestHistogram_AgainstSortedSamples(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var h Histogram
	samples := make([]int64, 50_000)
	for i := range samples {
		samples[i] = int64(r.ExpFloat64() * 200_000) // latency-like, ns
		h.Record(samples[i])
	}
	slices.Sort(samples)
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999, 1} {
		exact := samples[int(math.Ceil(q*float64(len(samples))))-1]
		got := h.Quantile(q)
		if got < exact || float64(got-exact) > relErr*float64(exact)+1 {
			t.Errorf("Quantile(%v) = %d, exact %d", q, got, exact)
		}
	}
}

func TestHistogram_MergeEqualsRecordingAll(t *testing.T) {
	var a, b, all Histogram
	for v := int64(0); v < 10_000; v += 7 {
		a.Record(v)
		all.Record(v)
	}
	for v := int64(5); v < 3_000_000; v += 1013 {
		b.Record(v)
		all.Record(v)
	}
	a.Merge(&b)
	if a.Count() != all.Count() || a.Max() != all.Max() || a.Mean() != all.Mean() {
		t.Fatalf("merged count/max/mean %d/%d/%v, want %d/%d/%v", a.Count(), a.Max(), a.Mean(), all.Count(), all.Max(), all.Mean())
	}
	for _, q := range []float64{0.01, 0.5, 0.99, 0.999} {
		if a.Quantile(q) != all.Quantile(q) {
			t.Errorf("Quantile(%v) merged %d, recorded %d", q, a.Quantile(q), all.Quantile(q))
		}
	}
}

func TestHistogram_EmptyAndNegative(t *testing.T) {
	var h Histogram
	if h.Quantile(0.99) != 0 || h.Mean() != 0 {
		t.Errorf("empty histogram: Quantile %d Mean %v, want 0", h.Quantile(0.99), h.Mean())
	}
	h.Record(-10) // a clock step must not index outside the buckets
	if h.Quantile(1) != 0 || h.Count() != 1 {
		t.Errorf("after Record(-10): Quantile(1) %d Count %d, want 0 and 1", h.Quantile(1), h.Count())
	}
}
