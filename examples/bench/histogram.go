package main

import (
	"math"
	"math/bits"
	"time"
)

// Histogram buckets: values below linearLimit get a bucket each; above it,
// every power of two is split into subBuckets equal buckets, so a value is
// reported within 1/subBuckets (1.6%) of itself whatever its magnitude, in a
// fixed array: memory does not grow with the number of samples.
const (
	subBucketBits = 6
	subBuckets    = 1 << subBucketBits                // 64 buckets per power of two
	linearLimit   = 2 * subBuckets                    // values 0..127 are exact
	histBuckets   = linearLimit + (63-8+1)*subBuckets // int64 values have at most 63 bits
)

// Histogram is an HDR-like latency histogram with fixed logarithmic buckets.
// It is not safe for concurrent use: each reader goroutine keeps its own and
// they are merged at the end.
type Histogram struct {
	counts [histBuckets]uint64
	n      uint64
	min    int64
	max    int64
	sum    float64
}

// bucketOf returns the bucket index of v (v ≥ 0).
func bucketOf(v int64) int {
	if v < linearLimit {
		return int(v)
	}
	e := bits.Len64(uint64(v))                       // ≥ 8
	top := int(uint64(v) >> (e - subBucketBits - 1)) // in [64, 127]
	return linearLimit + (e-8)*subBuckets + top - subBuckets
}

// bucketUpper returns the largest value that falls in bucket i.
func bucketUpper(i int) int64 {
	if i < linearLimit {
		return int64(i)
	}
	k := i - linearLimit
	e := k/subBuckets + 8
	top := uint64(k%subBuckets + subBuckets)
	shift := e - subBucketBits - 1
	upper := (top+1)<<shift - 1
	if upper > math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(upper)
}

// Record adds one value; negative values count as 0.
func (h *Histogram) Record(v int64) {
	if v < 0 {
		v = 0
	}
	if h.n == 0 || v < h.min {
		h.min = v
	}
	if v > h.max {
		h.max = v
	}
	h.n++
	h.sum += float64(v)
	h.counts[bucketOf(v)]++
}

// Merge adds every value recorded in o.
func (h *Histogram) Merge(o *Histogram) {
	if o.n == 0 {
		return
	}
	if h.n == 0 || o.min < h.min {
		h.min = o.min
	}
	h.max = max(h.max, o.max)
	h.n += o.n
	h.sum += o.sum
	for i, c := range o.counts {
		h.counts[i] += c
	}
}

// Count returns the number of recorded values.
func (h *Histogram) Count() uint64 { return h.n }

// Max returns the largest recorded value, exactly.
func (h *Histogram) Max() int64 { return h.max }

// Mean returns the mean of the recorded values.
func (h *Histogram) Mean() float64 {
	if h.n == 0 {
		return 0
	}
	return h.sum / float64(h.n)
}

// Quantile returns the value at quantile q (0 < q ≤ 1): the upper bound of the
// bucket holding the ceil(q·n)-th smallest value, capped by the exact maximum
// and floored by the exact minimum. It returns 0 when nothing was recorded.
func (h *Histogram) Quantile(q float64) int64 {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	rank = min(max(rank, 1), h.n)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return min(max(bucketUpper(i), h.min), h.max)
		}
	}
	return h.max
}

// QuantileDuration is Quantile for a histogram of nanoseconds.
func (h *Histogram) QuantileDuration(q float64) time.Duration {
	return time.Duration(h.Quantile(q))
}
